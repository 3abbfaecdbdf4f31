package dal_test

import (
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/repos"
)

// openMigrated opens a DAL over a fresh migrated database on the shared
// cluster, with both replicas.
func openMigrated(t *testing.T, cfg dal.Config) *dal.DAL {
	t.Helper()
	ctx := testCtx(t)
	name, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	// The replicas must have replayed CREATE DATABASE before the router
	// connects to them.
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	cfg.PrimaryDSN = dsn
	for _, r := range cluster.ReplicaDSNs() {
		cfg.ReplicaDSNs = append(cfg.ReplicaDSNs, withDB(t, r, name))
	}
	d, err := dal.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

func TestHealthReportsReplicaLagFromTheRoutersView(t *testing.T) {
	ctx := testCtx(t)
	d := openMigrated(t, dal.Config{HealthThresholds: health.Thresholds{ReplicaLagWarn: 300 * time.Millisecond, ReplicaLagCritical: time.Hour}})
	if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: "@h0:example.org"}); err != nil {
		t.Fatal(err)
	}
	rep := d.Health(ctx)
	if rep.Status != health.OK {
		t.Fatalf("healthy cluster reported %v", rep)
	}
	if len(rep.Snapshot.Nodes) != 3 || len(rep.Snapshot.Pools) != 3 {
		t.Fatalf("want 3 nodes and 3 pools, got %d and %d", len(rep.Snapshot.Nodes), len(rep.Snapshot.Pools))
	}
	if rep.Snapshot.Queries == nil || rep.Snapshot.Queries.Count == 0 {
		t.Fatalf("the statement tracer counted nothing: %+v", rep.Snapshot.Queries)
	}

	// Pause replay on both replicas and keep writing: the router measures
	// the growing lag and Health turns WARN naming the lag.
	for _, n := range cluster.Nodes()[1:] {
		if err := cluster.PauseReplay(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.ResumeReplay(testCtx(t), n.Name) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for i := 1; ; i++ {
		name := "v" + strings.Repeat("x", i%7)
		if _, _, err := d.Users.UpdateProfile(ctx, "@h0:example.org", repos.ProfileUpdate{DisplayName: &name}); err != nil {
			t.Fatal(err)
		}
		rep = d.Health(ctx)
		if rep.Status == health.Warn && strings.Contains(rep.String(), "lag") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health never warned about replica lag: %v", rep)
		}
		time.Sleep(50 * time.Millisecond) // pace the writes; the deadline bounds the test
	}
	for _, n := range cluster.Nodes()[1:] {
		if err := cluster.ResumeReplay(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for d.Health(ctx).Status != health.OK {
		if time.Now().After(deadline) {
			t.Fatalf("Health stayed %v after replay resumed", d.Health(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
