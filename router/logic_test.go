package router_test

// Pure-logic unit tests: fakes and an injected clock, no servers.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5/pgconn"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLagFromHistory(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type sample struct {
		lsn router.LSN
		ms  int
	}
	for _, tc := range []struct {
		name        string
		size        int
		samples     []sample
		replay      router.LSN
		probeMs     int
		nowMs       int
		wantBytes   uint64
		wantSeconds time.Duration
		wantKnown   bool
		wantStale   time.Duration
	}{
		{
			name:    "caught up on an idle primary stays fresh",
			samples: []sample{{100, 0}, {100, 100}, {100, 5000}, {100, 60000}},
			replay:  100, probeMs: 60000, nowMs: 60050,
			wantKnown: true, wantStale: 50 * time.Millisecond,
		},
		{
			name:    "behind: time since the primary was last at or before the replay position",
			samples: []sample{{100, 0}, {200, 100}, {300, 200}, {400, 300}},
			replay:  250, probeMs: 300, nowMs: 400,
			wantBytes: 150, wantSeconds: 200 * time.Millisecond, wantKnown: true, wantStale: 300 * time.Millisecond,
		},
		{
			name:    "exactly at a sample",
			samples: []sample{{100, 0}, {200, 100}, {300, 200}},
			replay:  200, probeMs: 200, nowMs: 200,
			wantBytes: 100, wantSeconds: 100 * time.Millisecond, wantKnown: true, wantStale: 100 * time.Millisecond,
		},
		{
			name:    "ahead of the primary's last sample",
			samples: []sample{{100, 0}, {200, 100}},
			replay:  250, probeMs: 150, nowMs: 150,
			wantKnown: true, wantStale: 50 * time.Millisecond,
		},
		{
			name:    "behind the whole history: unknown, lower bound reported",
			samples: []sample{{100, 1000}, {200, 1100}},
			replay:  50, probeMs: 1500, nowMs: 1500,
			wantBytes: 150, wantSeconds: 500 * time.Millisecond,
		},
		{
			name:    "ring wrapped: oldest samples forgotten",
			size:    3,
			samples: []sample{{100, 0}, {200, 100}, {300, 200}, {400, 300}, {500, 400}},
			replay:  250, probeMs: 400, nowMs: 400,
			wantBytes: 250, wantSeconds: 200 * time.Millisecond, // since the oldest kept sample
		},
		{
			name:    "ring wrapped: recent position still known",
			size:    3,
			samples: []sample{{100, 0}, {200, 100}, {300, 200}, {400, 300}, {500, 400}},
			replay:  450, probeMs: 400, nowMs: 450,
			wantBytes: 50, wantSeconds: 100 * time.Millisecond, wantKnown: true, wantStale: 150 * time.Millisecond,
		},
		{
			name:    "position going backwards resets (new primary)",
			samples: []sample{{500, 0}, {600, 100}, {100, 200}, {150, 300}},
			replay:  120, probeMs: 300, nowMs: 300,
			wantBytes: 30, wantSeconds: 100 * time.Millisecond, wantKnown: true, wantStale: 100 * time.Millisecond,
		},
		{
			name:   "no history",
			replay: 120, probeMs: 300, nowMs: 300,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size == 0 {
				size = 16
			}
			h := router.NewLagHistory(size)
			for _, s := range tc.samples {
				h.Add(s.lsn, at(s.ms))
			}
			bytes, secs, known, stale := h.Lag(tc.replay, at(tc.probeMs), at(tc.nowMs))
			if bytes != tc.wantBytes || secs != tc.wantSeconds || known != tc.wantKnown || stale != tc.wantStale {
				t.Fatalf("lag = %d bytes, %v, known=%v, stale %v; want %d, %v, %v, %v",
					bytes, secs, known, stale, tc.wantBytes, tc.wantSeconds, tc.wantKnown, tc.wantStale)
			}
		})
	}
}

// fakeCluster is a fake router over a primary p and replicas r1, r2, all
// probed once, caught up at LSN 1000 on timeline 1.
func fakeCluster(t *testing.T, cfg router.Config) (*router.Router, *fakeClock) {
	t.Helper()
	clk := newFakeClock()
	cfg.Now = clk.Now
	cfg.Logger = quietLogger(t)
	r, err := router.NewFakeRouter(cfg, "p", "r1", "r2")
	if err != nil {
		t.Fatal(err)
	}
	r.FakeProbe("p", false, 1000, 1)
	r.FakeProbe("r1", true, 1000, 1)
	r.FakeProbe("r2", true, 1000, 1)
	return r, clk
}

