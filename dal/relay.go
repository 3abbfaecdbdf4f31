package dal

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// The relay turns the outbox (migration 3) into cache invalidations.
//
// Leadership: each candidate opens a dedicated session to the primary (never
// a replica: the role is checked after connecting, and LISTEN and advisory
// locks need the primary) and blocks in pg_advisory_lock. The holder is the
// relay; when its session ends (process exit, Close, a killed backend, a
// failover) PostgreSQL releases the lock and one waiting candidate takes
// over. Even two relays at once (an old leader that has not noticed its
// session died) would be harmless: invalidation is idempotent and a row is
// deleted only after it was applied.
//
// One step: read P = pg_current_wal_insert_lsn(); then, in one statement,
// the snapshot S, Q = pg_current_wal_insert_lsn() and the first BatchSize
// rows in id order. Every row S shows belongs to a transaction whose commit
// record was written before S was taken, so its commit position is below Q:
// invalidating at Q (a position read after the rows became visible) refuses
// every fill that missed them, because such a fill read its own position
// before they were visible — on the primary a smaller insert position, on a
// standby a replay position below their commit. The keys are invalidated at
// Q, then the rows are deleted. A failed invalidation leaves the rows in
// place for the next step.
//
// Watermark: a write whose token (the insert position read after its
// commit) is at most P reserved its commit record before P was read, so at S
// it is either visible or still in progress (in S's xip list). Once a later
// step that read the outbox to its end sees none of those transactions
// running, every write with a token at most P has been applied, and P+1
// becomes the cache's watermark (cache.Cache.SetWatermark: writes below it
// are invalidated). The +1 matters on a quiet system: a session whose token
// is the current position (read a moment ago) may then use cached entries.

const (
	relayChannel  = "hsdal_cache_outbox"
	relayAppName  = "hsdal-cache-relay"
	maxCandidates = 256
	relaySettle   = 2 * time.Millisecond
)

// relayLockKey is the advisory lock key of the relay: the first 8 bytes of
// FNV-1a of "hsdal/cache/relay" (the namespace dal/maint also uses).
var relayLockKey = func() int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("hsdal/cache/relay"))
	return int64(h.Sum64())
}()

const sqlRelayPosition = `SELECT pg_current_wal_insert_lsn()::text`

// sqlRelayBatch returns at least one row (the snapshot and position), with
// the outbox columns NULL when the outbox is empty.
const sqlRelayBatch = `
SELECT s.snap, s.pos, o.id, o.kind, o.key1, o.key2, o.created_ts
FROM (SELECT pg_current_snapshot()::text AS snap, pg_current_wal_insert_lsn()::text AS pos) s
LEFT JOIN LATERAL (SELECT id, kind, key1, key2, created_ts FROM cache_outbox ORDER BY id LIMIT $1) o ON true
ORDER BY o.id`

const sqlRelayDelete = `DELETE FROM cache_outbox WHERE id = ANY($1)`

// sqlOutboxPrune deletes rows older than $1 ms (by the primary's clock, the
// one that stamped them) and, if any of them was a
// real change (not applied by any relay, or it would be gone), leaves a
// flush row so that the relay gives the cache a new epoch.
const sqlOutboxPrune = `
WITH d AS (DELETE FROM cache_outbox WHERE created_ts < hsdal_now_ms() - $1 RETURNING kind)
INSERT INTO cache_outbox (kind) SELECT 'flush' WHERE EXISTS (SELECT 1 FROM d WHERE kind <> 'flush')`

// sqlRelayLag is the age of the oldest outbox row, by the primary's clock.
const sqlRelayLag = `
SELECT coalesce(hsdal_now_ms() - (SELECT created_ts FROM cache_outbox ORDER BY id LIMIT 1), 0)`

var errNotPrimary = errors.New("dal: relay: node is not the primary")

// relay is one relay candidate.
type relay struct {
	cfg   RelayConfig
	rt    *router.Router
	rp    *repos.Repos
	cache *cache.Cache
	nodes map[string]*pgx.ConnConfig // router node name → how to connect
	log   *slog.Logger
	now   func() time.Time

	leader  atomic.Bool
	applied atomic.Uint64 // outbox rows applied by this instance
	wm      atomic.Uint64 // last watermark set
	lagMS   atomic.Int64  // age of the oldest row at the last step, when leader
	pid     atomic.Uint32 // backend PID of the current session (tests, ops)

	invLag  metric.Int64Histogram
	rows    metric.Int64Counter
	reg     metric.Registration
	stop    context.CancelFunc
	done    sync.WaitGroup
	lastPub time.Time
}

