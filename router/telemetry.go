package router

import (
	"context"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

const instrumentationName = "github.com/hsdal/hsdal/router"

// Metric names. All carry the prefix hsdal.router.
const (
	metricQueries       = "hsdal.router.queries"               // counter {node, role, op, outcome}
	metricDuration      = "hsdal.router.query.duration"        // histogram s {node, role, op}
	metricAcquire       = "hsdal.router.pool.acquire.duration" // histogram s {node}
	metricPoolConns     = "hsdal.router.pool.connections"      // gauge {node, state=idle|acquired|constructing|max}
	metricLagBytes      = "hsdal.router.replica.lag.bytes"     // gauge {node}
	metricLagSeconds    = "hsdal.router.replica.lag.seconds"   // gauge {node}
	metricBreaker       = "hsdal.router.breaker.state"         // gauge {node}: 0 closed, 1 half-open, 2 open
	metricRole          = "hsdal.router.node.role"             // gauge {node}: 0 down, 1 replica, 2 primary
	metricRetries       = "hsdal.router.retries"               // counter {reason}
	metricRetriesDenied = "hsdal.router.retries.denied"        // counter: retry budget exhausted
	metricFallbacks     = "hsdal.router.fallbacks"             // counter {reason}: reads sent to the primary (or least-lagged) instead of a fresh replica
	metricFailovers     = "hsdal.router.failovers"             // counter: primary changes followed
)

var outcomes = [...]errClass{classNone, classSQL, classCanceled, classConn, classConflict, classReadOnly}

// nodeTelemetry holds a node's precomputed attribute sets, so recording a
// measurement does not build attributes on the hot path.
type nodeTelemetry struct {
	// Option slices are built once: passing a prebuilt slice to a variadic
	// parameter does not allocate.
	count    [3][2][len(outcomes)][]metric.AddOption // [op][primary][outcome]
	duration [3][2][]metric.RecordOption
	acquire  []metric.RecordOption
	attr     attribute.KeyValue
}

type telemetry struct {
	tracer    trace.Tracer
	queries   metric.Int64Counter
	duration  metric.Float64Histogram
	acquire   metric.Float64Histogram
	retries   metric.Int64Counter
	denied    metric.Int64Counter
	fallbacks metric.Int64Counter
	failovers metric.Int64Counter
	reg       metric.Registration

	retryOpts    [classReadOnly + 1][]metric.AddOption
	fallbackOpts [len(reasonNames)][]metric.AddOption
	clientKind   []trace.SpanStartOption
}

func roleName(primary bool) string {
	if primary {
		return "primary"
	}
	return "replica"
}

func newTelemetry(r *Router) (*telemetry, error) {
	mp := r.cfg.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	tp := r.cfg.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	m := mp.Meter(instrumentationName)
	t := &telemetry{tracer: tp.Tracer(instrumentationName),
		clientKind: []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	t.queries, err = m.Int64Counter(metricQueries, metric.WithDescription("Queries (reads, read transactions, writes) by node, role, operation and outcome."))
	check(err)
	t.duration, err = m.Float64Histogram(metricDuration, metric.WithUnit("s"),
		metric.WithDescription("Time to run one attempt on a node, connection acquire included."),
		metric.WithExplicitBucketBoundaries(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
	check(err)
	t.acquire, err = m.Float64Histogram(metricAcquire, metric.WithUnit("s"),
		metric.WithDescription("Time waiting for a pooled connection."),
		metric.WithExplicitBucketBoundaries(0.00001, 0.0001, 0.001, 0.01, 0.1, 1, 5))
	check(err)
	t.retries, err = m.Int64Counter(metricRetries, metric.WithDescription("Read retries on another node, by cause."))
	check(err)
	t.denied, err = m.Int64Counter(metricRetriesDenied, metric.WithDescription("Retries refused by the retry budget."))
	check(err)
	t.fallbacks, err = m.Int64Counter(metricFallbacks, metric.WithDescription("Reads that did not get a fresh replica, by reason."))
	check(err)
	t.failovers, err = m.Int64Counter(metricFailovers, metric.WithDescription("Primary changes followed by the router."))
	check(err)
	conns, err := m.Int64ObservableGauge(metricPoolConns, metric.WithDescription("Pool connections per node by state."))
	check(err)
	lagB, err := m.Int64ObservableGauge(metricLagBytes, metric.WithUnit("By"), metric.WithDescription("Replica replay lag behind the primary's WAL position."))
	check(err)
	lagS, err := m.Float64ObservableGauge(metricLagSeconds, metric.WithUnit("s"), metric.WithDescription("How long ago the primary was at the replica's replay position."))
	check(err)
	br, err := m.Int64ObservableGauge(metricBreaker, metric.WithDescription("Breaker state: 0 closed, 1 half-open, 2 open."))
	check(err)
	role, err := m.Int64ObservableGauge(metricRole, metric.WithDescription("Node role: 0 unreachable, 1 replica, 2 primary."))
	check(err)
	if len(errs) > 0 {
		return nil, fmt.Errorf("router: metrics: %v", errs)
	}
	for c := range t.retryOpts {
		t.retryOpts[c] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", errClass(c).String())))}
	}
	for i := range t.fallbackOpts {
		t.fallbackOpts[i] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("reason", reason(i).String())))}
	}
	for _, n := range r.nodes {
		nt := &n.tel
		nt.attr = attribute.String("node", n.name)
		for op := range nt.count {
			for p := range nt.count[op] {
				role := roleName(p == 1)
				nt.duration[op][p] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(nt.attr,
					attribute.String("role", role), attribute.String("op", opNames[op])))}
				for o, cls := range outcomes {
					nt.count[op][p][o] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(nt.attr,
						attribute.String("role", role), attribute.String("op", opNames[op]),
						attribute.String("outcome", cls.String())))}
				}
			}
		}
		nt.acquire = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(nt.attr))}
	}
	t.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		top := r.topo.Load()
		for _, n := range r.nodes {
			node := metric.WithAttributes(n.tel.attr)
			s := n.pool.Stat()
			o.ObserveInt64(conns, int64(s.IdleConns()), metric.WithAttributes(n.tel.attr, attribute.String("state", "idle")))
			o.ObserveInt64(conns, int64(s.AcquiredConns()), metric.WithAttributes(n.tel.attr, attribute.String("state", "acquired")))
			o.ObserveInt64(conns, int64(s.ConstructingConns()), metric.WithAttributes(n.tel.attr, attribute.String("state", "constructing")))
			o.ObserveInt64(conns, int64(s.MaxConns()), metric.WithAttributes(n.tel.attr, attribute.String("state", "max")))
			var bs int64
			switch n.breaker.State() {
			case gobreaker.StateHalfOpen:
				bs = 1
			case gobreaker.StateOpen:
				bs = 2
			}
			o.ObserveInt64(br, bs, node)
			st := n.state.Load()
			var rl int64
			switch {
			case !st.reachable:
			case top.primary == n:
				rl = 2
			case st.standby:
				rl = 1
			}
			o.ObserveInt64(role, rl, node)
			if st.reachable && st.standby {
				o.ObserveInt64(lagB, int64(min(st.lag.bytes, 1<<62)), node)
				o.ObserveFloat64(lagS, st.lag.seconds.Seconds(), node)
			}
		}
		return nil
	}, conns, lagB, lagS, br, role)
	if err != nil {
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	return t, nil
}

