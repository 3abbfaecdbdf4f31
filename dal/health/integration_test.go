package health_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// cluster is this package's local cluster: a primary, one hot standby and
// Redis, started once in TestMain.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dal/health tests need local PostgreSQL 15+ server binaries and redis-server "+
			"(apt-get install postgresql-15 redis-server): %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop local cluster: %v\n", err)
		}
	}()
	conn, err := pgx.Connect(ctx, c.PrimaryDSN())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_, err = conn.Exec(ctx, `CREATE TABLE health_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())`)
	_ = conn.Close(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cluster = c
	return m.Run()
}

func testCtx(tb testing.TB) context.Context { return testcluster.Context(tb, 2*time.Minute) }

func mustPool(tb testing.TB, dsn string, maxConns int32) *pgxpool.Pool {
	return testcluster.Pool(tb, dsn, maxConns)
}

func mustChecker(tb testing.TB, cfg health.CheckerConfig) *health.Checker {
	tb.Helper()
	c, err := health.NewChecker(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

func nodes(tb testing.TB) []health.Node {
	var out []health.Node
	for _, n := range cluster.Nodes() {
		out = append(out, health.Node{Name: n.Name, DB: mustPool(tb, n.DSN(), 2)})
	}
	return out
}

func check(r health.Report, name string) (health.Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return health.Check{}, false
}

func TestHealthyClusterIsOK(t *testing.T) {
	ctx := testCtx(t)
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	primary := mustPool(t, cluster.PrimaryDSN(), 4)
	rdb := redis.NewClient(&redis.Options{Addr: cluster.RedisAddr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reader := sdkmetric.NewManualReader()
	c := mustChecker(t, health.CheckerConfig{
		Nodes:         health.NewNodeProber(health.NodeProberConfig{Nodes: nodes(t)}),
		Primary:       primary,
		Pools:         []health.PoolSource{health.PgxPool("primary", primary)},
		Redis:         health.PingFunc(func(ctx context.Context) error { return rdb.Ping(ctx).Err() }),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	r := c.Check(ctx)
	if r.Status != health.OK {
		t.Fatalf("healthy cluster: %s", r)
	}
	if len(r.Snapshot.Nodes) != 2 || r.Snapshot.Nodes[0].Role != health.RolePrimary || r.Snapshot.Nodes[1].Role != health.RoleStandby {
		t.Errorf("nodes = %+v", r.Snapshot.Nodes)
	}
	if r.Snapshot.XID == nil || r.Snapshot.XID.Age <= 0 {
		t.Errorf("xid = %+v", r.Snapshot.XID)
	}
	if len(r.Snapshot.Slots) != 1 || !r.Snapshot.Slots[0].Active {
		t.Errorf("slots = %+v", r.Snapshot.Slots)
	}
	if _, ok := check(r, "redis"); !ok {
		t.Error("no redis check")
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			found[m.Name] = true
			if m.Name == "hsdal.health.status" {
				g := m.Data.(metricdata.Gauge[int64])
				if len(g.DataPoints) != 1 || g.DataPoints[0].Value != int64(health.OK) {
					t.Errorf("hsdal.health.status = %+v", g.DataPoints)
				}
			}
		}
	}
	for _, n := range []string{"hsdal.health.status", "hsdal.db.pool.utilization", "hsdal.db.replica.lag",
		"hsdal.db.replica.lag_bytes", "hsdal.db.node.up", "hsdal.db.xid.age", "hsdal.db.replication_slot.retained"} {
		if !found[n] {
			t.Errorf("metric %s not exported (have %v)", n, found)
		}
	}
}

// TestPausedReplayTurnsWarnThenCritical pauses WAL replay on the standby
// while the primary keeps committing: lag measured in time grows past the
// warn bound, then the critical bound; resuming replay brings it back to OK.
func TestPausedReplayTurnsWarnThenCritical(t *testing.T) {
	ctx := testCtx(t)
	primary := mustPool(t, cluster.PrimaryDSN(), 2)
	c := mustChecker(t, health.CheckerConfig{
		Nodes: health.NewNodeProber(health.NodeProberConfig{Nodes: nodes(t)}),
		Thresholds: health.Thresholds{
			ReplicaLagWarn: 200 * time.Millisecond, ReplicaLagCritical: 1500 * time.Millisecond,
		},
	})
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if r := c.Check(ctx); r.Status != health.OK {
		t.Fatalf("before pausing: %s", r)
	}
	if err := cluster.PauseReplay(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.ResumeReplay(context.Background(), "pg1") })

	seen := map[health.Status]bool{}
	var last health.Report
	poll(t, 30*time.Second, func() bool {
		if _, err := primary.Exec(ctx, `INSERT INTO health_probe DEFAULT VALUES`); err != nil {
			t.Fatal(err)
		}
		last = c.Check(ctx)
		if lc, ok := check(last, "node pg1 lag"); ok {
			seen[lc.Status] = true
		}
		return seen[health.Critical]
	})
	if !seen[health.Warn] {
		t.Errorf("lag went to CRITICAL without passing WARN")
	}
	if last.Status != health.Critical {
		t.Errorf("overall status %s, want CRITICAL: %s", last.Status, last)
	}
	if rc, ok := check(last, "node pg1 replay"); !ok || rc.Status != health.Warn || !strings.Contains(rc.Reason, "paused") {
		t.Errorf("paused replay not reported: %+v", rc)
	}
	lc, _ := check(last, "node pg1 lag")
	if !strings.Contains(lc.Reason, "critical above 1.5s") {
		t.Errorf("lag reason = %q", lc.Reason)
	}

	if err := cluster.ResumeReplay(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	poll(t, 30*time.Second, func() bool {
		last = c.Check(ctx)
		return last.Status == health.OK
	})
	if last.Status != health.OK {
		t.Errorf("after resuming: %s", last)
	}
}

func TestSaturatedPoolTurnsCritical(t *testing.T) {
	ctx := testCtx(t)
	pool := mustPool(t, cluster.PrimaryDSN(), 5)
	c := mustChecker(t, health.CheckerConfig{Pools: []health.PoolSource{health.PgxPool("primary", pool)}})

	var held []*pgxpool.Conn
	release := func() {
		for _, h := range held {
			h.Release()
		}
		held = nil
	}
	t.Cleanup(release)
	acquire := func(n int) {
		for range n {
			conn, err := pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, conn)
		}
	}

	acquire(3) // 60%
	if r := c.Check(ctx); r.Status != health.OK {
		t.Fatalf("60%% utilisation: %s", r)
	}
	acquire(1) // 80%: not above the warn bound
	r := c.Check(ctx)
	if uc, _ := check(r, "pool primary utilisation"); uc.Status != health.OK {
		t.Errorf("80%%: %+v", uc)
	}
	acquire(1) // 100%
	r = c.Check(ctx)
	if uc, _ := check(r, "pool primary utilisation"); uc.Status != health.Critical || !strings.Contains(uc.Reason, "5 of 5") {
		t.Errorf("100%%: %+v", uc)
	}
	if r.Status != health.Critical {
		t.Errorf("saturated pool: %s", r)
	}

	// An acquire that gives up waiting is a failure, critical on its own.
	actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err := pool.Acquire(actx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on a full pool: %v", err)
	}
	release()
	r = c.Check(ctx)
	if fc, _ := check(r, "pool primary acquire failures"); fc.Status != health.Critical {
		t.Errorf("failed acquire: %+v", fc)
	}
	if uc, _ := check(r, "pool primary utilisation"); uc.Status != health.OK {
		t.Errorf("released: %+v", uc)
	}
	// The failure is in the past window only.
	if r = c.Check(ctx); r.Status != health.OK {
		t.Errorf("next window: %s", r)
	}
}

func TestRedisDownWarns(t *testing.T) {
	ctx := testCtx(t)
	rdb := redis.NewClient(&redis.Options{Addr: cluster.RedisAddr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rdb.Close() })
	c := mustChecker(t, health.CheckerConfig{
		Redis: health.PingFunc(func(ctx context.Context) error { return rdb.Ping(ctx).Err() }),
	})
	if r := c.Check(ctx); r.Status != health.OK {
		t.Fatalf("redis up: %s", r)
	}
	if err := cluster.StopRedis(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.StartRedis(context.Background()) })
	r := c.Check(ctx)
	if rc, _ := check(r, "redis"); rc.Status != health.Warn || r.Status != health.Warn {
		t.Errorf("redis down: %s", r)
	}
	if err := cluster.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() bool { return c.Check(ctx).Status == health.OK })
}

func TestUnreachableStandbyWarns(t *testing.T) {
	ctx := testCtx(t)
	c := mustChecker(t, health.CheckerConfig{
		Nodes: health.NewNodeProber(health.NodeProberConfig{Nodes: append(nodes(t),
			health.Node{Name: "nowhere", DB: mustLazyPool(t, "postgres://hsdal:hsdal@127.0.0.1:1/hsdal?sslmode=disable&connect_timeout=1")})}),
	})
	r := c.Check(ctx)
	nc, ok := check(r, "node nowhere reachable")
	if !ok || nc.Status != health.Warn {
		t.Fatalf("unreachable node: %s", r)
	}
	if strings.Contains(nc.Reason, "hsdal:hsdal") {
		t.Errorf("reason leaks the password: %q", nc.Reason)
	}
}

func mustLazyPool(tb testing.TB, dsn string) *pgxpool.Pool {
	tb.Helper()
	p, err := pgxpool.New(context.Background(), dsn) // connects lazily
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}

// poll calls f every 50ms until it returns true or the deadline passes.
func poll(tb testing.TB, within time.Duration, f func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !f() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not reached within %s", within)
		}
		<-tick.C
	}
}
