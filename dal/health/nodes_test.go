package health_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal/health"
	"github.com/jackc/pgx/v5"
)

// fakeNode answers NodeProber's probe query with settable values. It is a
// pure-logic fake: the real query is exercised by the integration tests.
type fakeNode struct {
	mu         sync.Mutex
	inRecovery bool
	lsn        int64
	paused     bool
	err        error
}

func (f *fakeNode) set(inRecovery bool, lsn int64, paused bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inRecovery, f.lsn, f.paused, f.err = inRecovery, lsn, paused, err
}

func (f *fakeNode) QueryRow(context.Context, string, ...any) pgx.Row {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeRow{f.inRecovery, f.lsn, f.paused, f.err}
}

type fakeRow struct {
	inRecovery bool
	lsn        int64
	paused     bool
	err        error
}

func (r fakeRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	*dest[0].(*bool) = r.inRecovery
	v := r.lsn
	*dest[1].(**int64) = &v
	*dest[2].(*bool) = r.paused
	return nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestNodeProberLag(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	p0, p1 := &fakeNode{}, &fakeNode{}
	pr := health.NewNodeProber(health.NodeProberConfig{
		Nodes: []health.Node{{Name: "pg0", DB: p0}, {Name: "pg1", DB: p1}},
		Now:   clk.Now, History: time.Minute,
	})
	ctx := context.Background()
	type step struct {
		advance      time.Duration
		primaryLSN   int64
		replayLSN    int64
		paused       bool
		wantLag      time.Duration
		wantBytes    int64
		wantLowerBnd bool
	}
	steps := []struct {
		name string
		step
	}{
		{"first probe, caught up", step{0, 1000, 1000, false, 0, 0, false}},
		{"idle primary stays at zero lag", step{10 * time.Second, 1000, 1000, false, 0, 0, false}},
		{"primary wrote, standby replays within the probe", step{time.Second, 1500, 1500, false, 0, 0, false}},
		{"paused: primary moves on", step{time.Second, 2000, 1500, true, 0, 500, false}},
		{"lag grows from the first unreplayed sample", step{3 * time.Second, 2600, 1500, true, 3 * time.Second, 1100, false}},
		{"still paused", step{2 * time.Second, 2600, 1500, true, 5 * time.Second, 1100, false}},
		{"partially replayed: lag from the next sample", step{time.Second, 2600, 2000, false, 3 * time.Second, 600, false}},
		{"caught up again", step{time.Second, 2600, 2600, false, 0, 0, false}},
		{"old history pruned, newest old sample kept", step{2 * time.Minute, 3000, 2600, false, 0, 400, false}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			clk.Advance(s.advance)
			p0.set(false, s.primaryLSN, false, nil)
			p1.set(true, s.replayLSN, s.paused, nil)
			nodes := pr.Nodes(ctx)
			if len(nodes) != 2 || nodes[0].Role != health.RolePrimary || nodes[1].Role != health.RoleStandby {
				t.Fatalf("nodes = %+v", nodes)
			}
			got := nodes[1]
			if got.Lag != s.wantLag || got.LagBytes != s.wantBytes || got.LagLowerBound != s.wantLowerBnd || got.ReplayPaused != s.paused {
				t.Errorf("standby = lag %s bytes %d lowerBound %v paused %v; want %s %d %v %v",
					got.Lag, got.LagBytes, got.LagLowerBound, got.ReplayPaused, s.wantLag, s.wantBytes, s.wantLowerBnd, s.paused)
			}
		})
	}
}

func TestNodeProberFirstProbeBehindIsLowerBound(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	p0, p1 := &fakeNode{}, &fakeNode{}
	p0.set(false, 5000, false, nil)
	p1.set(true, 1000, false, nil)
	pr := health.NewNodeProber(health.NodeProberConfig{
		Nodes: []health.Node{{Name: "pg0", DB: p0}, {Name: "pg1", DB: p1}}, Now: clk.Now,
	})
	nodes := pr.Nodes(context.Background())
	if !nodes[1].LagLowerBound || nodes[1].LagBytes != 4000 {
		t.Fatalf("standby = %+v, want a lower-bound lag of 4000 bytes", nodes[1])
	}
	clk.Advance(7 * time.Second)
	nodes = pr.Nodes(context.Background())
	if !nodes[1].LagLowerBound || nodes[1].Lag != 7*time.Second {
		t.Fatalf("standby = %+v, want lag at least 7s", nodes[1])
	}
}

func TestNodeProberUnreachableAndFailover(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	p0, p1 := &fakeNode{}, &fakeNode{}
	pr := health.NewNodeProber(health.NodeProberConfig{
		Nodes: []health.Node{{Name: "pg0", DB: p0}, {Name: "pg1", DB: p1}}, Now: clk.Now,
	})
	ctx := context.Background()
	p0.set(false, 9000, false, nil)
	p1.set(true, 9000, false, nil)
	pr.Nodes(ctx)

	// pg0 dies, pg1 is promoted on a new timeline; its LSN may be lower
	// than pg0's last one: history must restart, not report negative lag.
	p0.set(false, 0, false, errors.New("connection refused"))
	p1.set(false, 8000, false, nil)
	clk.Advance(time.Second)
	nodes := pr.Nodes(ctx)
	if nodes[0].Reachable || nodes[0].Error != "connection refused" {
		t.Errorf("pg0 = %+v, want unreachable with the error", nodes[0])
	}
	if nodes[1].Role != health.RolePrimary {
		t.Errorf("pg1 = %+v, want primary", nodes[1])
	}
	// pg0 rejoins as a standby of pg1, caught up.
	p0.set(true, 8000, false, nil)
	clk.Advance(time.Second)
	nodes = pr.Nodes(ctx)
	if nodes[0].Role != health.RoleStandby || nodes[0].Lag != 0 || nodes[0].LagBytes != 0 {
		t.Errorf("rejoined pg0 = %+v, want caught-up standby", nodes[0])
	}
	r := health.Evaluate(health.Snapshot{Nodes: nodes}, health.Thresholds{})
	if r.Status != health.OK {
		t.Errorf("after failover: %s", r)
	}
}

func TestNodeProberSplitBrainHasNoLag(t *testing.T) {
	p0, p1, p2 := &fakeNode{}, &fakeNode{}, &fakeNode{}
	p0.set(false, 100, false, nil)
	p1.set(false, 200, false, nil)
	p2.set(true, 50, false, nil)
	pr := health.NewNodeProber(health.NodeProberConfig{
		Nodes: []health.Node{{Name: "a", DB: p0}, {Name: "b", DB: p1}, {Name: "c", DB: p2}},
	})
	nodes := pr.Nodes(context.Background())
	if nodes[2].LagBytes != 0 {
		t.Errorf("standby lag measured against an ambiguous primary: %+v", nodes[2])
	}
	if r := health.Evaluate(health.Snapshot{Nodes: nodes}, health.Thresholds{}); r.Status != health.Critical {
		t.Errorf("split brain evaluated %s", r)
	}
}