func (t *telemetry) close() {
	if t.reg != nil {
		_ = t.reg.Unregister()
	}
}

func outcomeIndex(c errClass) int {
	for i, o := range outcomes {
		if o == c {
			return i
		}
	}
	return 1
}

func (t *telemetry) query(ctx context.Context, n *node, op readOp, primary bool, cls errClass, d time.Duration) {
	p := 0
	if primary {
		p = 1
	}
	t.queries.Add(ctx, 1, n.tel.count[op][p][outcomeIndex(cls)]...)
	t.duration.Record(ctx, d.Seconds(), n.tel.duration[op][p]...)
}

func (t *telemetry) acquired(ctx context.Context, n *node, d time.Duration) {
	t.acquire.Record(ctx, d.Seconds(), n.tel.acquire...)
}

func (t *telemetry) retry(ctx context.Context, cls errClass) {
	t.retries.Add(ctx, 1, t.retryOpts[cls]...)
}

func (t *telemetry) retryDenied(ctx context.Context) { t.denied.Add(ctx, 1) }

func (t *telemetry) fallback(ctx context.Context, why reason) {
	t.fallbacks.Add(ctx, 1, t.fallbackOpts[why]...)
}

func (t *telemetry) failover() { t.failovers.Add(context.Background(), 1) }

var spanNames = [...]string{opRead: "router.read", opReadTx: "router.read_tx", opWrite: "router.write"}

func (t *telemetry) startRead(ctx context.Context, op readOp, c Consistency) (context.Context, trace.Span) {
	ctx, sp := t.tracer.Start(ctx, spanNames[op], t.clientKind...)
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("hsdal.consistency", c.String()))
	}
	return ctx, sp
}

func (t *telemetry) endRead(ctx context.Context, sp trace.Span, op readOp, d decision, info ReadInfo, err error) {
	if d.n != nil && d.reason.isFallback() && d.reason != reasonReplicaBehind {
		t.fallback(ctx, d.reason)
	} else if d.reason == reasonLeastLagged {
		t.fallback(ctx, d.reason)
	}
	if !sp.IsRecording() {
		sp.End()
		return
	}
	if d.n != nil {
		sp.SetAttributes(
			attribute.String("db.system", "postgresql"),
			attribute.String("hsdal.node", d.n.name),
			attribute.String("hsdal.role", roleName(d.primary)),
			attribute.String("hsdal.route_reason", d.reason.String()),
			attribute.Int("hsdal.attempts", info.Attempts),
		)
		if err == nil {
			sp.SetAttributes(attribute.String("hsdal.pos", info.Pos.String()))
		}
	}
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}

func (t *telemetry) startWrite(ctx context.Context) (context.Context, trace.Span) {
	return t.tracer.Start(ctx, spanNames[opWrite], t.clientKind...)
}

func (t *telemetry) endWrite(_ context.Context, sp trace.Span, d decision, tok Token, err error) {
	if !sp.IsRecording() {
		sp.End()
		return
	}
	sp.SetAttributes(attribute.String("db.system", "postgresql"))
	if d.n != nil {
		sp.SetAttributes(attribute.String("hsdal.node", d.n.name), attribute.String("hsdal.role", "primary"))
	}
	if !tok.IsZero() {
		sp.SetAttributes(attribute.String("hsdal.token", tok.LSN.String()), attribute.Int64("hsdal.timeline", int64(tok.Timeline)))
	}
	if err != nil {
		sp.RecordError(err)
		sp.SetStatus(codes.Error, err.Error())
	}
	sp.End()
}
