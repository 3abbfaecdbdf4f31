package dal

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/router"
)

// Health samples the DAL's view of the cluster — every node's reachability,
// role and lag as the router measures them, each node pool's utilisation and
// acquire wait, the mean and slow statement counts since the previous call,
// transaction-ID age and replication slots on the primary — and evaluates it
// against Config.HealthThresholds (the maintenance plan's bounds by default)
// into OK, WARN or CRITICAL with reasons. Windowed figures are deltas since
// the previous call. Safe for concurrent use; it never fails: what cannot be
// measured is reported as such.
func (d *DAL) Health(ctx context.Context) health.Report {
	return d.health.Check(ctx)
}

func newHealthChecker(rt *router.Router, cfg Config, queries func() health.QueryCounters, ch cacheHealth) (*health.Checker, error) {
	hc := health.CheckerConfig{
		Nodes:         routerNodes{rt},
		Primary:       primaryQuerier{rt},
		Queries:       queries,
		Thresholds:    cfg.HealthThresholds,
		MeterProvider: cfg.Router.MeterProvider,
		Redis:         ch.redis,
		Relay:         ch.relay,
	}
	for _, n := range rt.Status().Nodes {
		name := n.Name
		hc.Pools = append(hc.Pools, health.PoolSource{Name: name, Stat: func() health.PoolCounters {
			for _, n := range rt.Status().Nodes {
				if n.Name == name {
					return health.PoolCounters{Acquired: n.Pool.Acquired, Max: n.Pool.Max, AcquireCount: n.Pool.AcquireCount,
						AcquireDuration: n.Pool.AcquireDuration, CanceledAcquireCount: n.Pool.CanceledAcquireCount}
				}
			}
			return health.PoolCounters{}
		}})
	}
	return health.NewChecker(hc)
}

// routerNodes reports nodes as the router's prober last saw them: no extra
// queries, and lag measured the same way routing decisions measure it.
type routerNodes struct{ rt *router.Router }

func (r routerNodes) Nodes(context.Context) []health.NodeState {
	st := r.rt.Status()
	out := make([]health.NodeState, 0, len(st.Nodes))
	for _, n := range st.Nodes {
		ns := health.NodeState{Name: n.Name, Reachable: n.Reachable, Error: n.Err}
		switch {
		case n.Standby:
			ns.Role = health.RoleStandby
			ns.LagBytes, ns.Lag, ns.LagLowerBound = int64(n.LagBytes), n.Lag, !n.LagKnown
		case n.Reachable:
			ns.Role = health.RolePrimary
		}
		out = append(out, ns)
	}
	return out
}

// primaryQuerier runs the health checker's catalog queries on the primary
// through the router.
type primaryQuerier struct{ rt *router.Router }

func (p primaryQuerier) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return routedRow{ctx: ctx, rt: p.rt, sql: sql, args: args}
}

// routedRow defers the query to Scan, which is when the destinations are
// known, so the whole query runs inside one router read.
type routedRow struct {
	ctx  context.Context
	rt   *router.Router
	sql  string
	args []any
}

func (r routedRow) Scan(dest ...any) error {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	_, err := r.rt.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
		return q.QueryRow(ctx, r.sql, r.args...).Scan(dest...)
	})
	return err
}
