package testcluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hsdal/hsdal/internal/testcluster"
)

// shared is the package's cluster (primary + 2 standbys + Redis). Tests that
// change its topology temporarily restore it before they return; tests that
// destroy topology start their own cluster.
var shared *testcluster.Cluster

// orphanChildEnv makes the test binary start a cluster, print its dir and
// PIDs, and wait to be killed (see TestServersDieWithTheirProcess).
const orphanChildEnv = "HSDAL_TESTCLUSTER_ORPHAN_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(orphanChildEnv) == "1" {
		c, err := testcluster.Start(context.Background(), testcluster.Options{Replicas: 1})
		if err != nil {
			fmt.Println("ERROR", err)
			os.Exit(1)
		}
		fmt.Println(c.Dir(), strings.Trim(fmt.Sprint(c.PIDs()), "[]"))
		_, _ = io.Copy(io.Discard, os.Stdin) // until the parent kills us
		os.Exit(0)
	}
	began := time.Now()
	c, err := testcluster.Start(context.Background(), testcluster.Options{
		Settings: map[string]string{"max_standby_streaming_delay": "150ms"},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "testcluster: cannot start the local cluster: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "testcluster: shared cluster (3 PostgreSQL nodes + Redis) started in %v\n",
		time.Since(began).Round(time.Millisecond))
	shared = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "testcluster: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustConn(t testing.TB, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func mustExec(t testing.TB, ctx context.Context, dsn, sql string, args ...any) {
	t.Helper()
	conn := mustConn(t, ctx, dsn)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

// countRows counts the rows of table with id on dsn.
func countRows(ctx context.Context, dsn, table string, id int) (int, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(ctx, "SELECT count(*) FROM "+table+" WHERE id = $1", id).Scan(&n)
	return n, err
}

// waitVisible polls dsn until the row is there or ctx ends.
func waitVisible(t testing.TB, ctx context.Context, dsn, table string, id int) {
	t.Helper()
	var last error
	for {
		n, err := countRows(ctx, dsn, table, id)
		if err == nil && n == 1 {
			return
		}
		last = err
		select {
		case <-ctx.Done():
			t.Fatalf("row %d of %s not visible on %s: %v (last error %v)", id, table, dsn, ctx.Err(), last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// writeRow creates table (if needed) on the primary and inserts id.
func writeRow(t testing.TB, ctx context.Context, c *testcluster.Cluster, table string, id int) {
	t.Helper()
	mustExec(t, ctx, c.PrimaryDSN(), "CREATE TABLE IF NOT EXISTS "+table+" (id int PRIMARY KEY)")
	mustExec(t, ctx, c.PrimaryDSN(), "INSERT INTO "+table+" (id) VALUES ($1)", id)
}

func TestTopology(t *testing.T) {
	ctx := ctxT(t)
	nodes := shared.Nodes()
	if len(nodes) != 3 || nodes[0].Name != "pg0" || nodes[1].Name != "pg1" || nodes[2].Name != "pg2" {
		t.Fatalf("nodes = %v, want pg0 pg1 pg2", nodes)
	}
	if got, want := shared.PrimaryDSN(), nodes[0].DSN(); got != want {
		t.Errorf("PrimaryDSN = %q, want %q", got, want)
	}
	if got := shared.ReplicaDSNs(); len(got) != 2 || got[0] != nodes[1].DSN() || got[1] != nodes[2].DSN() {
		t.Errorf("ReplicaDSNs = %v", got)
	}
	if !strings.HasPrefix(shared.RedisAddr(), "127.0.0.1:") {
		t.Errorf("RedisAddr = %q", shared.RedisAddr())
	}
	for _, n := range nodes {
		t.Run(n.Name, func(t *testing.T) {
			conn := mustConn(t, ctx, n.DSN())
			var user, db string
			var super, monitor, owner, inRecovery bool
			var delay string
			err := conn.QueryRow(ctx, `SELECT current_user, current_database(),
				(SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
				pg_has_role('pg_monitor', 'MEMBER'),
				(SELECT datdba = (SELECT oid FROM pg_roles WHERE rolname = 'hsdal') FROM pg_database WHERE datname = 'hsdal'),
				pg_is_in_recovery(), current_setting('max_standby_streaming_delay')`).
				Scan(&user, &db, &super, &monitor, &owner, &inRecovery, &delay)
			if err != nil {
				t.Fatal(err)
			}
			if user != "hsdal" || db != "hsdal" || super || !monitor || !owner {
				t.Errorf("user=%s db=%s super=%v pg_monitor=%v owner=%v; want hsdal/hsdal, not super, monitor, owner",
					user, db, super, monitor, owner)
			}
			if want := n.Name != "pg0"; inRecovery != want {
				t.Errorf("pg_is_in_recovery = %v, want %v", inRecovery, want)
			}
			if delay != "150ms" {
				t.Errorf("Options.Settings not applied: max_standby_streaming_delay = %s", delay)
			}
			sconn := mustConn(t, ctx, n.SuperDSN())
			if err := sconn.QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || !super {
				t.Errorf("SuperDSN is not superuser: %v %v", super, err)
			}
		})
	}
}

func TestReplicationSlotsAndAsync(t *testing.T) {
	ctx := ctxT(t)
	conn := mustConn(t, ctx, shared.Node("pg0").SuperDSN())
	rows, err := conn.Query(ctx, `SELECT s.slot_name, r.application_name, r.sync_state
		FROM pg_replication_slots s JOIN pg_stat_replication r ON r.pid = s.active_pid ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var slot, app, state string
		err := r.Scan(&slot, &app, &state)
		return slot + "/" + app + "/" + state, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "pg1/pg1/async pg2/pg2/async"; strings.Join(got, " ") != want {
		t.Errorf("slots/app/sync = %v, want %s", got, want)
	}
}

func TestReplicationRowVisibleOnAllReplicas(t *testing.T) {
	ctx := ctxT(t)
	writeRow(t, ctx, shared, "repl_visible", 1)
	if err := shared.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, dsn := range shared.ReplicaDSNs() {
		// After WaitReplicated the row must be there without polling.
		if n, err := countRows(ctx, dsn, "repl_visible", 1); err != nil || n != 1 {
			t.Errorf("replica %s: count = %d, err = %v; want 1", dsn, n, err)
		}
	}
}

func TestReplicasRejectWrites(t *testing.T) {
	ctx := ctxT(t)
	writeRow(t, ctx, shared, "repl_ro", 1)
	if err := shared.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, dsn := range shared.ReplicaDSNs() {
		conn := mustConn(t, ctx, dsn)
		for _, sql := range []string{
			"INSERT INTO repl_ro (id) VALUES (2)",
			"CREATE TABLE repl_ro2 (id int)",
		} {
			_, err := conn.Exec(ctx, sql)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "25006" {
				t.Errorf("%s on replica: err = %v, want SQLSTATE 25006 (read_only_sql_transaction)", sql, err)
			}
		}
	}
}

func TestStopAndStartNode(t *testing.T) {
	for i, name := range []string{"pg1", "pg0"} { // a standby, then the primary
		t.Run(name, func(t *testing.T) {
			ctx := ctxT(t)
			n := shared.Node(name)
			if err := shared.StopNode(ctx, name); err != nil {
				t.Fatal(err)
			}
			if n.Running() {
				t.Fatal("Running() = true after StopNode")
			}
			if _, err := pgx.Connect(ctx, n.DSN()); err == nil {
				t.Fatal("connected to a stopped node")
			}
			if err := shared.StopNode(ctx, name); err != nil {
				t.Fatalf("second StopNode: %v", err)
			}
			if err := shared.StartNode(ctx, name); err != nil {
				t.Fatal(err)
			}
			if !n.Running() {
				t.Fatal("Running() = false after StartNode")
			}
			// The restarted node serves and replication resumes in both cases.
			table := "stop_start_" + name
			writeRow(t, ctx, shared, table, i)
			if err := shared.WaitReplicated(ctx); err != nil {
				t.Fatal(err)
			}
			for _, dsn := range shared.ReplicaDSNs() {
				waitVisible(t, ctx, dsn, table, i)
			}
		})
	}
}

func TestKillNode(t *testing.T) {
	ctx := ctxT(t)
	n := shared.Node("pg2")
	var pid int
	if err := mustConn(t, ctx, n.SuperDSN()).QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		t.Fatal(err)
	}
	before := shared.PIDs()
	logBefore := len(readLog(t, n))
	if err := shared.KillNode(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Fatal("Running() = true after KillNode")
	}
	// The postmaster and every process it started (here: our backend) are gone.
	if processAlive(pid) {
		t.Errorf("backend %d survived KillNode", pid)
	}
	after := map[int]bool{}
	for _, p := range shared.PIDs() {
		after[p] = true
	}
	gone := 0
	for _, p := range before {
		if !after[p] && !processAlive(p) {
			gone++
		}
	}
	if gone == 0 {
		t.Error("no process disappeared after KillNode")
	}
	// Crash recovery on restart; the standby catches up again.
	if err := shared.StartNode(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	writeRow(t, ctx, shared, "after_kill", 1)
	if err := shared.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, ctx, n.DSN(), "after_kill", 1)
	if !strings.Contains(readLog(t, n)[logBefore:], "was interrupted while in recovery") {
		t.Error("log of restarted pg2 does not show crash recovery")
	}
}

func readLog(t testing.TB, n *testcluster.Node) string {
	t.Helper()
	b, err := os.ReadFile(shared.Dir() + "/" + n.Name + "/postgres.log")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

func TestPauseAndResumeReplay(t *testing.T) {
	ctx := ctxT(t)
	writeRow(t, ctx, shared, "pause_replay", 1)
	if err := shared.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if err := shared.PauseReplay(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, shared.PrimaryDSN(), "INSERT INTO pause_replay (id) VALUES (2)")
	// pg2 replays the row; once it has, pg1 has received the WAL too (same
	// primary, both streaming) but must not show it while paused.
	waitVisible(t, ctx, shared.Node("pg2").DSN(), "pause_replay", 2)
	var received bool
	var lsn string
	if err := mustConn(t, ctx, shared.PrimaryDSN()).QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	pg1 := mustConn(t, ctx, shared.Node("pg1").SuperDSN())
	for !received {
		if err := pg1.QueryRow(ctx, `SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn`, lsn).Scan(&received); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatal("pg1 never received the WAL")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if n, err := countRows(ctx, shared.Node("pg1").DSN(), "pause_replay", 2); err != nil || n != 0 {
		t.Fatalf("paused replica shows the new row: n=%d err=%v", n, err)
	}
	if err := shared.ResumeReplay(ctx, "pg1"); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, ctx, shared.Node("pg1").DSN(), "pause_replay", 2)
}

func TestFaultControlErrors(t *testing.T) {
	ctx := ctxT(t)
	tests := []struct {
		name string
		f    func() error
		want error
	}{
		{"stop unknown node", func() error { return shared.StopNode(ctx, "pg9") }, testcluster.ErrUnknownNode},
		{"promote primary", func() error { return shared.Promote(ctx, "pg0") }, testcluster.ErrRole},
		{"pause replay on primary", func() error { return shared.PauseReplay(ctx, "pg0") }, testcluster.ErrRole},
		{"rejoin to a standby", func() error { return shared.Rejoin(ctx, "pg1", "pg2") }, testcluster.ErrRole},
		{"rejoin primary to itself", func() error { return shared.Rejoin(ctx, "pg0", "pg0") }, testcluster.ErrRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.f(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if shared.Node("nope") != nil {
		t.Error("Node(nope) != nil")
	}
}

// redisCmd sends one inline command and returns the first reply line.
func redisCmd(ctx context.Context, addr, cmd string) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

func TestRedisStopStartKill(t *testing.T) {
	tests := []struct {
		name string
		down func(context.Context) error
	}{
		{"stop", shared.StopRedis},
		{"kill", shared.KillRedis},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := ctxT(t)
			addr := shared.RedisAddr()
			if r, err := redisCmd(ctx, addr, "SET k v"); err != nil || r != "+OK" {
				t.Fatalf("SET: %q %v", r, err)
			}
			if err := tt.down(ctx); err != nil {
				t.Fatal(err)
			}
			if shared.RedisRunning() {
				t.Fatal("RedisRunning() = true")
			}
			if _, err := redisCmd(ctx, addr, "PING"); err == nil {
				t.Fatal("redis still answers")
			} else if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Logf("dial error (expected refused): %v", err)
			}
			if err := shared.StartRedis(ctx); err != nil {
				t.Fatal(err)
			}
			if shared.RedisAddr() != addr {
				t.Fatalf("address changed: %s -> %s", addr, shared.RedisAddr())
			}
			// Nothing is persisted: the restarted server is empty.
			if r, err := redisCmd(ctx, addr, "EXISTS k"); err != nil || r != ":0" {
				t.Fatalf("EXISTS k after restart: %q %v, want :0", r, err)
			}
		})
	}
}

// TestRejoinRebuildsLostDataDir: when pg_rewind cannot work (here the data
// dir is gone after a crash), Rejoin falls back to a fresh base backup.
func TestRejoinRebuildsLostDataDir(t *testing.T) {
	ctx := ctxT(t)
	if err := shared.KillNode(ctx, "pg2"); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(shared.Dir() + "/pg2/data"); err != nil {
		t.Fatal(err)
	}
	if err := shared.Rejoin(ctx, "pg2", "pg0"); err != nil {
		t.Fatal(err)
	}
	if r := shared.Node("pg2").Role(); r != testcluster.RoleStandby || !shared.Node("pg2").Running() {
		t.Fatalf("pg2: role %s running %v, want a running standby", r, shared.Node("pg2").Running())
	}
	writeRow(t, ctx, shared, "rebuilt", 1)
	if err := shared.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitVisible(t, ctx, shared.Node("pg2").DSN(), "rebuilt", 1)
}