// realConnectError returns the error pgconn gives for a refused connection.
func realConnectError(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = pgconn.Connect(context.Background(), "postgres://u@"+addr+"/db?connect_timeout=5")
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("dialling a closed port: %v, want a ConnectError", err)
	}
	return err
}

func TestRouteDecisions(t *testing.T) {
	connectErr := realConnectError(t)
	tok := router.Token{LSN: 1500, Timeline: 1}
	for _, tc := range []struct {
		name    string
		cfg     router.Config
		setup   func(r *router.Router, clk *fakeClock)
		c       router.Consistency
		session router.Token
		want    router.Route // Node "r*" means any replica
		wantErr error
	}{
		{name: "strong goes to the primary", c: router.Strong(),
			want: router.Route{Node: "p", Primary: true, Reason: "strong", Pos: 1000}},
		{name: "default read goes to a fresh replica", c: router.Consistency{},
			want: router.Route{Node: "r*", Reason: "fresh_replica", Pos: 1000}},
		{name: "token covered by the probe", c: router.ReadYourWrites(router.Token{LSN: 1000, Timeline: 1}),
			want: router.Route{Node: "r*", Reason: "fresh_replica", Pos: 1000}},
		{name: "token newer than the probes: recheck on the replica", c: router.ReadYourWrites(tok),
			want: router.Route{Node: "r*", Reason: "replica_rechecked", Recheck: true, Pos: 1000}},
		{name: "session token applies to bounded staleness", c: router.BoundedStaleness(time.Hour), session: tok,
			want: router.Route{Node: "r*", Reason: "replica_rechecked", Recheck: true, Pos: 1000}},
		{name: "session token ignored by strong", c: router.Strong(), session: tok,
			want: router.Route{Node: "p", Primary: true, Reason: "strong", Pos: 1000}},
		{name: "token from an older timeline is strong",
			setup: func(r *router.Router, _ *fakeClock) {
				r.FakeProbe("p", false, 2000, 2)
				r.FakeProbe("r1", true, 2000, 2)
				r.FakeProbe("r2", true, 2000, 2)
			},
			c:    router.ReadYourWrites(router.Token{LSN: 1500, Timeline: 1}),
			want: router.Route{Node: "p", Primary: true, Reason: "token_other_timeline", Pos: 2000}},
		{name: "token from a newer timeline is strong", c: router.ReadYourWrites(router.Token{LSN: 10, Timeline: 9}),
			want: router.Route{Node: "p", Primary: true, Reason: "token_other_timeline", Pos: 1000}},
		{name: "replica on another timeline is not used",
			setup: func(r *router.Router, _ *fakeClock) { r.FakeProbe("r1", true, 5000, 7) },
			c:     router.Consistency{},
			want:  router.Route{Node: "r2", Reason: "fresh_replica", Pos: 1000}},
		{name: "unreachable replica is not used",
			setup: func(r *router.Router, _ *fakeClock) {
				r.FakeProbeFail("r2", connectErr)
			},
			c:    router.Consistency{},
			want: router.Route{Node: "r1", Reason: "fresh_replica", Pos: 1000}},
		{name: "one slow probe does not drop a replica, two do",
			setup: func(r *router.Router, _ *fakeClock) {
				r.FakeProbeFail("r1", context.DeadlineExceeded)
				r.FakeProbeFail("r2", context.DeadlineExceeded)
				r.FakeProbeFail("r2", context.DeadlineExceeded)
			},
			c:    router.Consistency{},
			want: router.Route{Node: "r1", Reason: "fresh_replica", Pos: 1000}},
		{name: "open breaker skips the replica",
			setup: func(r *router.Router, _ *fakeClock) { r.FakeTrip("r1") },
			c:     router.Consistency{},
			want:  router.Route{Node: "r2", Reason: "fresh_replica", Pos: 1000}},
		{name: "all replicas down: primary",
			setup: func(r *router.Router, _ *fakeClock) { r.FakeTrip("r1"); r.FakeTrip("r2") },
			c:     router.Consistency{},
			want:  router.Route{Node: "p", Primary: true, Reason: "replicas_down", Pos: 1000}},
		{name: "all replicas down, policy error",
			cfg:     router.Config{ReplicasDownPolicy: router.FallbackError},
			setup:   func(r *router.Router, _ *fakeClock) { r.FakeTrip("r1"); r.FakeTrip("r2") },
			c:       router.Consistency{},
			wantErr: router.ErrUnavailable},
		{name: "stale replicas: primary by default",
			setup: staleReplicas,
			c:     router.BoundedStaleness(time.Second),
			want:  router.Route{Node: "p", Primary: true, Reason: "replicas_stale", Pos: 3000}},
		{name: "stale replicas: least lagged",
			cfg:   router.Config{StalePolicy: router.FallbackLeastLagged},
			setup: staleReplicas,
			c:     router.BoundedStaleness(time.Second),
			want:  router.Route{Node: "r2", Reason: "least_lagged_replica", Pos: 2000}},
		{name: "stale replicas: error",
			cfg:     router.Config{StalePolicy: router.FallbackError},
			setup:   staleReplicas,
			c:       router.BoundedStaleness(time.Second),
			wantErr: router.ErrUnavailable},
		{name: "a looser bound accepts the lagging replicas",
			setup: staleReplicas,
			c:     router.BoundedStaleness(time.Minute),
			want:  router.Route{Node: "r*", Reason: "fresh_replica"}},
		{name: "default bound from config",
			cfg:   router.Config{DefaultMaxStaleness: time.Minute},
			setup: staleReplicas,
			c:     router.Consistency{},
			want:  router.Route{Node: "r*", Reason: "fresh_replica"}},
		{name: "primary down, replicas stale: least lagged replica",
			setup: func(r *router.Router, clk *fakeClock) {
				staleReplicas(r, clk)
				r.FakeProbeFail("p", connectErr)
			},
			c:    router.Consistency{},
			want: router.Route{Node: "r2", Reason: "least_lagged_replica", Pos: 2000}},
		{name: "primary down: strong fails",
			setup:   func(r *router.Router, _ *fakeClock) { r.FakeProbeFail("p", connectErr) },
			c:       router.Strong(),
			wantErr: router.ErrUnavailable},
		{name: "primary breaker open: strong fails",
			setup:   func(r *router.Router, _ *fakeClock) { r.FakeTrip("p") },
			c:       router.Strong(),
			wantErr: router.ErrUnavailable},
		{name: "split brain: strong fails",
			setup:   func(r *router.Router, _ *fakeClock) { r.FakeProbe("r1", false, 1200, 2) },
			c:       router.Strong(),
			wantErr: router.ErrUnavailable},
		{name: "promoted replica becomes the primary",
			setup: func(r *router.Router, _ *fakeClock) {
				r.FakeProbeFail("p", connectErr)
				r.FakeProbe("r1", false, 1200, 2)
				r.FakeProbe("r2", true, 1200, 2)
			},
			c:    router.Strong(),
			want: router.Route{Node: "r1", Primary: true, Reason: "strong", Pos: 1200}},
		{name: "old primary back as a replica rejoins the read set",
			setup: func(r *router.Router, _ *fakeClock) {
				r.FakeProbe("r1", false, 1200, 2)
				r.FakeProbe("p", true, 1200, 2)
				r.FakeProbe("r2", true, 1100, 1) // still on the old timeline
				r.FakeProbe("r1", false, 1200, 2)
			},
			c:    router.Consistency{},
			want: router.Route{Node: "p", Reason: "fresh_replica", Pos: 1200}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, clk := fakeCluster(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(r, clk)
			}
			got, err := r.RouteFor(tc.c, tc.session)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, route %+v; want %v", err, got, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			if want.Node == "r*" && (got.Node == "r1" || got.Node == "r2") {
				want.Node = got.Node
				if want.Pos == 0 {
					want.Pos = got.Pos
				}
			}
			if got != want {
				t.Fatalf("route = %+v, want %+v", got, want)
			}
		})
	}
}