type wmCandidate struct {
	p   router.LSN
	xip []uint64
}

func newRelay(cfg RelayConfig, rt *router.Router, rp *repos.Repos, c *cache.Cache, nodes map[string]*pgx.ConnConfig,
	mp metric.MeterProvider, log *slog.Logger) (*relay, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	r := &relay{cfg: cfg, rt: rt, rp: rp, cache: c, nodes: nodes, log: log.With("component", "hsdal/relay"), now: time.Now}
	m := mp.Meter("github.com/hsdal/hsdal/dal")
	var err error
	if r.invLag, err = m.Int64Histogram("hsdal.cache.invalidation.lag", metric.WithUnit("ms"),
		metric.WithDescription("Time from an outbox row's creation (inside the writing transaction) to its invalidation by the relay.")); err != nil {
		return nil, err
	}
	if r.rows, err = m.Int64Counter("hsdal.cache.relay.rows", metric.WithDescription("Outbox rows applied by this instance's relay.")); err != nil {
		return nil, err
	}
	lag, err := m.Float64ObservableGauge("hsdal.cache.relay.lag", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest unapplied outbox row at the relay's last step (reported by the active relay)."))
	if err != nil {
		return nil, err
	}
	leader, err := m.Int64ObservableGauge("hsdal.cache.relay.leader", metric.WithDescription("1 while this instance's relay is the active one."))
	if err != nil {
		return nil, err
	}
	wm, err := m.Int64ObservableGauge("hsdal.cache.relay.watermark", metric.WithDescription("The cache watermark (a WAL position) this relay last set."))
	if err != nil {
		return nil, err
	}
	r.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		isLeader := r.leader.Load()
		if isLeader {
			o.ObserveFloat64(lag, float64(r.lagMS.Load())/1000)
			o.ObserveInt64(leader, 1)
		} else {
			o.ObserveInt64(leader, 0)
		}
		o.ObserveInt64(wm, int64(r.wm.Load()))
		return nil
	}, lag, leader, wm)
	if err != nil {
		return nil, err
	}
	return r, nil
}

func (r *relay) start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	r.done.Add(1)
	go r.run(ctx)
}

func (r *relay) close() {
	if r.stop != nil {
		r.stop()
	}
	r.done.Wait()
	_ = r.reg.Unregister()
}

// run keeps a session (and, when elected, the relay loop) going until ctx
// ends.
func (r *relay) run(ctx context.Context) {
	defer r.done.Done()
	for ctx.Err() == nil {
		err := r.session(ctx)
		r.leader.Store(false)
		r.pid.Store(0)
		if ctx.Err() != nil {
			return
		}
		r.log.Debug("relay session ended", "err", err)
		sleep(ctx, r.cfg.RetryBackoff)
	}
}

