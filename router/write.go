package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// commitSQL commits and reads the token in one round trip (simple protocol,
// two statements). PostgreSQL finishes a transaction-control statement of
// a multi-statement query — flush and synchronous-replication wait included
// — before running the next one, so the position is read after the commit
// is durable and visible. The insert position covers every record inserted
// so far, the commit record included.
const commitSQL = "COMMIT; SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())"

// tokenSQL reads a token on its own (fallback when the SELECT of commitSQL
// failed after a successful COMMIT).
const tokenSQL = "SELECT pg_current_wal_insert_lsn()::text, pg_walfile_name(pg_current_wal_insert_lsn())"

// ErrTxEnded is returned by Write when fn committed or rolled back the
// transaction itself: Write owns the transaction's end (it reads the token
// with the COMMIT). Nothing is known about the outcome of fn's own COMMIT.
var ErrTxEnded = errors.New("router: write callback ended the transaction itself")

// ErrTxAborted is returned by Write when fn returned nil although a statement
// in the transaction failed (the transaction was rolled back).
var ErrTxAborted = errors.New("router: transaction aborted by an error fn did not return")

var writeTxOptions = pgx.TxOptions{AccessMode: pgx.ReadWrite}

// Write runs fn in one READ WRITE transaction on the primary, commits, and
// returns the commit's token (read on the same connection in the same round
// trip as COMMIT). fn must not commit or roll back tx itself. The token is
// merged into ctx's session, if there is one. Write is never retried.
//
// Errors (all wrapped, "router: write: ..."):
//   - ErrUnavailable: no usable primary (none reachable, breaker open, split
//     brain), the primary failed before COMMIT was sent, or it turned out
//     to be a standby (a failover is then being followed). Nothing was
//     committed; Retryable reports true.
//   - ErrCommitUnknown: the connection was lost while COMMIT was in flight;
//     the transaction may have committed. Also returned, together with the
//     token, when ctx ended during a COMMIT under synchronous replication
//     (committed on the primary, replication not confirmed).
//   - fn's error, or the COMMIT's (unique violation at a deferred
//     constraint, serialization failure): returned as-is, never retried,
//     never counted by the breaker.
//   - ErrTxEnded, ErrTxAborted: misuse by fn.
func (r *Router) Write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) (Token, error) {
	if r.closed.Load() {
		return Token{}, fmt.Errorf("router: write: %w: router closed", ErrUnavailable)
	}
	ctx, sp := r.tel.startWrite(ctx)
	d, err := primaryDecision(r.topo.Load(), reasonStrong, 0)
	if err != nil {
		r.tel.endWrite(ctx, sp, d, Token{}, err)
		return Token{}, fmt.Errorf("router: write: %w", err)
	}
	tok, err := r.write(ctx, d, fn)
	r.tel.endWrite(ctx, sp, d, tok, err)
	if !tok.IsZero() {
		// Committed (even when err says replication is unconfirmed).
		mergeSession(ctx, tok)
		r.noteWrite(tok)
	}
	if err != nil {
		return tok, fmt.Errorf("router: write on %s: %w", d.n.name, err)
	}
	return tok, nil
}

// noteWrite records tok as the newest local write if it is.
func (r *Router) noteWrite(tok Token) {
	for {
		cur := r.lastWrite.Load()
		if cur != nil && cur.Merge(tok) == *cur {
			return
		}
		if r.lastWrite.CompareAndSwap(cur, &tok) {
			return
		}
	}
}

// primaryPos is the best known position of the primary on timeline tl:
// the probed one or the newest local write token, both read before now.
func (r *Router) primaryPos(probed LSN, tl uint32) LSN {
	if w := r.lastWrite.Load(); w != nil && w.Timeline == tl && w.LSN > probed {
		return w.LSN
	}
	return probed
}

