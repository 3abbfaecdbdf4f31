package health

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Querier is the one call NodeProber and Checker make on a PostgreSQL
// connection source. *pgxpool.Pool, *pgx.Conn and pgx.Tx satisfy it.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// NodeSource reports the state of every PostgreSQL node. NodeProber is the
// implementation that asks PostgreSQL directly; the dal facade may plug in
// the router's view instead. Implementations must be safe for concurrent use
// and must report unreachable nodes in the result rather than fail.
type NodeSource interface {
	Nodes(ctx context.Context) []NodeState
}

// Node names a PostgreSQL node for NodeProber.
type Node struct {
	// Name identifies the node in reports. It must not contain a password.
	Name string
	// DB reaches the node, e.g. a *pgxpool.Pool connected to it.
	DB Querier
}

// NodeProberConfig configures a NodeProber.
type NodeProberConfig struct {
	// Nodes are all PostgreSQL nodes, primary and standbys, in any order:
	// roles are discovered with pg_is_in_recovery(), not assumed.
	Nodes []Node
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// History is how long primary WAL-position samples are kept to measure
	// lag in time. Default 10 minutes; a standby further behind than that is
	// reported with LagLowerBound.
	History time.Duration
	// Timeout bounds each node's probe. Default 2s.
	Timeout time.Duration
}

// NodeProber measures every node's role and replication lag.
//
// Lag in bytes is the primary's current WAL position minus the standby's
// replay position. Lag in time is measured, not guessed: on each call the
// prober records the primary's position with a timestamp, and a standby's lag
// is the time since the earliest recorded sample whose position the standby
// has not replayed yet. This stays 0 on an idle primary (unlike
// now() - pg_last_xact_replay_timestamp()), and it only becomes accurate when
// Nodes is called periodically: the first call can only see that a standby
// is behind, so it reports the lag as a lower bound.
//
// A NodeProber is safe for concurrent use.
type NodeProber struct {
	nodes   []Node
	now     func() time.Time
	history time.Duration
	timeout time.Duration

	mu      sync.Mutex
	primary string      // node the samples came from
	samples []lsnSample // increasing LSN, increasing time
}

type lsnSample struct {
	at  time.Time
	lsn uint64
}

var _ NodeSource = (*NodeProber)(nil)

// NewNodeProber returns a prober over cfg.Nodes.
func NewNodeProber(cfg NodeProberConfig) *NodeProber {
	p := &NodeProber{nodes: append([]Node(nil), cfg.Nodes...), now: cfg.Now, history: cfg.History, timeout: cfg.Timeout}
	if p.now == nil {
		p.now = time.Now
	}
	if p.history <= 0 {
		p.history = 10 * time.Minute
	}
	if p.timeout <= 0 {
		p.timeout = 2 * time.Second
	}
	return p
}

// probeSQL returns the role, the node's WAL position (current write position
// on a primary, replay position on a standby) and whether replay is paused.
// The CASE keeps pg_is_wal_replay_paused() from running on a primary, where
// it raises an error.
const probeSQL = `SELECT pg_is_in_recovery(),
	(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END
	 - '0/0'::pg_lsn)::bigint,
	CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END`

type nodeReading struct {
	state NodeState
	lsn   uint64
	at    time.Time
}

// Nodes probes every node concurrently and returns their states in
// configuration order. It never fails: an unreachable node is reported with
// Reachable false and the error.
func (p *NodeProber) Nodes(ctx context.Context) []NodeState {
	readings := make([]nodeReading, len(p.nodes))
	var wg sync.WaitGroup
	for i, n := range p.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			readings[i] = p.probe(ctx, n)
		}()
	}
	wg.Wait()

	p.mu.Lock()
	defer p.mu.Unlock()
	primaryIdx := -1
	for i, r := range readings {
		if r.state.Reachable && r.state.Role == RolePrimary {
			if primaryIdx >= 0 { // split brain: no lag reference is trustworthy
				primaryIdx = -2
				break
			}
			primaryIdx = i
		}
	}
	out := make([]NodeState, len(readings))
	for i, r := range readings {
		out[i] = r.state
	}
	if primaryIdx < 0 {
		return out
	}
	pr := readings[primaryIdx]
	p.record(pr.state.Name, pr.lsn, pr.at)
	now := p.now()
	for i, r := range readings {
		if !r.state.Reachable || r.state.Role != RoleStandby {
			continue
		}
		out[i].LagBytes, out[i].Lag, out[i].LagLowerBound = p.lagOf(r.lsn, now)
	}
	return out
}

func (p *NodeProber) probe(ctx context.Context, n Node) nodeReading {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	var (
		inRecovery, paused bool
		lsn                *int64
	)
	err := n.DB.QueryRow(ctx, probeSQL).Scan(&inRecovery, &lsn, &paused)
	at := p.now()
	st := NodeState{Name: n.Name}
	if err != nil {
		st.Error = err.Error()
		return nodeReading{state: st, at: at}
	}
	st.Reachable = true
	st.Role = RolePrimary
	if inRecovery {
		st.Role = RoleStandby
		st.ReplayPaused = paused
	}
	var v uint64
	if lsn != nil && *lsn > 0 {
		v = uint64(*lsn)
	}
	return nodeReading{state: st, lsn: v, at: at}
}

// record appends a primary sample, resetting the history when the primary
// changed or its position went backwards (a failover to another timeline).
// Equal positions are not recorded: the earliest time at a position is the
// one lag is measured from. Caller holds p.mu.
func (p *NodeProber) record(primary string, lsn uint64, at time.Time) {
	if p.primary != primary || (len(p.samples) > 0 && lsn < p.samples[len(p.samples)-1].lsn) {
		p.primary = primary
		p.samples = p.samples[:0]
	}
	if len(p.samples) == 0 || lsn > p.samples[len(p.samples)-1].lsn {
		p.samples = append(p.samples, lsnSample{at: at, lsn: lsn})
	}
	// Drop samples older than the history window, but always keep the
	// newest one at or before the cut so "caught up to it" stays decidable.
	cut := at.Add(-p.history)
	drop := 0
	for drop+1 < len(p.samples) && p.samples[drop+1].at.Before(cut) {
		drop++
	}
	if drop > 0 {
		p.samples = append(p.samples[:0], p.samples[drop:]...)
	}
}

// lagOf computes a standby's lag from its replay position. Caller holds p.mu.
func (p *NodeProber) lagOf(replay uint64, now time.Time) (bytes int64, lag time.Duration, lowerBound bool) {
	if len(p.samples) == 0 {
		return 0, 0, false
	}
	last := p.samples[len(p.samples)-1]
	if replay >= last.lsn {
		return 0, 0, false
	}
	bytes = int64(last.lsn - replay)
	for i, s := range p.samples {
		if s.lsn > replay {
			lag = now.Sub(s.at)
			if lag < 0 {
				lag = 0
			}
			return bytes, lag, i == 0
		}
	}
	return bytes, 0, true // unreachable: last.lsn > replay
}