// staleReplicas moves the primary on for 10s of fake time while r1 stays
// at 1000 and r2 reaches 2000 after 3s.
func staleReplicas(r *router.Router, clk *fakeClock) {
	for i := range 100 {
		clk.Advance(100 * time.Millisecond)
		lsn := router.LSN(1000 + 20*(i+1))
		r.FakeProbe("p", false, lsn, 1)
		r.FakeProbe("r1", true, 1000, 1)
		r.FakeProbe("r2", true, min(lsn, 1600), 1)
	}
	// r2 caught up to 1600 at t=3s: 7s stale; r1 at 1000 at t=0: 10s stale.
	r.FakeProbe("r2", true, 2000, 1) // replay moved to 2000 (primary was there at 5s)
	r.FakeProbe("p", false, 3000, 1)
}

func TestPowerOfTwoChoicesAvoidsTheBusyReplica(t *testing.T) {
	clk := newFakeClock()
	r, err := router.NewFakeRouter(router.Config{Now: clk.Now, Logger: quietLogger(t)}, "p", "a", "b", "c")
	if err != nil {
		t.Fatal(err)
	}
	r.FakeProbe("p", false, 1000, 1)
	for _, n := range []string{"a", "b", "c"} {
		r.FakeProbe(n, true, 1000, 1)
	}
	r.FakeInflight("a", 50)
	r.FakeInflight("b", 3)
	r.FakeInflight("c", 3)
	counts := map[string]int{}
	for range 1000 {
		got, err := r.RouteFor(router.Consistency{}, router.Token{})
		if err != nil {
			t.Fatal(err)
		}
		counts[got.Node]++
	}
	if counts["a"] != 0 || counts["b"] == 0 || counts["c"] == 0 {
		t.Fatalf("choices %v: the busiest of three replicas must never win, the others must share", counts)
	}
	// Two replicas: the less busy one always wins.
	r.FakeTrip("c")
	for range 100 {
		if got, _ := r.RouteFor(router.Consistency{}, router.Token{}); got.Node != "b" {
			t.Fatalf("picked %s over the idler b", got.Node)
		}
	}
	// Excluded nodes (failed attempts) are not chosen.
	if got, _ := r.RouteFor(router.Consistency{}, router.Token{}, "b"); got.Node != "a" {
		t.Fatalf("with b excluded and c open, picked %s", got.Node)
	}
}

