package router

// White-box hooks for the pure-logic unit tests in package router_test:
// routing decisions, lag computation, error classification and the retry
// budget, driven with fake node states and an injected clock. No I/O.

import (
	"errors"
	"fmt"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// NewFakeRouter returns a router over named nodes that have no pools: only
// FakeProbe*, RouteFor and Status may be used on it.
func NewFakeRouter(cfg Config, names ...string) (*Router, error) {
	cfg.PrimaryDSN = "postgres://fake"
	cfg.MeterProvider = metricnoop.NewMeterProvider()
	cfg.TracerProvider = tracenoop.NewTracerProvider()
	cfg, err := cfg.withDefaults()
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
	for i, name := range names {
		n := &node{idx: i, name: name, kick: make(chan struct{}, 1)}
		n.state.Store(&nodeState{})
		n.newBreaker(cfg.Breaker, nil)
		r.nodes = append(r.nodes, n)
	}
	if r.tel, err = newTelemetry(r); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Router) fakeNode(name string) *node {
	for _, n := range r.nodes {
		if n.name == name {
			return n
		}
	}
	panic("no fake node " + name)
}

// FakeProbe publishes a successful probe of name at the router's Now.
func (r *Router) FakeProbe(name string, standby bool, lsn LSN, timeline uint32) {
	r.publish(r.fakeNode(name), probeResult{standby: standby, lsn: lsn, timeline: timeline}, nil)
}

// FakeProbeFail publishes a failed probe of name.
func (r *Router) FakeProbeFail(name string, err error) {
	r.publish(r.fakeNode(name), probeResult{}, err)
}

// FakeInflight sets name's in-flight count.
func (r *Router) FakeInflight(name string, v int64) { r.fakeNode(name).inflight.Store(v) }

// FakeTrip reports enough connectivity failures to open name's breaker.
func (r *Router) FakeTrip(name string) {
	n := r.fakeNode(name)
	for range r.cfg.Breaker.Failures {
		t, ok := n.admit()
		if !ok {
			return
		}
		n.report(t, classConn)
	}
}

// Route is one routing decision.
type Route struct {
	Node    string
	Primary bool
	Reason  string
	Recheck bool
	Pos     LSN
}

// RouteFor routes a read of consistency c in a session holding session,
// excluding the named nodes.
func (r *Router) RouteFor(c Consistency, session Token, exclude ...string) (Route, error) {
	var mask uint64
	for _, name := range exclude {
		mask |= 1 << r.fakeNode(name).idx
	}
	d, err := r.route(r.requirementFor(c, session), mask, r.cfg.Now())
	if err != nil {
		return Route{}, err
	}
	return Route{Node: d.n.name, Primary: d.primary, Reason: d.reason.String(), Recheck: d.recheck, Pos: d.lsn}, nil
}

// Classify exposes the error classification: "ok", "sql_error", "canceled",
// "unavailable", "recovery_conflict", "read_only".
func Classify(err error, standby bool) string { return classify(err, standby).String() }

// ErrAcquireTimeout is the router's own acquire deadline.
var ErrAcquireTimeout = errAcquireTimeout

// BreakerCounts reports how an error would be counted by a breaker:
// "failure", "excluded" or "success".
func BreakerCounts(err error, standby bool) string {
	switch o := breakerOutcome(classify(err, standby)); {
	case errors.Is(o, errBreakerFailure):
		return "failure"
	case errors.Is(o, errBreakerExcluded):
		return "excluded"
	case o == nil:
		return "success"
	default:
		return fmt.Sprint(o)
	}
}

// RetryBudget wraps the retry budget.
type RetryBudget struct{ b *retryBudget }

func NewRetryBudget(ratio, minPerSec float64, now func() time.Time) RetryBudget {
	return RetryBudget{newRetryBudget(ratio, minPerSec, now)}
}
func (b RetryBudget) Deposit()       { b.b.deposit() }
func (b RetryBudget) Withdraw() bool { return b.b.withdraw() }

// LagHistory wraps the primary position history.
type LagHistory struct{ h *lsnHistory }

func NewLagHistory(size int) LagHistory                 { return LagHistory{newLSNHistory(size)} }
func (h LagHistory) Add(l LSN, t time.Time)             { h.h.add(l, t) }
func (h LagHistory) Reset()                             { h.h.reset() }
func (h LagHistory) CaughtUpAt(r LSN) (time.Time, bool) { return h.h.caughtUpAt(r) }

// Lag computes a replica's lag from its replay position r probed at t:
// bytes behind, seconds behind at probe time, and whether the time bound is
// known; stale is its staleness bound at now.
func (h LagHistory) Lag(r LSN, t, now time.Time) (bytes uint64, seconds time.Duration, known bool, stale time.Duration) {
	l := computeLag(h.h, r, t)
	s, _ := l.staleness(now)
	return l.bytes, l.seconds, l.known, s
}
