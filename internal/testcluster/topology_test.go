package testcluster_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/internal/testcluster"
)

// TestPromoteAndRejoin fails over from pg0 to pg1: the old primary is
// killed, pg1 promoted, pg2 and the old primary rejoin as standbys of pg1 and
// replicate new writes.
func TestPromoteAndRejoin(t *testing.T) {
	ctx := ctxT(t)
	c := testcluster.StartTB(t, testcluster.Options{NoRedis: true})
	writeRow(t, ctx, c, "failover", 1)
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.KillNode(ctx, "pg0"); err != nil {
		t.Fatal(err)
	}
	if err := c.Promote(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	if got, want := c.PrimaryDSN(), c.Node("pg1").DSN(); got != want {
		t.Fatalf("PrimaryDSN after promote = %s, want %s", got, want)
	}
	if r := c.Node("pg0").Role(); r != testcluster.RoleFormer {
		t.Errorf("old primary role = %s, want %s", r, testcluster.RoleFormer)
	}
	if got := c.ReplicaDSNs(); len(got) != 1 || got[0] != c.Node("pg2").DSN() {
		t.Errorf("ReplicaDSNs after promote = %v, want only pg2", got)
	}
	var inRecovery bool
	if err := mustConn(t, ctx, c.Node("pg1").DSN()).QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("pg1 in recovery after Promote: %v %v", inRecovery, err)
	}
	// The promoted node accepts writes and still has the old data.
	writeRow(t, ctx, c, "failover", 2)
	if n, err := countRows(ctx, c.PrimaryDSN(), "failover", 1); err != nil || n != 1 {
		t.Fatalf("row 1 lost by failover: %d %v", n, err)
	}

	// Give the old primary a divergent history (a write only it has), so
	// Rejoin has to rewind it.
	if err := c.StartNode(ctx, "pg0"); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, c.Node("pg0").DSN(), "INSERT INTO failover (id) VALUES (100)")

	for _, name := range []string{"pg2", "pg0"} {
		if err := c.Rejoin(ctx, name, "pg1"); err != nil {
			t.Fatalf("Rejoin(%s): %v", name, err)
		}
		if r := c.Node(name).Role(); r != testcluster.RoleStandby {
			t.Errorf("%s role = %s, want standby", name, r)
		}
	}
	if got := c.ReplicaDSNs(); len(got) != 2 {
		t.Errorf("ReplicaDSNs after rejoin = %v, want pg0 and pg2", got)
	}
	writeRow(t, ctx, c, "failover", 3)
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"pg0", "pg2"} {
		dsn := c.Node(name).DSN()
		if n, err := countRows(ctx, dsn, "failover", 3); err != nil || n != 1 {
			t.Errorf("%s: new row not replicated: %d %v", name, n, err)
		}
		if n, err := countRows(ctx, dsn, "failover", 100); err != nil || n != 0 {
			t.Errorf("%s: divergent row of the old primary survived rejoin: %d %v", name, n, err)
		}
	}
	// Slots of the new primary back both standbys.
	var active int
	if err := mustConn(t, ctx, c.Node("pg1").SuperDSN()).QueryRow(ctx,
		`SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name IN ('pg0', 'pg2')`).Scan(&active); err != nil || active != 2 {
		t.Errorf("active slots on pg1 = %d (%v), want 2", active, err)
	}
}

// TestSyncQuorum checks synchronous quorum replication: commits wait while
// no standby is connected and complete as soon as one is back.
func TestSyncQuorum(t *testing.T) {
	ctx := ctxT(t)
	c := testcluster.StartTB(t, testcluster.Options{Sync: true, NoRedis: true})
	primary := mustConn(t, ctx, c.Node("pg0").SuperDSN())
	var names string
	if err := primary.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&names); err != nil {
		t.Fatal(err)
	}
	if names != "ANY 1 (pg0, pg1, pg2)" {
		t.Errorf("synchronous_standby_names = %q", names)
	}
	writeRow(t, ctx, c, "sync_rows", 1)
	var quorum int
	if err := primary.QueryRow(ctx, `SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'`).Scan(&quorum); err != nil || quorum != 2 {
		t.Errorf("quorum standbys = %d (%v), want 2", quorum, err)
	}
	for _, n := range []string{"pg1", "pg2"} {
		if err := c.StopNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	committed := make(chan error, 1)
	go func() {
		conn, err := pgx.Connect(ctx, c.PrimaryDSN())
		if err != nil {
			committed <- err
			return
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, `INSERT INTO sync_rows (id) VALUES (2)`)
		committed <- err
	}()
	// The commit waits for a standby (wait event SyncRep) ...
	for waiting := 0; waiting == 0; {
		if err := primary.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-committed:
			t.Fatalf("commit returned without a standby: %v", err)
		case <-ctx.Done():
			t.Fatal("commit never waited for SyncRep")
		case <-time.After(20 * time.Millisecond):
		}
	}
	// ... and completes once one standby is back.
	if err := c.StartNode(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-committed:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("commit still waiting after a standby came back")
	}
	// synchronous_commit=on waits for the flush, not the replay: poll.
	waitVisible(t, ctx, c.Node("pg2").DSN(), "sync_rows", 2)
}