func TestClassify(t *testing.T) {
	connectErr := realConnectError(t)
	pg := func(code string) error { return fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code}) }
	for _, tc := range []struct {
		name      string
		err       error
		standby   bool
		class     string
		breaker   string
		retryable bool
	}{
		{"nil", nil, false, "ok", "success", false},
		{"unique violation", pg("23505"), false, "sql_error", "success", false},
		{"syntax error", pg("42601"), true, "sql_error", "success", false},
		{"connection failure", pg("08006"), false, "unavailable", "failure", true},
		{"admin shutdown", pg("57P01"), true, "unavailable", "failure", true},
		{"crash shutdown", pg("57P02"), true, "unavailable", "failure", true},
		{"cannot connect now", pg("57P03"), false, "unavailable", "failure", true},
		{"query canceled is not a conflict", pg("57014"), true, "sql_error", "success", false},
		{"recovery conflict on a standby", pg("40001"), true, "recovery_conflict", "success", true},
		{"serialization failure on the primary", pg("40001"), false, "sql_error", "success", true},
		{"deadlock / buffer-pin conflict", pg("40P01"), true, "recovery_conflict", "success", true},
		{"read-only transaction", pg("25006"), false, "read_only", "success", true},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, "unavailable", "failure", true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true, "unavailable", "failure", true},
		{"eof", fmt.Errorf("receive: %w", io.ErrUnexpectedEOF), true, "unavailable", "failure", true},
		{"connect error", connectErr, false, "unavailable", "failure", true},
		{"acquire timeout", fmt.Errorf("x: %w: %w", router.ErrAcquireTimeout, context.DeadlineExceeded), false, "unavailable", "failure", true},
		{"caller cancelled", fmt.Errorf("q: %w", context.Canceled), false, "canceled", "excluded", false},
		{"caller deadline", context.DeadlineExceeded, true, "canceled", "excluded", false},
		{"application error", errors.New("boom"), false, "sql_error", "success", false},
		{"unavailable sentinel", fmt.Errorf("w: %w", router.ErrUnavailable), false, "sql_error", "success", true},
		{"commit unknown is never retryable", fmt.Errorf("%w: %w", router.ErrCommitUnknown, io.EOF), false, "unavailable", "failure", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := router.Classify(tc.err, tc.standby); got != tc.class {
				t.Errorf("class = %s, want %s", got, tc.class)
			}
			if got := router.BreakerCounts(tc.err, tc.standby); got != tc.breaker {
				t.Errorf("breaker counts it as %s, want %s", got, tc.breaker)
			}
			if got := router.Retryable(tc.err); got != tc.retryable {
				t.Errorf("Retryable = %v, want %v", got, tc.retryable)
			}
		})
	}
}

