package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sony/gobreaker/v2"
)

// node is one PostgreSQL server: its pool, its probe connection, its last
// probed state, its breaker and its in-flight count.
type node struct {
	idx  int
	name string // host:port

	pool      *pgxpool.Pool
	probeConf *pgx.ConnConfig

	probeMu   sync.Mutex // serialises probes (loop and Refresh) on probeConn
	probeConn *pgx.Conn
	closed    bool          // router closed: never reconnect (guarded by probeMu)
	kick      chan struct{} // buffered(1): probe now

	state    atomic.Pointer[nodeState]
	inflight atomic.Int64

	breaker      *gobreaker.TwoStepCircuitBreaker[struct{}]
	breakerState atomic.Int32 // last gobreaker.State reported by OnStateChange
	lastFailed   atomic.Bool  // the last reported outcome was a failure

	tel nodeTelemetry
}

// nodeState is an immutable snapshot of what the last probe found, plus what
// the router derived from it. Replaced wholesale, read lock-free.
type nodeState struct {
	probedAt  time.Time // last probe, successful or not
	sampledAt time.Time // last successful probe: when lsn/timeline/standby were read
	reachable bool
	failures  int    // consecutive failed probes
	err       string // last probe error (no secrets: pgx redacts passwords)

	standby  bool
	lsn      LSN // replay position (standby) or WAL insert position (primary)
	timeline uint32
	lag      replicaLag      // standbys only
	mode     ReplicationMode // primaries only
}

// ReplicationMode is how the primary replicates, as it reports it.
type ReplicationMode struct {
	// SynchronousStandbyNames is the primary's synchronous_standby_names
	// ("" means asynchronous replication).
	SynchronousStandbyNames string
	// SynchronousCommit is the primary's synchronous_commit setting.
	SynchronousCommit string
	// SyncStandbys is how many standbys pg_stat_replication lists as sync
	// or quorum right now.
	SyncStandbys int
}

// Synchronous reports whether a commit acknowledged by the primary has
// also been confirmed by a synchronous standby (so it survives the loss of
// the primary): synchronous_standby_names is set and synchronous_commit is
// on, remote_write or remote_apply. With asynchronous replication, writes
// acknowledged in the replication lag window are lost if the primary dies.
func (m ReplicationMode) Synchronous() bool {
	if strings.TrimSpace(m.SynchronousStandbyNames) == "" {
		return false
	}
	switch m.SynchronousCommit {
	case "on", "remote_write", "remote_apply":
		return true
	}
	return false
}

// probeSQL samples role, position, timeline and replication mode in one
// round trip. The primary's position is the WAL insert position: every
// record inserted so far (every commit visible so far) is at or before it.
// A standby's timeline is its WAL receiver's; while the receiver is down
// (e.g. the primary died) only the last restartpoint's timeline is known,
// which may predate a timeline switch the standby has already replayed: it
// comes back prefixed with "c", as a lower bound.
const probeSQL = `SELECT pg_is_in_recovery(),
 (CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn)
       ELSE pg_current_wal_insert_lsn() END)::text,
 CASE WHEN pg_is_in_recovery()
      THEN coalesce((SELECT nullif(received_tli, 0) FROM pg_stat_wal_receiver)::text,
                    'c' || (pg_control_checkpoint()).timeline_id)
      ELSE pg_walfile_name(pg_current_wal_insert_lsn()) END,
 current_setting('synchronous_standby_names'),
 current_setting('synchronous_commit'),
 (SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum'))`

// probeResult is the raw result of one probe.
type probeResult struct {
	standby  bool
	lsn      LSN
	timeline uint32
	// timelineLowerBound: timeline is the standby's last restartpoint's,
	// not its WAL receiver's.
	timelineLowerBound bool
	mode               ReplicationMode
}