// connectPrimary opens a dedicated session to the node the router currently
// writes to, and checks that it is a primary.
func (r *relay) connectPrimary(ctx context.Context) (*pgx.Conn, error) {
	name := r.rt.Status().Primary
	cc, ok := r.nodes[name]
	if !ok {
		return nil, fmt.Errorf("dal: relay: no usable primary (router says %q)", name)
	}
	cc = cc.Copy()
	cc.RuntimeParams["application_name"] = relayAppName
	cc.RuntimeParams["lock_timeout"] = strconv.FormatInt(r.cfg.LockWait.Milliseconds(), 10) + "ms"
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("dal: relay: connect: %w", err)
	}
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&standby); err != nil || standby {
		closeConn(conn)
		if err == nil {
			err = errNotPrimary
		}
		return nil, err
	}
	r.pid.Store(conn.PgConn().PID())
	return conn, nil
}

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// session waits for leadership on one connection, then relays until the
// connection fails or ctx ends.
func (r *relay) session(ctx context.Context) error {
	conn, err := r.connectPrimary(ctx)
	if err != nil {
		return err
	}
	defer closeConn(conn)
	name := r.rt.Status().Primary
	for {
		_, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", relayLockKey)
		if err == nil {
			break
		}
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" { // lock_not_available: LockWait passed
			return err
		}
		if p := r.rt.Status().Primary; p != name {
			return fmt.Errorf("%w: primary moved from %s to %s", errNotPrimary, name, p)
		}
	}
	// Listen only as the leader: a standby that listened without reading
	// would hold back PostgreSQL's notification queue.
	if _, err := conn.Exec(ctx, "LISTEN "+relayChannel); err != nil {
		return err
	}
	r.leader.Store(true)
	// Positions of this session only: after a failover the new timeline's
	// positions do not compare with the old one's.
	r.wm.Store(0)
	r.log.Info("relay active", "node", name)
	var (
		pending   []wmCandidate
		lastPrune time.Time
		failing   bool
	)
	for {
		n, drained, err := r.step(ctx, conn, &pending)
		if err != nil {
			if conn.IsClosed() || ctx.Err() != nil || isConnErr(err) {
				return err
			}
			if !failing {
				r.log.Warn("relay step failed; rows kept and retried", "err", err)
				failing = true
			}
			if err := r.wait(ctx, conn, r.cfg.RetryBackoff, false); err != nil {
				return err
			}
			continue
		}
		if failing {
			r.log.Info("relay steps succeed again")
			failing = false
		}
		if prune := r.cfg.Retention / 4; time.Since(lastPrune) > prune {
			if _, err := conn.Exec(ctx, sqlOutboxPrune, r.cfg.Retention.Milliseconds()); err != nil {
				return err
			}
			lastPrune = time.Now()
		}
		switch {
		case !drained:
			continue // more rows waiting
		case n > 0:
			// Step again soon rather than on the next notification: its
			// position is read after these writes' commits, so the
			// watermark passes them. The short pause lets writes
			// committing meanwhile join that step.
			if err := r.wait(ctx, conn, min(r.cfg.PollInterval, relaySettle), false); err != nil {
				return err
			}
			continue
		}
		if err := r.wait(ctx, conn, r.cfg.PollInterval, true); err != nil {
			return err
		}
	}
}

// wait waits d for notifications, returning early at the first one when
// early is set (otherwise consuming them until d has passed).
func (r *relay) wait(ctx context.Context, conn *pgx.Conn, d time.Duration, early bool) error {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, left)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err == nil:
			if early {
				return nil
			}
		case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
			if conn.IsClosed() {
				return err
			}
			return nil
		default:
			return err
		}
	}
}

func isConnErr(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Admin shutdown, crash shutdown, cannot connect now: the session
		// is gone. Read-only transaction: the node is no longer the
		// primary; reconnect to the one the router finds.
		return pe.Code == "57P01" || pe.Code == "57P02" || pe.Code == "57P03" || pe.Code == "25006"
	}
	var ne net.Error
	return errors.As(err, &ne) || pgconn.SafeToRetry(err)
}

type outboxRow struct {
	id               int64
	kind, key1, key2 string
	createdMS        int64
}