func TestRetryBudget(t *testing.T) {
	clk := newFakeClock()
	b := router.NewRetryBudget(0.1, 10, clk.Now)
	take := func() int {
		n := 0
		for b.Withdraw() {
			n++
		}
		return n
	}
	if got := take(); got != 10 {
		t.Fatalf("initial allowance = %d retries, want the 1s floor of 10", got)
	}
	for range 200 {
		b.Deposit()
	}
	if got := take(); got != 20 {
		t.Fatalf("after 200 requests: %d retries, want 10%% = 20", got)
	}
	clk.Advance(500 * time.Millisecond)
	if got := take(); got != 5 {
		t.Fatalf("after 0.5s idle: %d retries, want the floor's 5", got)
	}
	for range 100000 {
		b.Deposit()
	}
	if got := take(); got != 100 {
		t.Fatalf("after a burst of requests: %d retries, want the cap of 100", got)
	}
	off := router.NewRetryBudget(-1, 10, clk.Now)
	off.Deposit()
	if off.Withdraw() {
		t.Fatal("negative ratio must disable retries")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]router.Config{
		"no DSN":           {},
		"bad DSN":          {PrimaryDSN: "postgres://a:b@host:notaport/db"},
		"negative probe":   {PrimaryDSN: "postgres://h/db", ProbeInterval: -1},
		"negative pool":    {PrimaryDSN: "postgres://h/db", Pool: router.PoolConfig{MaxConns: -1}},
		"unknown policy":   {PrimaryDSN: "postgres://h/db", StalePolicy: 9},
		"negative minimum": {PrimaryDSN: "postgres://h/db", MinRetriesPerSecond: -1},
	} {
		if r, err := router.New(ctx, cfg); err == nil {
			r.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestNewFailsWhenNoNodeAnswers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = router.New(ctx, router.Config{PrimaryDSN: "postgres://u:secret@" + addr + "/db", Logger: quietLogger(t)})
	if !errors.Is(err, router.ErrUnavailable) {
		t.Fatalf("New against a closed port: %v, want ErrUnavailable", err)
	}
	if err != nil && strings.Contains(err.Error(), "secret") {
		t.Fatalf("error leaks the password: %v", err)
	}
}

func TestSessions(t *testing.T) {
	seed := router.Token{LSN: 5, Timeline: 1}
	ctx := router.WithSession(context.Background(), seed)
	if got := router.SessionToken(ctx); got != seed {
		t.Fatalf("seeded session = %+v", got)
	}
	if inner := router.WithSession(ctx, router.Token{}); !router.SessionToken(inner).IsZero() {
		t.Fatal("WithSession must start a new session")
	}
	if got := router.SessionToken(context.Background()); !got.IsZero() {
		t.Fatalf("no session: %+v", got)
	}
}

// With every replica idle, reads stay on one replica instead of alternating
// at random (which wakes a cold backend on each read); load moves them on.
func TestIdleReplicasTieGoesToOneReplica(t *testing.T) {
	clk := newFakeClock()
	r, err := router.NewFakeRouter(router.Config{Now: clk.Now, Logger: quietLogger(t)}, "p", "a", "b")
	if err != nil {
		t.Fatal(err)
	}
	r.FakeProbe("p", false, 1000, 1)
	r.FakeProbe("a", true, 1000, 1)
	r.FakeProbe("b", true, 1000, 1)
	first, err := r.RouteFor(router.Consistency{}, router.Token{})
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		if got, _ := r.RouteFor(router.Consistency{}, router.Token{}); got.Node != first.Node {
			t.Fatalf("idle replicas: picked %s after %s", got.Node, first.Node)
		}
	}
	r.FakeInflight(first.Node, 1)
	if got, _ := r.RouteFor(router.Consistency{}, router.Token{}); got.Node == first.Node {
		t.Fatalf("one read in flight on %s, the idle replica must win", first.Node)
	}
}