// probe runs one probe on n's dedicated connection, reconnecting if needed.
func (n *node) probe(ctx context.Context, timeout time.Duration) (probeResult, error) {
	n.probeMu.Lock()
	defer n.probeMu.Unlock()
	if n.closed {
		return probeResult{}, errRouterClosed
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		res                    probeResult
		lsnText, tlText, names string
		commit                 string
		syncN                  int64
	)
	for attempt := 0; ; attempt++ {
		fresh := false
		if n.probeConn == nil || n.probeConn.IsClosed() {
			c, err := pgx.ConnectConfig(ctx, n.probeConf)
			if err != nil {
				return probeResult{}, err
			}
			n.probeConn, fresh = c, true
		}
		err := n.probeConn.QueryRow(ctx, probeSQL).Scan(&res.standby, &lsnText, &tlText, &names, &commit, &syncN)
		if err == nil {
			break
		}
		n.closeProbeLocked()
		// A connection that died since the last probe (node restarted,
		// killed, rejoined) says nothing about the node now: reconnect once
		// and ask again, so a stale view is not kept for a whole interval.
		if fresh || attempt > 0 || ctx.Err() != nil || pgconn.Timeout(err) {
			return probeResult{}, err
		}
	}
	var err error
	if res.lsn, err = ParseLSN(lsnText); err != nil {
		return probeResult{}, err
	}
	if res.standby {
		tlText, res.timelineLowerBound = strings.CutPrefix(tlText, "c")
	}
	if res.timeline, err = parseTimeline(tlText, res.standby); err != nil {
		return probeResult{}, err
	}
	res.mode = ReplicationMode{SynchronousStandbyNames: names, SynchronousCommit: commit, SyncStandbys: int(syncN)}
	return res, nil
}

func (n *node) closeProbeLocked() {
	if n.probeConn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		_ = n.probeConn.Close(ctx)
		cancel()
		n.probeConn = nil
	}
}

// parseTimeline reads a timeline ID: a decimal number from a standby, the
// first 8 hex digits of a WAL file name from a primary.
func parseTimeline(s string, standby bool) (uint32, error) {
	if standby {
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("router: bad timeline %q: %w", s, err)
		}
		return uint32(v), nil
	}
	if len(s) < 8 {
		return 0, fmt.Errorf("router: bad WAL file name %q", s)
	}
	v, err := strconv.ParseUint(s[:8], 16, 32)
	if err != nil {
		return 0, fmt.Errorf("router: bad WAL file name %q: %w", s, err)
	}
	return uint32(v), nil
}

// nodeConfigs expands the DSNs into one pool config per distinct host:port.
// Multi-host DSNs yield a node per host.
func nodeConfigs(cfg Config) ([]*pgxpool.Config, error) {
	dsns := make([]string, 0, 1+len(cfg.ReplicaDSNs))
	if cfg.PrimaryDSN != "" {
		dsns = append(dsns, cfg.PrimaryDSN)
	}
	dsns = append(dsns, cfg.ReplicaDSNs...)
	var out []*pgxpool.Config
	seen := map[string]bool{}
	for i, dsn := range dsns {
		base, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			// pgx redacts the password in its parse errors.
			return nil, fmt.Errorf("%w: DSN #%d: %w", errConfig, i, err)
		}
		type hp struct {
			host string
			port uint16
		}
		hosts := []hp{{base.ConnConfig.Host, base.ConnConfig.Port}}
		for _, fb := range base.ConnConfig.Fallbacks {
			hosts = append(hosts, hp{fb.Host, fb.Port})
		}
		for j, h := range hosts {
			name := net.JoinHostPort(h.host, strconv.Itoa(int(h.port)))
			if strings.HasPrefix(h.host, "/") {
				name = h.host + ":" + strconv.Itoa(int(h.port))
			}
			if seen[name] {
				continue
			}
			seen[name] = true
			pc := base.Copy()
			if j > 0 {
				pc.ConnConfig.TLSConfig = base.ConnConfig.Fallbacks[j-1].TLSConfig
			}
			pc.ConnConfig.Host, pc.ConnConfig.Port = h.host, h.port
			pc.ConnConfig.Fallbacks = nil
			pc.ConnConfig.ValidateConnect = nil // roles are probed, not demanded at connect
			out = append(out, pc)
		}
	}
	if len(out) > maxNodes {
		return nil, fmt.Errorf("%w: %d nodes, at most %d", errConfig, len(out), maxNodes)
	}
	return out, nil
}

