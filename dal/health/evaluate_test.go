package health_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal/health"
)

func primary(name string) health.NodeState {
	return health.NodeState{Name: name, Reachable: true, Role: health.RolePrimary}
}

func standby(name string, lag time.Duration, bytes int64) health.NodeState {
	return health.NodeState{Name: name, Reachable: true, Role: health.RoleStandby, Lag: lag, LagBytes: bytes}
}

func pool(acquired, max int32) health.PoolState {
	return health.PoolState{Name: "primary", Acquired: acquired, Max: max}
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		name       string
		snap       health.Snapshot
		thr        health.Thresholds
		want       health.Status
		wantCheck  string // name of a check that must have wantStatus
		wantStatus health.Status
		wantReason string // substring of that check's reason
	}{
		{name: "empty snapshot is OK", want: health.OK},
		{
			name: "healthy cluster",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", 0, 0)},
				Pools: []health.PoolState{pool(3, 10)}},
			want: health.OK, wantCheck: "pool primary utilisation", wantStatus: health.OK, wantReason: "30%",
		},
		{
			name: "no nodes at all is critical",
			snap: health.Snapshot{Nodes: []health.NodeState{}},
			want: health.Critical, wantCheck: "primary", wantStatus: health.Critical, wantReason: "no reachable primary",
		},
		{
			name: "primary unreachable is critical",
			snap: health.Snapshot{Nodes: []health.NodeState{{Name: "pg0", Error: "connection refused"}, standby("pg1", 0, 0)}},
			want: health.Critical, wantCheck: "node pg0 reachable", wantStatus: health.Warn, wantReason: "connection refused",
		},
		{
			name: "two primaries is split brain",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), primary("pg1")}},
			want: health.Critical, wantCheck: "primary", wantStatus: health.Critical, wantReason: "split brain",
		},
		{
			name: "replica unreachable warns",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), {Name: "pg1"}}},
			want: health.Warn, wantCheck: "node pg1 reachable", wantStatus: health.Warn, wantReason: "unknown error",
		},
		{
			name: "replica lag just at warn bound is OK",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", time.Second, 0)}},
			want: health.OK,
		},
		{
			name: "replica lag past warn",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", 2*time.Second, 0)}},
			want: health.Warn, wantCheck: "node pg1 lag", wantStatus: health.Warn, wantReason: "warn above 1s",
		},
		{
			name: "replica lag past critical",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", 31*time.Second, 0)}},
			want: health.Critical, wantCheck: "node pg1 lag", wantStatus: health.Critical, wantReason: "critical above 30s",
		},
		{
			name: "replica lag with custom bounds",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", 300*time.Millisecond, 0)}},
			thr:  health.Thresholds{ReplicaLagWarn: 100 * time.Millisecond, ReplicaLagCritical: 250 * time.Millisecond},
			want: health.Critical, wantCheck: "node pg1 lag", wantStatus: health.Critical, wantReason: "300ms",
		},
		{
			name: "lower-bound lag says at least",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"),
				{Name: "pg1", Reachable: true, Role: health.RoleStandby, Lag: 2 * time.Second, LagLowerBound: true}}},
			want: health.Warn, wantCheck: "node pg1 lag", wantStatus: health.Warn, wantReason: "at least 2s",
		},
		{
			name: "replica lag rule disabled",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", time.Hour, 0)}},
			thr:  health.Thresholds{ReplicaLagWarn: -1, ReplicaLagCritical: -1},
			want: health.OK, wantCheck: "node pg1 lag", wantStatus: health.OK, wantReason: "rule disabled",
		},
		{
			name: "replica byte lag past critical",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"), standby("pg1", 0, 2<<30)}},
			want: health.Critical, wantCheck: "node pg1 lag bytes", wantStatus: health.Critical, wantReason: "2.0 GiB",
		},
		{
			name: "paused replay warns",
			snap: health.Snapshot{Nodes: []health.NodeState{primary("pg0"),
				{Name: "pg1", Reachable: true, Role: health.RoleStandby, ReplayPaused: true}}},
			want: health.Warn, wantCheck: "node pg1 replay", wantStatus: health.Warn, wantReason: "paused",
		},
		{
			name: "pool at 80% is OK",
			snap: health.Snapshot{Pools: []health.PoolState{pool(8, 10)}},
			want: health.OK,
		},
		{
			name: "pool above 80% warns",
			snap: health.Snapshot{Pools: []health.PoolState{pool(17, 20)}},
			want: health.Warn, wantCheck: "pool primary utilisation", wantStatus: health.Warn, wantReason: "85%",
		},
		{
			name: "pool above 90% is critical",
			snap: health.Snapshot{Pools: []health.PoolState{pool(10, 10)}},
			want: health.Critical, wantCheck: "pool primary utilisation", wantStatus: health.Critical, wantReason: "critical above 90%",
		},
		{
			name: "pool with no limit is OK",
			snap: health.Snapshot{Pools: []health.PoolState{pool(0, 0)}},
			want: health.OK,
		},
		{
			name: "acquire wait past warn",
			snap: health.Snapshot{Pools: []health.PoolState{{Name: "primary", Max: 10, Acquires: 4, MeanAcquireWait: 6 * time.Second}}},
			want: health.Warn, wantCheck: "pool primary acquire wait", wantStatus: health.Warn, wantReason: "warn above 5s",
		},
		{
			name: "acquire wait past critical",
			snap: health.Snapshot{Pools: []health.PoolState{{Name: "primary", Max: 10, Acquires: 4, MeanAcquireWait: 31 * time.Second}}},
			want: health.Critical, wantCheck: "pool primary acquire wait", wantStatus: health.Critical,
		},
		{
			name: "acquire failures are critical",
			snap: health.Snapshot{Pools: []health.PoolState{{Name: "primary", Max: 10, FailedAcquires: 1}}},
			want: health.Critical, wantCheck: "pool primary acquire failures", wantStatus: health.Critical, wantReason: "1 acquire(s)",
		},
		{
			name: "acquire failures tolerated by config",
			snap: health.Snapshot{Pools: []health.PoolState{{Name: "primary", Max: 10, FailedAcquires: 3}}},
			thr:  health.Thresholds{FailedAcquiresCritical: 5},
			want: health.OK,
		},
		{
			name: "mean query time past warn",
			snap: health.Snapshot{Queries: &health.QueryState{Count: 10, Mean: 150 * time.Millisecond}},
			want: health.Warn, wantCheck: "query time", wantStatus: health.Warn, wantReason: "150ms",
		},
		{
			name: "mean query time past critical",
			snap: health.Snapshot{Queries: &health.QueryState{Count: 10, Mean: 600 * time.Millisecond}},
			want: health.Critical, wantCheck: "query time", wantStatus: health.Critical,
		},
		{
			name: "no queries in window is OK",
			snap: health.Snapshot{Queries: &health.QueryState{}},
			want: health.OK,
		},
		{
			name: "slow queries per minute past warn",
			snap: health.Snapshot{Queries: &health.QueryState{Count: 100, Mean: time.Millisecond, Slow: 11, Window: time.Minute}},
			want: health.Warn, wantCheck: "slow queries", wantStatus: health.Warn, wantReason: "11.0 slow",
		},
		{
			name: "slow queries per minute past critical",
			snap: health.Snapshot{Queries: &health.QueryState{Count: 100, Mean: time.Millisecond, Slow: 26, Window: 30 * time.Second}},
			want: health.Critical, wantCheck: "slow queries", wantStatus: health.Critical, wantReason: "52.0 slow",
		},
		{
			name: "redis down warns",
			snap: health.Snapshot{Redis: &health.RedisState{Error: "dial tcp: connection refused"}},
			want: health.Warn, wantCheck: "redis", wantStatus: health.Warn, wantReason: "connection refused",
		},
		{
			name: "redis up",
			snap: health.Snapshot{Redis: &health.RedisState{Up: true}},
			want: health.OK, wantCheck: "redis", wantStatus: health.OK,
		},
		{
			name: "relay lag critical",
			snap: health.Snapshot{Relay: &health.RelayState{Lag: time.Minute}},
			want: health.Critical, wantCheck: "relay", wantStatus: health.Critical,
		},
		{
			name: "relay unmeasurable warns",
			snap: health.Snapshot{Relay: &health.RelayState{Error: "no outbox"}},
			want: health.Warn, wantCheck: "relay", wantStatus: health.Warn, wantReason: "no outbox",
		},
		{
			name: "xid age warn",
			snap: health.Snapshot{XID: &health.XIDState{Database: "hsdal", Age: 600_000_000}},
			want: health.Warn, wantCheck: "xid age", wantStatus: health.Warn, wantReason: `"hsdal"`,
		},
		{
			name: "xid age critical",
			snap: health.Snapshot{XID: &health.XIDState{Database: "hsdal", Age: 1_600_000_000}},
			want: health.Critical, wantCheck: "xid age", wantStatus: health.Critical,
		},
		{
			name: "inactive slot retaining WAL",
			snap: health.Snapshot{Slots: []health.SlotState{{Name: "pg1", RetainedBytes: 2 << 30}}},
			want: health.Warn, wantCheck: "slot pg1", wantStatus: health.Warn, wantReason: "inactive slot retains 2.0 GiB",
		},
		{
			name: "worst status wins",
			snap: health.Snapshot{
				Nodes: []health.NodeState{primary("pg0"), standby("pg1", 2*time.Second, 0)},
				Pools: []health.PoolState{pool(10, 10)},
				Redis: &health.RedisState{Up: true},
			},
			want: health.Critical,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := health.Evaluate(tc.snap, tc.thr)
			if r.Status != tc.want {
				t.Fatalf("status = %s, want %s; report: %s", r.Status, tc.want, r)
			}
			if tc.wantCheck == "" {
				return
			}
			for _, c := range r.Checks {
				if c.Name != tc.wantCheck {
					continue
				}
				if c.Status != tc.wantStatus {
					t.Errorf("check %q status = %s, want %s (%s)", c.Name, c.Status, tc.wantStatus, c.Reason)
				}
				if !strings.Contains(c.Reason, tc.wantReason) {
					t.Errorf("check %q reason = %q, want it to contain %q", c.Name, c.Reason, tc.wantReason)
				}
				return
			}
			t.Fatalf("no check named %q in %+v", tc.wantCheck, r.Checks)
		})
	}
}

