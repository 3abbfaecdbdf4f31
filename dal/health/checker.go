package health

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// PoolCounters are a pool's cumulative counters at one instant, as
// pgxpool.Stat reports them.
type PoolCounters struct {
	// Acquired is the number of connections checked out now.
	Acquired int32
	// Max is the pool's connection limit.
	Max int32
	// AcquireCount is the cumulative number of successful acquires.
	AcquireCount int64
	// AcquireDuration is the cumulative time spent in successful acquires.
	AcquireDuration time.Duration
	// CanceledAcquireCount is the cumulative number of acquires whose context
	// ended while waiting.
	CanceledAcquireCount int64
}

// PoolSource names a pool and how to read its counters. Stat must be safe for
// concurrent use.
type PoolSource struct {
	// Name identifies the pool in reports (never a DSN).
	Name string
	// Stat reads the pool's counters.
	Stat func() PoolCounters
}

// PgxPool adapts a *pgxpool.Pool into a PoolSource.
func PgxPool(name string, p *pgxpool.Pool) PoolSource {
	return PoolSource{Name: name, Stat: func() PoolCounters {
		s := p.Stat()
		return PoolCounters{
			Acquired:             s.AcquiredConns(),
			Max:                  s.MaxConns(),
			AcquireCount:         s.AcquireCount(),
			AcquireDuration:      s.AcquireDuration(),
			CanceledAcquireCount: s.CanceledAcquireCount(),
		}
	}}
}

// QueryCounters are cumulative statement counters, e.g. from the slow-query
// tracer.
type QueryCounters struct {
	// Count is the number of finished statements.
	Count int64
	// Total is their summed duration.
	Total time.Duration
	// Slow is how many exceeded the slow threshold.
	Slow int64
}

// Pinger checks a dependency is up. PingFunc adapts a function.
type Pinger interface {
	Ping(ctx context.Context) error
}

// PingFunc adapts a function into a Pinger, e.g.
// health.PingFunc(func(ctx context.Context) error { return rdb.Ping(ctx).Err() }).
type PingFunc func(ctx context.Context) error

// Ping calls f.
func (f PingFunc) Ping(ctx context.Context) error { return f(ctx) }

// RelayLagSource reports how far the durable invalidation relay is behind.
type RelayLagSource interface {
	RelayLag(ctx context.Context) (time.Duration, error)
}