// TestStopLeavesNothing checks that Stop kills every server process
// (postmasters, their children, redis), removes the directory and is
// idempotent, and that the cluster refuses work afterwards.
func TestStopLeavesNothing(t *testing.T) {
	ctx := ctxT(t)
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	pids := c.PIDs()
	if len(pids) < 6 { // 2 postmasters with children, redis
		t.Fatalf("PIDs() = %v, want postmasters, their children and redis", pids)
	}
	for _, p := range pids {
		if !processAlive(p) {
			t.Fatalf("pid %d of a running cluster is not alive", p)
		}
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if processAlive(p) {
			t.Errorf("pid %d survived Stop", p)
		}
	}
	if _, err := os.Stat(c.Dir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir %s still exists after Stop: %v", c.Dir(), err)
	}
	if err := c.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := c.StopNode(ctx, "pg0"); !errors.Is(err, testcluster.ErrStopped) {
		t.Errorf("StopNode after Stop: %v, want ErrStopped", err)
	}
	if err := c.WaitReplicated(ctx); !errors.Is(err, testcluster.ErrStopped) {
		t.Errorf("WaitReplicated after Stop: %v, want ErrStopped", err)
	}
}

// TestDetachedAttach starts a detached cluster in a chosen directory, finds
// it again with Attach and stops it from there.
func TestDetachedAttach(t *testing.T) {
	ctx := ctxT(t)
	base, err := os.MkdirTemp("", "hsdal-attach-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil { // the postgres user must reach dir
		t.Fatal(err)
	}
	dir := base + "/cluster"
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: dir, Detached: true, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	pids := c.PIDs()

	if _, err := testcluster.Attach(base); !errors.Is(err, testcluster.ErrNoState) {
		t.Errorf("Attach(empty dir) = %v, want ErrNoState", err)
	}
	a, err := testcluster.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.PrimaryDSN() != c.PrimaryDSN() || a.RedisAddr() != c.RedisAddr() ||
		len(a.ReplicaDSNs()) != 1 || a.ReplicaDSNs()[0] != c.ReplicaDSNs()[0] {
		t.Fatalf("attached cluster differs: %s %v %s", a.PrimaryDSN(), a.ReplicaDSNs(), a.RedisAddr())
	}
	if !a.Node("pg1").Running() || !a.RedisRunning() {
		t.Fatal("attached cluster does not see its servers running")
	}
	// Fault controls work through the attached handle too.
	if err := a.StopNode(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	if err := a.StartNode(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	writeRow(t, ctx, a, "attached", 1)
	if err := a.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	pids = append(pids, a.PIDs()...)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, p := range pids {
		if processAlive(p) {
			t.Errorf("pid %d survived Stop of the attached cluster", p)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dir still exists: %v", err)
	}
}

// BenchmarkStart measures starting (and stopping) a primary + 2 standbys +
// Redis: the fixed cost every integration test package pays once.
func BenchmarkStart(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		c, err := testcluster.Start(context.Background(), testcluster.Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// TestServersDieWithTheirProcess kills (SIGKILL) a process that started a
// cluster: its servers must die too (parent-death signal), and the next
// Start removes the directory it left behind.
func TestServersDieWithTheirProcess(t *testing.T) {
	ctx := ctxT(t)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), orphanChildEnv+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("child: %v", err)
	}
	fields := strings.Fields(line)
	if len(fields) < 6 || fields[0] == "ERROR" {
		_ = cmd.Process.Kill()
		t.Fatalf("child reported %q", line)
	}
	dir := fields[0]
	var pids []int
	for _, f := range fields[1:] {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("bad pid %q", f)
		}
		pids = append(pids, p)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for _, p := range pids {
		for processAlive(p) {
			select {
			case <-ctx.Done():
				t.Fatalf("pid %d outlived the killed process that started it", p)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("expected the dead process's dir to remain until swept: %v", err)
	}
	c := testcluster.StartTB(t, testcluster.Options{Replicas: -1, NoRedis: true})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		_ = os.RemoveAll(dir)
		t.Errorf("Start did not sweep %s: %v", dir, err)
	}
	if len(c.Nodes()) != 1 || len(c.ReplicaDSNs()) != 0 || c.RedisAddr() != "" {
		t.Errorf("Replicas -1, NoRedis: nodes %d replicas %v redis %q", len(c.Nodes()), c.ReplicaDSNs(), c.RedisAddr())
	}
}
