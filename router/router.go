package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/sony/gobreaker/v2"
)

// Router routes queries to the nodes of one PostgreSQL replication cluster.
// It is safe for concurrent use. Create it with New, release it with Close.
type Router struct {
	cfg   Config
	log   *slog.Logger
	nodes []*node

	topo atomic.Pointer[topology]

	mu          sync.Mutex // guards history and the publication of node states/topology
	history     *lsnHistory
	histNode    *node  // primary the history belongs to
	histTL      uint32 // its timeline
	lastPrimary *node  // for change logs and the failover counter
	lastTL      uint32
	splitLogged bool
	lostLogged  bool

	// lastWrite is the newest token this router minted: a position read
	// after a commit that is visible now, so a later primary read may report
	// it as its Pos.
	lastWrite atomic.Pointer[Token]

	budget *retryBudget
	tel    *telemetry

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// topology is an immutable view of who is primary and which standbys may
// serve reads. Rebuilt after each probe.
type topology struct {
	primary    *node // nil: none reachable, or split brain
	splitBrain bool
	timeline   uint32  // the primary's timeline (last known when primary is nil)
	replicas   []*node // reachable standbys on that timeline
}

// New opens a pool per node, probes every node once (so the primary is
// known when New returns), and starts the background prober. It returns an
// error wrapping ErrUnavailable if no node answers the first probe within
// ctx and Config.ProbeTimeout, and a descriptive error for an invalid
// Config. Pools connect lazily; New does not wait for MinConns.
func New(ctx context.Context, cfg Config) (*Router, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	pcs, err := nodeConfigs(cfg)
	if err != nil {
		return nil, err
	}
	r := &Router{
		cfg:     cfg,
		log:     cfg.Logger,
		history: newLSNHistory(cfg.LagHistory),
		budget:  newRetryBudget(cfg.RetryRatio, cfg.MinRetriesPerSecond, cfg.Now),
	}
	r.topo.Store(&topology{})
	r.ctx, r.cancel = context.WithCancel(context.Background())
	for i, pc := range pcs {
		applyPoolConfig(pc, cfg.Pool)
		if cfg.QueryTracer != nil {
			pc.ConnConfig.Tracer = cfg.QueryTracer
		}
		n := &node{
			idx:       i,
			name:      nodeName(pc),
			probeConf: probeConfig(pc, cfg.ProbeTimeout),
			kick:      make(chan struct{}, 1),
		}
		n.state.Store(&nodeState{err: "not probed yet"})
		n.newBreaker(cfg.Breaker, func(from, to gobreaker.State) {
			r.log.Warn("router: breaker state change", "node", n.name, "from", from.String(), "to", to.String())
		})
		pool, err := pgxpool.NewWithConfig(r.ctx, pc)
		if err != nil {
			r.closeNodes()
			return nil, fmt.Errorf("router: pool for %s: %w", n.name, err)
		}
		n.pool = pool
		r.nodes = append(r.nodes, n)
	}
	if r.tel, err = newTelemetry(r); err != nil {
		r.closeNodes()
		return nil, err
	}
	if err := r.Refresh(ctx); err != nil {
		r.Close()
		return nil, err
	}
	for _, n := range r.nodes {
		r.wg.Add(1)
		go r.probeLoop(n)
	}
	return r, nil
}

func nodeName(pc *pgxpool.Config) string {
	return fmt.Sprintf("%s:%d", pc.ConnConfig.Host, pc.ConnConfig.Port)
}

// Close stops the prober and closes every pool, waiting for connections in
// use to be released. Reads and writes started after Close fail with
// ErrUnavailable. Close is idempotent.
func (r *Router) Close() {
	if r.closed.Swap(true) {
		return
	}
	r.cancel()
	r.wg.Wait()
	if r.tel != nil {
		r.tel.close()
	}
	r.closeNodes()
}

func (r *Router) closeNodes() {
	for _, n := range r.nodes {
		n.probeMu.Lock()
		n.closeProbeLocked()
		n.closed = true
		n.probeMu.Unlock()
		if n.pool != nil {
			n.pool.Close()
		}
	}
}

// Refresh probes every node now, concurrently, and updates roles, positions
// and the primary before returning. The background prober does this every
// ProbeInterval; Refresh is for startup and for callers (and tests) that
// want the newest view. It returns an error wrapping ErrUnavailable when no
// node answered, and ctx's error if ctx ends first.
func (r *Router) Refresh(ctx context.Context) error {
	if r.closed.Load() {
		return fmt.Errorf("router: refresh: %w: router closed", ErrUnavailable)
	}
	var wg sync.WaitGroup
	var ok atomic.Int32
	for _, n := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r.probeOnce(ctx, n) {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("router: refresh: %w", err)
	}
	if ok.Load() == 0 {
		return fmt.Errorf("router: refresh: %w: no node answered (%s)", ErrUnavailable, r.firstProbeError())
	}
	return nil
}

func (r *Router) firstProbeError() string {
	for _, n := range r.nodes {
		if st := n.state.Load(); !st.reachable {
			return n.name + ": " + st.err
		}
	}
	return ""
}

// probeLoop probes n every ProbeInterval, or at once when kicked, until
// Close.
func (r *Router) probeLoop(n *node) {
	defer r.wg.Done()
	t := time.NewTicker(r.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-n.kick:
		}
		r.probeOnce(r.ctx, n)
	}
}