// CheckerConfig configures a Checker. Every source is optional: a missing
// source leaves its Snapshot section empty, and Evaluate skips its rules.
type CheckerConfig struct {
	// Nodes reports PostgreSQL nodes (e.g. a *NodeProber).
	Nodes NodeSource
	// Primary, when set, is asked for the oldest transaction-ID age and the
	// replication slots. It must reach the primary; on a standby these
	// checks are reported as unmeasured.
	Primary Querier
	// Pools are sampled for utilisation and acquire wait; wait and failure
	// counts are deltas since the previous Check (the first covers the pool's
	// life so far).
	Pools []PoolSource
	// Queries reads cumulative statement counters; the Snapshot holds the
	// delta since the previous Check.
	Queries func() QueryCounters
	// Redis is pinged when set.
	Redis Pinger
	// Relay reports the invalidation relay lag when set.
	Relay RelayLagSource
	// Thresholds are the alert bounds; zero fields mean the defaults.
	Thresholds Thresholds
	// Timeout bounds each probe. Default 2s.
	Timeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MeterProvider receives the gauges of the last report (status, pool
	// utilisation, acquire wait, replica lag, relay lag, XID age, slot
	// retention). Nil means no metrics.
	MeterProvider metric.MeterProvider
}

// Checker samples every configured source into a Snapshot and evaluates it.
// It keeps the previous counters to compute windowed rates, so one Checker
// should be used per monitored DAL. Safe for concurrent use.
type Checker struct {
	cfg CheckerConfig

	mu        sync.Mutex
	prevAt    time.Time
	prevPools map[string]PoolCounters
	prevQ     *QueryCounters
	last      *Report

	reg metric.Registration
}

// NewChecker returns a Checker. It fails only when registering the metric
// instruments fails.
func NewChecker(cfg CheckerConfig) (*Checker, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	c := &Checker{cfg: cfg, prevPools: map[string]PoolCounters{}}
	if err := c.registerMetrics(); err != nil {
		return nil, fmt.Errorf("health: metrics: %w", err)
	}
	return c, nil
}

// Close unregisters the metric callbacks. Safe to call more than once.
func (c *Checker) Close() {
	c.mu.Lock()
	reg := c.reg
	c.reg = nil
	c.mu.Unlock()
	// Unregister outside c.mu: a collection in flight holds the SDK's lock
	// while its callback takes c.mu.
	if reg != nil {
		_ = reg.Unregister()
	}
}

// Check takes a Snapshot and evaluates it against the configured
// thresholds. It never fails: what cannot be measured is reported in the
// Snapshot (an unreachable node, Redis down) or left out.
func (c *Checker) Check(ctx context.Context) Report {
	r := Evaluate(c.Snapshot(ctx), c.cfg.Thresholds)
	c.mu.Lock()
	c.last = &r
	c.mu.Unlock()
	return r
}

// Last returns the most recent Check result, and false before the first.
func (c *Checker) Last() (Report, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last == nil {
		return Report{}, false
	}
	return *c.last, true
}

// Snapshot samples every configured source concurrently.
func (c *Checker) Snapshot(ctx context.Context) Snapshot {
	var s Snapshot
	var wg sync.WaitGroup
	if c.cfg.Nodes != nil {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
			s.Nodes = c.cfg.Nodes.Nodes(ctx)
			if s.Nodes == nil {
				s.Nodes = []NodeState{}
			}
		})
	}
	if c.cfg.Primary != nil {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
			s.XID, s.Slots = probeCatalog(ctx, c.cfg.Primary)
		})
	}
	if c.cfg.Redis != nil {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
			if err := c.cfg.Redis.Ping(ctx); err != nil {
				s.Redis = &RedisState{Error: err.Error()}
			} else {
				s.Redis = &RedisState{Up: true}
			}
		})
	}
	if c.cfg.Relay != nil {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			defer cancel()
			lag, err := c.cfg.Relay.RelayLag(ctx)
			if err != nil {
				s.Relay = &RelayState{Error: err.Error()}
			} else {
				s.Relay = &RelayState{Lag: lag}
			}
		})
	}
	wg.Wait()

	now := c.cfg.Now()
	s.At = now
	c.mu.Lock()
	defer c.mu.Unlock()
	var window time.Duration
	if !c.prevAt.IsZero() {
		window = now.Sub(c.prevAt)
	}
	c.prevAt = now
	for _, ps := range c.cfg.Pools {
		cur := ps.Stat()
		prev := c.prevPools[ps.Name]
		c.prevPools[ps.Name] = cur
		st := PoolState{
			Name:           ps.Name,
			Acquired:       cur.Acquired,
			Max:            cur.Max,
			Acquires:       cur.AcquireCount - prev.AcquireCount,
			FailedAcquires: cur.CanceledAcquireCount - prev.CanceledAcquireCount,
			Window:         window,
		}
		if st.Acquires > 0 {
			st.MeanAcquireWait = (cur.AcquireDuration - prev.AcquireDuration) / time.Duration(st.Acquires)
		}
		s.Pools = append(s.Pools, st)
	}
	if c.cfg.Queries != nil {
		cur := c.cfg.Queries()
		var prev QueryCounters
		if c.prevQ != nil {
			prev = *c.prevQ
		}
		c.prevQ = &cur
		q := &QueryState{Count: cur.Count - prev.Count, Slow: cur.Slow - prev.Slow, Window: window}
		if q.Count > 0 {
			q.Mean = (cur.Total - prev.Total) / time.Duration(q.Count)
		}
		s.Queries = q
	}
	return s
}

