package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/dal/maint"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// cluster is this package's local cluster: primary, one standby, Redis.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cmd/hsdal tests need local PostgreSQL 15+ server binaries and redis-server "+
			"(apt-get install postgresql-15 redis-server): %v\n", err)
		return 1
	}
	defer func() { _ = c.Stop() }()
	cluster = c
	return m.Run()
}

// hsdal runs the command line in-process with the cluster in the
// environment and returns the exit status and outputs.
func hsdal(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	if env == nil {
		env = map[string]string{
			"HSDAL_PRIMARY_DSN":  cluster.PrimaryDSN(),
			"HSDAL_REPLICA_DSNS": strings.Join(cluster.ReplicaDSNs(), ","),
			"HSDAL_REDIS_ADDR":   cluster.RedisAddr(),
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	for _, s := range []string{out.String(), errOut.String()} {
		if strings.Contains(s, "hsdal:hsdal@") || strings.Contains(s, "password=hsdal") {
			t.Errorf("output shows a password:\n%s", s)
		}
	}
	return code, out.String(), errOut.String()
}

// The tests share the cluster and run in order: migrate first.
func TestCLI(t *testing.T) {
	t.Run("migrate", func(t *testing.T) {
		code, out, errOut := hsdal(t, nil, "migrate")
		if code != exitOK || !strings.Contains(out, "schema at version") {
			t.Fatalf("migrate: %d %q %q", code, out, errOut)
		}
		// Idempotent.
		if code, _, errOut := hsdal(t, nil, "migrate"); code != exitOK {
			t.Fatalf("second migrate: %d %q", code, errOut)
		}
	})
	t.Run("maint report text", func(t *testing.T) {
		code, out, errOut := hsdal(t, nil, "maint", "report", "--orphans")
		if code != exitOK {
			t.Fatalf("report: %d %q", code, errOut)
		}
		for _, want := range []string{"TABLES", "room_events", "INDEXES", "TRANSACTION ID WRAPAROUND", "REPLICATION SLOTS", "pg1", "ORPHANS"} {
			if !strings.Contains(out, want) {
				t.Errorf("report lacks %q:\n%s", want, out)
			}
		}
		t.Logf("hsdal maint report --orphans:\n%s", out)
	})
	t.Run("maint report json", func(t *testing.T) {
		code, out, errOut := hsdal(t, nil, "maint", "report", "--json")
		if code != exitOK {
			t.Fatalf("report: %d %q", code, errOut)
		}
		var rep maint.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Tables) == 0 {
			t.Fatalf("JSON report: %v\n%s", err, out)
		}
	})
	t.Run("maint run", func(t *testing.T) {
		code, out, errOut := hsdal(t, nil, "maint", "run", "--json", maint.JobExpiredTokens, maint.JobVacuum)
		if code != exitOK {
			t.Fatalf("run: %d %q", code, errOut)
		}
		var res []maint.Result
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res) != 2 || res[0].Outcome != maint.Done {
			t.Fatalf("results: %v\n%s", err, out)
		}
		code, out, _ = hsdal(t, nil, "maint", "run")
		if code != exitOK || !strings.Contains(out, "reindex: done") {
			t.Errorf("run all: %d\n%s", code, out)
		}
	})
	t.Run("maint run unknown job", func(t *testing.T) {
		code, _, errOut := hsdal(t, nil, "maint", "run", "defrag")
		if code != exitUsage || !strings.Contains(errOut, "unknown job") {
			t.Errorf("unknown job: %d %q", code, errOut)
		}
	})
	t.Run("maint run on a standby", func(t *testing.T) {
		code, _, errOut := hsdal(t, map[string]string{"HSDAL_PRIMARY_DSN": cluster.ReplicaDSNs()[0]}, "maint", "run", "vacuum")
		if code != exitFail || !strings.Contains(errOut, "hot standby") {
			t.Errorf("standby: %d %q", code, errOut)
		}
	})
	t.Run("no primary", func(t *testing.T) {
		code, _, errOut := hsdal(t, map[string]string{}, "maint", "report")
		if code != exitUsage || !strings.Contains(errOut, "HSDAL_PRIMARY_DSN") {
			t.Errorf("no primary: %d %q", code, errOut)
		}
	})
	t.Run("flags override env", func(t *testing.T) {
		code, _, errOut := hsdal(t, nil, "maint", "report",
			"--primary", "postgres://hsdal:hsdal@127.0.0.1:1/hsdal?sslmode=disable&connect_timeout=1")
		if code != exitFail || !strings.Contains(errOut, "127.0.0.1:1") {
			t.Errorf("unreachable primary from --primary: %d %q", code, errOut)
		}
	})
	t.Run("health ok", func(t *testing.T) {
		if err := cluster.WaitReplicated(context.Background()); err != nil {
			t.Fatal(err)
		}
		code, out, errOut := hsdal(t, nil, "health", "--window", "10ms")
		if code != exitOK || !strings.HasPrefix(out, "OK") || !strings.Contains(out, "redis") {
			t.Errorf("health: %d\n%s%s", code, out, errOut)
		}
		code, out, _ = hsdal(t, nil, "health", "--json", "--window", "0")
		var rep health.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Status != health.OK || code != exitOK {
			t.Errorf("health --json: %d %v\n%s", code, err, out)
		}
	})
	t.Run("health critical without a primary", func(t *testing.T) {
		env := map[string]string{"HSDAL_PRIMARY_DSN": cluster.ReplicaDSNs()[0]}
		code, out, _ := hsdal(t, env, "health", "--window", "0")
		if code != exitUsage || !strings.HasPrefix(out, "CRITICAL") || !strings.Contains(out, "no reachable primary") {
			t.Errorf("health with only a standby: %d\n%s", code, out)
		}
	})
	t.Run("usage", func(t *testing.T) {
		if code, out, _ := hsdal(t, nil, "--help"); code != exitOK || !strings.Contains(out, "maint report") {
			t.Errorf("help: %d %q", code, out)
		}
		if code, _, _ := hsdal(t, nil, "frobnicate"); code != exitUsage {
			t.Errorf("unknown command: %d", code)
		}
	})
}