// applyPoolConfig sets the router's pool limits and session defaults on pc.
func applyPoolConfig(pc *pgxpool.Config, p PoolConfig) {
	pc.MaxConns = p.MaxConns
	pc.MinConns = p.MinConns
	pc.MaxConnLifetime = p.MaxConnLifetime
	pc.MaxConnLifetimeJitter = time.Minute
	if p.MaxConnLifetime < 10*time.Minute {
		pc.MaxConnLifetimeJitter = p.MaxConnLifetime / 10
	}
	pc.MaxConnIdleTime = p.MaxConnIdleTime
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = p.ConnectTimeout
	}
	// The liveness ping of a connection idle for over a second must not
	// hang on a black-holed node.
	pc.PingTimeout = pc.ConnConfig.ConnectTimeout
	rp := pc.ConnConfig.RuntimeParams
	if rp["application_name"] == "" {
		rp["application_name"] = "hsdal"
	}
	// Every session is read-only by default, on every node: a read callback
	// cannot write even when it lands on the primary, so reads behave the
	// same wherever they run. Write opens its transaction READ WRITE
	// explicitly, which costs no extra round trip.
	rp["default_transaction_read_only"] = "on"
}

// probeConfig is n's dedicated probe connection config.
func probeConfig(pc *pgxpool.Config, timeout time.Duration) *pgx.ConnConfig {
	c := pc.ConnConfig.Copy()
	c.ConnectTimeout = timeout
	c.RuntimeParams["application_name"] = "hsdal-router-probe"
	c.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	return c
}

// newBreaker gives n its breaker; onChange (optional) is told of state
// changes.
func (n *node) newBreaker(bc BreakerConfig, onChange func(from, to gobreaker.State)) {
	n.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        n.name,
		MaxRequests: bc.HalfOpenRequests,
		Timeout:     bc.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= bc.Failures },
		IsSuccessful: func(err error) bool {
			return !errors.Is(err, errBreakerFailure)
		},
		IsExcluded: func(err error) bool { return errors.Is(err, errBreakerExcluded) },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			n.breakerState.Store(int32(to))
			if onChange != nil {
				onChange(from, to)
			}
		},
	})
}

// ticket is an admission by the breaker; done is nil on the fast path.
type ticket struct{ done func(error) }

// admit asks n's breaker to let one request through. Fast path: while the
// breaker is closed and the last outcome was not a failure, successes
// need not be reported (the consecutive-failure count is already zero), so
// the breaker is not consulted at all.
func (n *node) admit() (ticket, bool) {
	if gobreaker.State(n.breakerState.Load()) == gobreaker.StateClosed && !n.lastFailed.Load() {
		return ticket{}, true
	}
	done, err := n.breaker.Allow()
	if err != nil {
		return ticket{}, false
	}
	return ticket{done: done}, true
}

// report tells n's breaker how an admitted request ended.
func (n *node) report(t ticket, c errClass) {
	o := breakerOutcome(c)
	if t.done != nil {
		t.done(o)
		switch o {
		case nil:
			n.lastFailed.Store(false)
		case errBreakerFailure:
			n.lastFailed.Store(true)
		}
		return
	}
	if o == errBreakerFailure {
		// Fast-path request failed: count it now.
		if done, err := n.breaker.Allow(); err == nil {
			done(o)
		}
		n.lastFailed.Store(true)
	}
}

var errRouterClosed = errors.New("router: closed")

// Outcomes reported to a breaker.
var (
	errBreakerFailure  = errors.New("node failure")
	errBreakerExcluded = errors.New("not the node's fault")
)

// breakerOutcome maps an error class to what the breaker should count.
func breakerOutcome(c errClass) error {
	switch c {
	case classConn:
		return errBreakerFailure
	case classCanceled:
		return errBreakerExcluded
	}
	return nil // success, SQL errors, recovery conflicts: the node answered
}

// usable reports whether n's breaker lets requests through. The atomic flag
// avoids the breaker's mutex on the hot path; an open breaker is asked, so
// that it can move to half-open once its timeout passed.
func (n *node) usable() bool {
	if gobreaker.State(n.breakerState.Load()) != gobreaker.StateOpen {
		return true
	}
	return n.breaker.State() != gobreaker.StateOpen
}
