package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Querier is all a read callback may use: queries and batches, no Exec, no
// Begin, no Copy. Reads on standbys cannot write, lock rows, use sequences or
// LISTEN (seed 003, 4.4.1), and the router makes the same true on the
// primary: every pooled session is READ ONLY by default, so a read behaves
// the same wherever it lands. A Querier is bound to one connection: use it
// from one goroutine, and not after the callback returns.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// connQuerier exposes only Querier's methods of a connection. It is a single
// pointer, so passing it as an interface does not allocate.
type connQuerier struct{ c *pgx.Conn }

func (q connQuerier) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return q.c.Query(ctx, sql, args...)
}

func (q connQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return q.c.QueryRow(ctx, sql, args...)
}

func (q connQuerier) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return q.c.SendBatch(ctx, b)
}

var _ Querier = connQuerier{}

// ReadInfo says where a read ran.
type ReadInfo struct {
	// Node is the node's host:port.
	Node string
	// Primary is true when the read ran on the primary.
	Primary bool
	// Pos: every write whose Token.LSN < Pos (on Timeline) is visible to the
	// read. On a standby it is the replay position known before the query
	// plus one; on the primary it is the WAL insert position known before
	// the query (a token is read after its commit is visible, so a token
	// strictly below a position read later is visible).
	Pos LSN
	// Timeline is the node's timeline.
	Timeline uint32
	// Attempts is how many nodes the read ran on (2 or 3 after retries).
	Attempts int
}

// Covers reports whether the read saw every write t covers.
func (i ReadInfo) Covers(t Token) bool {
	return t.IsZero() || (t.Timeline == 0 || t.Timeline == i.Timeline) && t.LSN < i.Pos
}

type readOp uint8

const (
	opRead readOp = iota
	opReadTx
	opWrite
)

var opNames = [...]string{opRead: "read", opReadTx: "read_tx", opWrite: "write"}

// Read runs fn on one node that satisfies c and the ctx session's token:
// within a session every non-Strong read is at least
// ReadYourWrites(SessionToken(ctx)). Each query fn makes is its own
// statement (autocommit); use ReadTx for one snapshot.
//
// fn may run more than once: after a node death or a recovery conflict the
// read is retried on another node, then the primary (within ctx's deadline
// and the retry budget). fn must be idempotent and must not keep q.
//
// Errors: ErrUnavailable (wrapped) when no node may serve the read; fn's
// error, wrapped, otherwise ("router: read: ..."), with errors.Is/As
// reaching the original.
func (r *Router) Read(ctx context.Context, c Consistency, fn func(ctx context.Context, q Querier) error) (ReadInfo, error) {
	return r.read(ctx, c, fn, opRead)
}

// ReadTx is Read inside one REPEATABLE READ READ ONLY transaction, so every
// query fn makes sees one snapshot. The same retry rules apply.
func (r *Router) ReadTx(ctx context.Context, c Consistency, fn func(ctx context.Context, q Querier) error) (ReadInfo, error) {
	return r.read(ctx, c, fn, opReadTx)
}

// Sentinels steering the read loop; never returned to callers.
var (
	errSkipNode      = errors.New("router: node skipped (breaker)")
	errReplicaBehind = errors.New("router: replica behind token")
)

func (r *Router) read(ctx context.Context, c Consistency, fn func(context.Context, Querier) error, op readOp) (ReadInfo, error) {
	if r.closed.Load() {
		return ReadInfo{}, fmt.Errorf("router: %s: %w: router closed", opNames[op], ErrUnavailable)
	}
	req := r.requirementFor(c, SessionToken(ctx))
	r.budget.deposit()
	ctx, sp := r.tel.startRead(ctx, op, c)
	var (
		exclude  uint64
		lastErr  error
		attempts int
		d        decision
		err      error
	)
	for {
		switch {
		case attempts >= 2 && !req.strong:
			// Third try: the primary, whatever the read asked for.
			req = requirement{strong: true, why: reasonRetry}
		}
		var nd decision
		nd, err = r.route(req, exclude, r.cfg.Now())
		if err != nil {
			if lastErr != nil {
				err = lastErr
			}
			break
		}
		d = nd
		var (
			pos LSN
			cls errClass
		)
		pos, cls, err = r.runRead(ctx, &d, req, fn, op)
		switch {
		case err == nil:
			info := ReadInfo{Node: d.n.name, Primary: d.primary, Timeline: d.timeline, Attempts: attempts + 1}
			if d.primary {
				info.Pos = pos
			} else {
				info.Pos = pos + 1
			}
			r.tel.endRead(ctx, sp, op, d, info, nil)
			return info, nil
		case errors.Is(err, errSkipNode):
			exclude |= 1 << d.n.idx
			continue
		case errors.Is(err, errReplicaBehind):
			r.tel.fallback(ctx, reasonReplicaBehind)
			req = requirement{strong: true, why: reasonReplicaBehind}
			continue
		}
		attempts++
		if d.primary && cls == classConn && attempts == 1 && ctx.Err() == nil {
			// The primary's connection died (backend terminated, node
			// restarted while the pool held idle connections): reads are
			// idempotent, so try once more on fresh connections there.
			d.n.pool.Reset()
			if !r.budget.withdraw() {
				r.tel.retryDenied(ctx)
				break
			}
			r.tel.retry(ctx, cls)
			lastErr = err
			continue
		}
		if cls != classConn && cls != classConflict || ctx.Err() != nil || d.primary || attempts >= 3 {
			break
		}
		if !r.budget.withdraw() {
			r.tel.retryDenied(ctx)
			break
		}
		r.tel.retry(ctx, cls)
		exclude |= 1 << d.n.idx
		lastErr = err
	}
	r.tel.endRead(ctx, sp, op, d, ReadInfo{Attempts: attempts}, err)
	if errors.Is(err, ErrUnavailable) {
		return ReadInfo{}, fmt.Errorf("router: %s: %w", opNames[op], err)
	}
	return ReadInfo{}, fmt.Errorf("router: %s on %s: %w", opNames[op], d.nodeName(), err)
}