func TestReportProblemsOrder(t *testing.T) {
	r := health.Evaluate(health.Snapshot{
		Nodes: []health.NodeState{primary("pg0"), standby("pg1", 2*time.Second, 0), {Name: "pg2"}},
		Pools: []health.PoolState{pool(10, 10)},
	}, health.Thresholds{})
	p := r.Problems()
	if len(p) != 3 {
		t.Fatalf("problems = %+v, want 3", p)
	}
	if p[0].Status != health.Critical || p[1].Status != health.Warn || p[2].Status != health.Warn {
		t.Errorf("problems not worst-first: %+v", p)
	}
	if s := r.String(); !strings.HasPrefix(s, "CRITICAL (CRITICAL pool primary utilisation") {
		t.Errorf("String() = %q", s)
	}
}

func TestStatusText(t *testing.T) {
	for _, s := range []health.Status{health.OK, health.Warn, health.Critical} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back health.Status
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("round trip of %s via %s = %s, %v", s, b, back, err)
		}
	}
	var s health.Status
	if err := s.UnmarshalText([]byte("bogus")); err == nil {
		t.Error("UnmarshalText(bogus) succeeded")
	}
}

func TestDefaultThresholds(t *testing.T) {
	d := health.DefaultThresholds()
	if d.PoolUtilWarn != 0.8 || d.PoolUtilCritical != 0.9 ||
		d.AcquireWaitWarn != 5*time.Second || d.AcquireWaitCritical != 30*time.Second ||
		d.MeanQueryWarn != 100*time.Millisecond || d.MeanQueryCritical != 500*time.Millisecond ||
		d.SlowPerMinuteWarn != 10 || d.SlowPerMinuteCritical != 50 {
		t.Errorf("defaults do not match the maintenance plan's alert table: %+v", d)
	}
}