// reprobe asks every node's prober to probe now (failover suspected).
func (r *Router) reprobe() {
	for _, n := range r.nodes {
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

// probeOnce probes n and publishes the result; it reports success.
func (r *Router) probeOnce(ctx context.Context, n *node) bool {
	res, err := n.probe(ctx, r.cfg.ProbeTimeout)
	if err != nil && ctx.Err() != nil {
		return false // shutting down or caller gave up: not the node's fault
	}
	r.publish(n, res, err)
	return err == nil
}

// publish records a probe result, derives lag, and rebuilds the topology.
func (r *Router) publish(n *node, res probeResult, perr error) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := n.state.Load()
	st := &nodeState{probedAt: now}
	if perr != nil {
		// Keep the last known role and position for status pages; a refused
		// connection marks the node down at once, anything else (a slow
		// probe) after two failures in a row.
		*st = *prev
		st.probedAt = now
		st.failures = prev.failures + 1
		st.err = perr.Error()
		var ce *pgconn.ConnectError
		if errors.As(perr, &ce) || st.failures >= 2 {
			st.reachable = false
		}
	} else {
		st.reachable = true
		st.sampledAt = now
		st.standby = res.standby
		st.lsn = res.lsn
		st.timeline = res.timeline
		// A standby's replay timeline only moves forward: when the probe
		// could read only a lower bound (WAL receiver down), keep the
		// highest timeline this node was seen on, so a standby that has
		// replayed a timeline switch stays in the read set while its
		// primary is gone.
		if res.standby && res.timelineLowerBound && prev.timeline > st.timeline {
			st.timeline = prev.timeline
		}
		if !res.standby {
			st.mode = res.mode
		}
	}
	n.state.Store(st)
	switch {
	case prev.reachable && !st.reachable:
		r.log.Warn("router: node unreachable", "node", n.name, "was_standby", prev.standby, "err", st.err)
		// Its pooled connections are dead or about to be: drop them so a
		// restarted node is not served stale connections for a while.
		if n.pool != nil && !r.closed.Load() {
			n.pool.Reset()
		}
	case !prev.reachable && st.reachable && !prev.probedAt.IsZero():
		r.log.Info("router: node reachable", "node", n.name, "standby", st.standby, "timeline", st.timeline)
	case prev.reachable && st.reachable && prev.standby != st.standby:
		r.log.Warn("router: node changed role", "node", n.name, "standby", st.standby, "timeline", st.timeline)
	}
	r.rebuild(now)
}

// rebuild recomputes the primary, the lag history and the replica set. Called
// with r.mu held.
func (r *Router) rebuild(now time.Time) {
	// Primary candidates: reachable nodes not in recovery. A candidate
	// whose last probe failed only keeps its claim while no other candidate
	// has a fresh one (a slow probe must not drop the primary, and a dead
	// old primary must not make a split brain with its successor).
	var primaries, fresh []*node
	for _, n := range r.nodes {
		if st := n.state.Load(); st.reachable && !st.standby {
			primaries = append(primaries, n)
			if st.failures == 0 {
				fresh = append(fresh, n)
			}
		}
	}
	if len(primaries) > 1 && len(fresh) > 0 {
		primaries = fresh
	}
	t := &topology{timeline: r.lastTL}
	switch len(primaries) {
	case 0:
		if !r.lostLogged && r.lastPrimary != nil {
			r.log.Warn("router: no reachable primary; writes fail with ErrUnavailable until a node reports pg_is_in_recovery() = false",
				"last_primary", r.lastPrimary.name, "timeline", r.lastTL)
			r.lostLogged = true
		}
	case 1:
		r.lostLogged = false
		t.primary = primaries[0]
		t.timeline = primaries[0].state.Load().timeline
		r.splitLogged = false
	default:
		t.splitBrain = true
		if !r.splitLogged {
			names := make([]string, len(primaries))
			for i, p := range primaries {
				names[i] = fmt.Sprintf("%s (timeline %d)", p.name, p.state.Load().timeline)
			}
			r.log.Error("router: split brain: more than one node reports pg_is_in_recovery() = false; refusing writes until one of them is demoted",
				"primaries", names)
			r.splitLogged = true
		}
	}
	if p := t.primary; p != nil {
		pst := p.state.Load()
		if p != r.histNode || pst.timeline != r.histTL {
			r.history.reset()
			r.histNode, r.histTL = p, pst.timeline
		}
		r.history.add(pst.lsn, pst.sampledAt)
		if p != r.lastPrimary || pst.timeline != r.lastTL {
			if r.lastPrimary != nil {
				r.log.Warn("router: primary changed", "primary", p.name, "timeline", pst.timeline,
					"previous", r.lastPrimary.name, "previous_timeline", r.lastTL)
				r.tel.failover()
			} else {
				r.log.Info("router: primary found", "primary", p.name, "timeline", pst.timeline,
					"synchronous", pst.mode.Synchronous())
			}
			r.lastPrimary, r.lastTL = p, pst.timeline
		}
	}
	for _, n := range r.nodes {
		st := n.state.Load()
		if !st.reachable || !st.standby {
			continue
		}
		if lag := computeLag(r.history, st.lsn, st.sampledAt); lag != st.lag {
			ns := *st
			ns.lag = lag
			n.state.Store(&ns)
		}
		if t.timeline == 0 || st.timeline == t.timeline {
			t.replicas = append(t.replicas, n)
		}
	}
	r.topo.Store(t)
}