func (d *decision) nodeName() string {
	if d.n == nil {
		return "no node"
	}
	return d.n.name
}

// acquire gets a connection from n's pool. While n has a free slot (fewer
// requests in flight than MaxConns) Acquire does not queue: it returns an
// idle connection or dials one, bounded by ConnectTimeout. Only when the
// pool may be saturated does the wait get Pool.AcquireTimeout, which saves
// a timer and a context per request on the hot path.
func (r *Router) acquire(ctx context.Context, n *node) (*pgxpool.Conn, error) {
	start := time.Now()
	if n.inflight.Load() <= int64(r.cfg.Pool.MaxConns) {
		conn, err := n.pool.Acquire(ctx)
		r.tel.acquired(ctx, n, time.Since(start))
		return conn, err
	}
	actx, cancel := context.WithTimeout(ctx, r.cfg.Pool.AcquireTimeout)
	conn, err := n.pool.Acquire(actx)
	cancel()
	r.tel.acquired(ctx, n, time.Since(start))
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w after %v: %w", errAcquireTimeout, r.cfg.Pool.AcquireTimeout, err)
	}
	return conn, err
}

// runRead runs one attempt on d.n. It returns the position to report (the
// probed or re-read position) and the class of the error; the error is
// errSkipNode when the breaker refused, errReplicaBehind when a rechecked
// replica had not replayed the token.
func (r *Router) runRead(ctx context.Context, d *decision, req requirement, fn func(context.Context, Querier) error, op readOp) (LSN, errClass, error) {
	n := d.n
	tk, ok := n.admit()
	if !ok {
		return 0, classNone, errSkipNode
	}
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	start := time.Now()
	conn, err := r.acquire(ctx, n)
	if err != nil {
		cls := classify(err, !d.primary)
		n.report(tk, cls)
		r.tel.query(ctx, n, op, d.primary, cls, time.Since(start))
		if cls == classConn {
			r.reprobeNode(n)
		}
		return 0, cls, err
	}
	defer conn.Release()
	pos := d.lsn
	if d.primary {
		pos = r.primaryPos(pos, d.timeline) // loaded before fn runs
	}
	if d.recheck {
		pos, err = r.recheck(ctx, conn, req.token)
		if err != nil {
			cls := classify(err, true)
			n.report(tk, cls)
			r.tel.query(ctx, n, op, d.primary, cls, time.Since(start))
			return 0, cls, err
		}
		if pos < req.token.LSN {
			n.report(tk, classNone)
			return 0, classNone, errReplicaBehind
		}
	}
	pc := conn.Conn()
	if op == opReadTx {
		err = runTx(ctx, pc, fn)
	} else {
		err = fn(ctx, connQuerier{pc})
	}
	cls := classify(err, !d.primary)
	if err != nil && pc.IsClosed() && cls == classSQL {
		cls = classConn // the connection died under fn, whatever fn made of the error
	}
	n.report(tk, cls)
	r.tel.query(ctx, n, op, d.primary, cls, time.Since(start))
	if cls == classConn {
		r.reprobeNode(n)
	}
	return pos, cls, err
}

// reprobeNode asks n's prober to probe now.
func (r *Router) reprobeNode(n *node) {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

const replaySQL = "SELECT coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn)::text"

// recheck re-reads the replay position on conn (the probe predates the
// token), waiting up to Config.ReplicaWait for it to reach the token.
func (r *Router) recheck(ctx context.Context, conn *pgxpool.Conn, tok Token) (LSN, error) {
	var deadline time.Time
	if r.cfg.ReplicaWait > 0 {
		deadline = time.Now().Add(r.cfg.ReplicaWait)
	}
	backoff := time.Millisecond
	for {
		var s string
		if err := conn.QueryRow(ctx, replaySQL).Scan(&s); err != nil {
			return 0, err
		}
		pos, err := ParseLSN(s)
		if err != nil {
			return 0, err
		}
		if pos >= tok.LSN || deadline.IsZero() || !time.Now().Add(backoff).Before(deadline) {
			return pos, nil
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return pos, nil // the primary fallback will report ctx's error
		case <-t.C:
		}
		backoff = min(backoff*2, 20*time.Millisecond)
	}
}

var readTxOptions = pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}

// runTx runs fn in a REPEATABLE READ READ ONLY transaction on c.
func runTx(ctx context.Context, c *pgx.Conn, fn func(context.Context, Querier) error) error {
	tx, err := c.BeginTx(ctx, readTxOptions)
	if err != nil {
		return err
	}
	if err := fn(ctx, connQuerier{c}); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = tx.Rollback(rctx)
		cancel()
		return err
	}
	return tx.Commit(ctx)
}