// probeCatalog reads the oldest XID age and the replication slots. On error
// (or on a standby, where slots are the standby's own and XID ages lag) it
// returns nils: unmeasured.
func probeCatalog(ctx context.Context, db Querier) (*XIDState, []SlotState) {
	var (
		inRecovery bool
		x          XIDState
		slots      []SlotState
	)
	// One statement: the slots are aggregated into arrays so a plain QueryRow
	// suffices (Querier has no Query).
	var names []string
	var active []bool
	var retained []int64
	err := db.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		(SELECT datname FROM pg_database ORDER BY age(datfrozenxid) DESC LIMIT 1),
		(SELECT max(age(datfrozenxid))::bigint FROM pg_database),
		coalesce((SELECT array_agg(slot_name::text ORDER BY slot_name) FROM pg_replication_slots), '{}'),
		coalesce((SELECT array_agg(active ORDER BY slot_name) FROM pg_replication_slots), '{}'),
		coalesce((SELECT array_agg(CASE WHEN pg_is_in_recovery() OR restart_lsn IS NULL THEN 0
			ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint END ORDER BY slot_name)
			FROM pg_replication_slots), '{}')`).
		Scan(&inRecovery, &x.Database, &x.Age, &names, &active, &retained)
	if err != nil || inRecovery {
		return nil, nil
	}
	for i := range names {
		slots = append(slots, SlotState{Name: names[i], Active: active[i], RetainedBytes: retained[i]})
	}
	if slots == nil {
		slots = []SlotState{}
	}
	return &x, slots
}

func (c *Checker) registerMetrics() error {
	mp := c.cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	m := mp.Meter("github.com/hsdal/hsdal/dal/health")
	status, err := m.Int64ObservableGauge("hsdal.health.status",
		metric.WithDescription("Worst health status of the last check: 0 OK, 1 WARN, 2 CRITICAL."))
	if err != nil {
		return err
	}
	poolUtil, err := m.Float64ObservableGauge("hsdal.db.pool.utilization",
		metric.WithDescription("Connections in use divided by the pool's maximum."), metric.WithUnit("1"))
	if err != nil {
		return err
	}
	acqWait, err := m.Float64ObservableGauge("hsdal.db.pool.acquire_wait.mean",
		metric.WithDescription("Mean connection acquire wait since the previous check."), metric.WithUnit("s"))
	if err != nil {
		return err
	}
	lag, err := m.Float64ObservableGauge("hsdal.db.replica.lag",
		metric.WithDescription("Standby replication lag in time."), metric.WithUnit("s"))
	if err != nil {
		return err
	}
	lagBytes, err := m.Int64ObservableGauge("hsdal.db.replica.lag_bytes",
		metric.WithDescription("WAL the primary wrote that the standby has not replayed."), metric.WithUnit("By"))
	if err != nil {
		return err
	}
	up, err := m.Int64ObservableGauge("hsdal.db.node.up",
		metric.WithDescription("1 when the PostgreSQL node answered the last probe."))
	if err != nil {
		return err
	}
	relay, err := m.Float64ObservableGauge("hsdal.cache.relay.lag",
		metric.WithDescription("Invalidation relay lag."), metric.WithUnit("s"))
	if err != nil {
		return err
	}
	xid, err := m.Int64ObservableGauge("hsdal.db.xid.age",
		metric.WithDescription("Oldest unfrozen transaction ID age, age(datfrozenxid), across databases."))
	if err != nil {
		return err
	}
	slot, err := m.Int64ObservableGauge("hsdal.db.replication_slot.retained",
		metric.WithDescription("WAL retained by a replication slot."), metric.WithUnit("By"))
	if err != nil {
		return err
	}
	reg, err := m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		r, ok := c.Last()
		if !ok {
			return nil
		}
		o.ObserveInt64(status, int64(r.Status))
		s := r.Snapshot
		for _, n := range s.Nodes {
			a := metric.WithAttributes(attribute.String("node", n.Name), attribute.String("role", string(n.Role)))
			v := int64(0)
			if n.Reachable {
				v = 1
			}
			o.ObserveInt64(up, v, a)
			if n.Reachable && n.Role == RoleStandby {
				o.ObserveFloat64(lag, n.Lag.Seconds(), a)
				o.ObserveInt64(lagBytes, n.LagBytes, a)
			}
		}
		for _, p := range s.Pools {
			a := metric.WithAttributes(attribute.String("pool", p.Name))
			o.ObserveFloat64(poolUtil, p.Utilisation(), a)
			o.ObserveFloat64(acqWait, p.MeanAcquireWait.Seconds(), a)
		}
		if s.Relay != nil && s.Relay.Error == "" {
			o.ObserveFloat64(relay, s.Relay.Lag.Seconds())
		}
		if s.XID != nil {
			o.ObserveInt64(xid, s.XID.Age, metric.WithAttributes(attribute.String("database", s.XID.Database)))
		}
		for _, sl := range s.Slots {
			o.ObserveInt64(slot, sl.RetainedBytes, metric.WithAttributes(attribute.String("slot", sl.Name)))
		}
		return nil
	}, status, poolUtil, acqWait, lag, lagBytes, up, relay, xid, slot)
	if err != nil {
		return err
	}
	c.reg = reg
	return nil
}