// step applies one batch. drained reports that the batch read the outbox to
// its end (fewer rows than BatchSize).
func (r *relay) step(ctx context.Context, conn *pgx.Conn, pending *[]wmCandidate) (n int, drained bool, err error) {
	var pText string
	if err := conn.QueryRow(ctx, sqlRelayPosition).Scan(&pText); err != nil {
		return 0, false, err
	}
	p, err := router.ParseLSN(pText)
	if err != nil {
		return 0, false, err
	}
	var batch []outboxRow
	var snap, qText string
	rows, _ := conn.Query(ctx, sqlRelayBatch, r.cfg.BatchSize)
	for rows.Next() {
		var (
			s, q             string
			id, created      *int64
			kind, key1, key2 *string
		)
		if err := rows.Scan(&s, &q, &id, &kind, &key1, &key2, &created); err != nil {
			rows.Close()
			return 0, false, err
		}
		snap, qText = s, q
		if id != nil {
			batch = append(batch, outboxRow{id: *id, kind: *kind, key1: *key1, key2: *key2, createdMS: *created})
		}
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	q, err := router.ParseLSN(qText)
	if err != nil {
		return 0, false, err
	}
	xip, err := parseSnapshotXIP(snap)
	if err != nil {
		return 0, false, err
	}
	drained = len(batch) < r.cfg.BatchSize
	if len(batch) == 0 {
		r.lagMS.Store(0)
	} else if err := r.apply(ctx, conn, q, batch); err != nil {
		return 0, false, err
	}
	r.advance(ctx, pending, wmCandidate{p: p + 1, xip: xip}, xip, drained)
	return len(batch), drained, nil
}

// apply invalidates what batch names at position q and deletes its rows.
func (r *relay) apply(ctx context.Context, conn *pgx.Conn, q router.LSN, batch []outboxRow) error {
	changes := make([]repos.Change, 0, 2*len(batch))
	ids := make([]int64, 0, len(batch))
	flush := false
	oldest := batch[0].createdMS
	for _, row := range batch {
		ids = append(ids, row.id)
		oldest = min(oldest, row.createdMS)
		switch row.kind {
		case "user":
			changes = append(changes, repos.Change{Kind: repos.ChangeUser, Key: row.key1})
		case "user_auth":
			changes = append(changes, repos.Change{Kind: repos.ChangeDevices, Key: row.key1},
				repos.Change{Kind: repos.ChangeTokensOfUser, Key: row.key1})
		case "device":
			changes = append(changes, repos.Change{Kind: repos.ChangeDevices, Key: row.key1, Key2: row.key2},
				repos.Change{Kind: repos.ChangeTokensOfDevice, Key: row.key1, Key2: row.key2})
		case "token":
			h, err := hex.DecodeString(row.key1)
			if err != nil {
				return fmt.Errorf("dal: relay: outbox row %d: bad token hash", row.id)
			}
			changes = append(changes, repos.Change{Kind: repos.ChangeAccessToken, Key: string(h)})
		case "room":
			changes = append(changes, repos.Change{Kind: repos.ChangeRoom, Key: row.key1})
		case "room_members":
			changes = append(changes, repos.Change{Kind: repos.ChangeMembership, Key: row.key1})
		case "membership":
			changes = append(changes, repos.Change{Kind: repos.ChangeMembership, Key: row.key1, Key2: row.key2})
		case "flush":
			flush = true
		}
	}
	r.lagMS.Store(max(0, r.now().UnixMilli()-oldest))
	if flush {
		if err := r.cache.BumpEpoch(ctx); err != nil {
			return err
		}
	}
	if err := r.rp.InvalidateCached(ctx, conn, q, changes); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, sqlRelayDelete, ids); err != nil {
		return err
	}
	now := r.now().UnixMilli()
	for _, row := range batch {
		r.invLag.Record(ctx, max(0, now-row.createdMS))
	}
	r.rows.Add(ctx, int64(len(batch)))
	r.applied.Add(uint64(len(batch)))
	return nil
}

// advance records this step's watermark candidate and releases those whose
// in-progress transactions have all ended, when this step read the outbox
// to its end; then publishes the watermark if it moved (or every second, so
// that L1s flushed since hear it again).
func (r *relay) advance(ctx context.Context, pending *[]wmCandidate, c wmCandidate, running []uint64, drained bool) {
	if !drained {
		return
	}
	var released router.LSN
	*pending, released = releaseCandidates(*pending, c, running)
	w := max(router.LSN(r.wm.Load()), released)
	if w == 0 || uint64(w) == r.wm.Load() && time.Since(r.lastPub) < time.Second {
		return
	}
	if err := r.cache.SetWatermark(ctx, uint64(w)); err != nil {
		return // retried at the next step
	}
	r.wm.Store(uint64(w))
	r.lastPub = time.Now()
}

// releaseCandidates adds c to the pending watermark candidates and releases
// every candidate none of whose in-progress transactions is still running
// (running: the xip list of a snapshot taken by a step that read the outbox
// to its end, after the candidate's). It returns the candidates kept and the
// highest released position (0: none). At most maxCandidates are kept, the
// newest.
func releaseCandidates(pending []wmCandidate, c wmCandidate, running []uint64) ([]wmCandidate, router.LSN) {
	pending = append(pending, c)
	if len(pending) > maxCandidates {
		pending = pending[len(pending)-maxCandidates:]
	}
	isRunning := make(map[uint64]struct{}, len(running))
	for _, x := range running {
		isRunning[x] = struct{}{}
	}
	var w router.LSN
	keep := pending[:0]
	for _, cand := range pending {
		blocked := false
		for _, x := range cand.xip {
			if _, ok := isRunning[x]; ok {
				blocked = true
				break
			}
		}
		if blocked {
			keep = append(keep, cand)
			continue
		}
		w = max(w, cand.p)
	}
	return keep, w
}

// parseSnapshotXIP returns the in-progress transaction IDs of a
// pg_snapshot's text form "xmin:xmax:xip,xip,...".
func parseSnapshotXIP(s string) ([]uint64, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("dal: relay: bad snapshot %q", s)
	}
	if parts[2] == "" {
		return nil, nil
	}
	var out []uint64
	for _, f := range strings.Split(parts[2], ",") {
		x, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("dal: relay: bad snapshot %q", s)
		}
		out = append(out, x)
	}
	return out, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