func (r *Router) write(ctx context.Context, d decision, fn func(context.Context, pgx.Tx) error) (tok Token, err error) {
	n := d.n
	tk, ok := n.admit()
	if !ok {
		return Token{}, fmt.Errorf("%w: primary %s is failing (breaker open)", ErrUnavailable, n.name)
	}
	n.inflight.Add(1)
	defer n.inflight.Add(-1)
	start := time.Now()
	cls := classNone
	defer func() {
		n.report(tk, cls)
		r.tel.query(ctx, n, opWrite, true, cls, time.Since(start))
		switch cls {
		case classConn, classReadOnly:
			r.reprobe() // primary dead or demoted: find the new one now
		}
	}()
	var (
		conn *pgxpool.Conn
		pc   *pgx.Conn
		tx   pgx.Tx
	)
	// A pooled connection may have died while idle (node restarted, backend
	// terminated). BEGIN has no effect of its own and a connection that
	// failed it is gone, so when BEGIN fails for a connectivity reason one
	// more try on a fresh connection is not a blind retry: fn has not run.
	for attempt := 0; ; attempt++ {
		conn, err = r.acquire(ctx, n)
		if err != nil {
			if cls = classify(err, false); cls == classConn {
				return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
			}
			return Token{}, err
		}
		pc = conn.Conn()
		tx, err = pc.BeginTx(ctx, writeTxOptions)
		if err == nil || attempt > 0 || classify(err, false) != classConn || ctx.Err() != nil {
			break
		}
		// Idle connections that died together (terminated, node restarted)
		// are likely all dead: drop them so the retry dials afresh.
		conn.Release()
		n.pool.Reset()
	}
	defer conn.Release()
	if err != nil {
		// A standby refuses READ WRITE (0A000) or any write (25006).
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "0A000" || pgErr.Code == "25006") {
			cls = classReadOnly
		} else if cls = classify(err, false); cls != classConn {
			return Token{}, err
		}
		return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := fn(ctx, tx); err != nil {
		cls = classify(err, false)
		if pc.IsClosed() && cls == classSQL {
			cls = classConn
		}
		rollback(ctx, tx)
		switch cls {
		case classConn, classReadOnly:
			// COMMIT was never sent: nothing was committed.
			return Token{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		return Token{}, err
	}
	switch pc.PgConn().TxStatus() {
	case 'T':
	case 'E':
		rollback(ctx, tx)
		cls = classSQL
		return Token{}, ErrTxAborted
	default:
		cls = classSQL
		return Token{}, ErrTxEnded
	}
	tok, cls, err = r.commit(ctx, conn)
	return tok, err
}

func rollback(ctx context.Context, tx pgx.Tx) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	_ = tx.Rollback(rctx)
	cancel()
}

// commit sends COMMIT and the token query in one round trip.
func (r *Router) commit(ctx context.Context, conn *pgxpool.Conn) (Token, errClass, error) {
	results, err := conn.Conn().PgConn().Exec(ctx, commitSQL).ReadAll()
	committed := len(results) > 0 && results[0].Err == nil && results[0].CommandTag.String() == "COMMIT"
	if err == nil && committed && len(results) == 2 && len(results[1].Rows) == 1 {
		tok, perr := parseToken(results[1].Rows[0])
		if perr == nil {
			if ctx.Err() != nil && r.primaryMode().Synchronous() {
				// PostgreSQL turns a cancelled synchronous-replication wait
				// into a warning: committed locally, maybe not replicated.
				return tok, classCanceled, fmt.Errorf("%w: committed on the primary, but ctx ended before a synchronous standby confirmed it: %w",
					ErrCommitUnknown, ctx.Err())
			}
			return tok, classNone, nil
		}
		err = perr
	}
	if committed {
		// Committed, but the position was not read: read it now. Any later
		// position covers the commit.
		tok, terr := r.tokenAfterCommit(ctx, conn)
		if terr == nil {
			return tok, classNone, nil
		}
		return Token{}, classify(terr, false), fmt.Errorf("%w: committed, but reading its position failed: %w", ErrCommitUnknown, terr)
	}
	if err == nil && len(results) > 0 && results[0].CommandTag.String() == "ROLLBACK" {
		return Token{}, classSQL, ErrTxAborted
	}
	if err == nil {
		err = errors.New("unexpected reply to COMMIT")
	}
	var pgErr *pgconn.PgError
	if cls := classify(err, false); cls == classSQL && errors.As(err, &pgErr) && len(results) > 0 && results[0].Err != nil {
		// The server refused the COMMIT (deferred constraint, serialization
		// failure): definitely not committed.
		return Token{}, cls, err
	}
	cls := classify(err, false)
	if cls == classSQL || cls == classCanceled {
		cls = classConn // the conversation broke mid-COMMIT
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			cls = classCanceled
		}
	}
	return Token{}, cls, fmt.Errorf("%w: %w", ErrCommitUnknown, err)
}

func (r *Router) tokenAfterCommit(ctx context.Context, conn *pgxpool.Conn) (Token, error) {
	var l, w string
	if err := conn.QueryRow(ctx, tokenSQL).Scan(&l, &w); err != nil {
		return Token{}, err
	}
	return parseToken([][]byte{[]byte(l), []byte(w)})
}

// parseToken reads (lsn text, WAL file name) into a Token.
func parseToken(row [][]byte) (Token, error) {
	if len(row) != 2 {
		return Token{}, fmt.Errorf("router: token row has %d columns", len(row))
	}
	lsn, err := ParseLSN(string(row[0]))
	if err != nil {
		return Token{}, err
	}
	tl, err := parseTimeline(string(row[1]), false)
	if err != nil {
		return Token{}, err
	}
	return Token{LSN: lsn, Timeline: tl}, nil
}

// primaryMode is the replication mode last reported by the primary.
func (r *Router) primaryMode() ReplicationMode {
	if p := r.topo.Load().primary; p != nil {
		return p.state.Load().mode
	}
	return ReplicationMode{}
}
