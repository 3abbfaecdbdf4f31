package router_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5"
)

// cluster is the package's shared cluster: a primary and two standbys. Tests
// that only pause/resume replay use it (and resume before returning); tests
// that kill or promote nodes start their own.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 2, NoRedis: true})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "router tests need PostgreSQL server binaries (apt-get install postgresql-15):", err)
		os.Exit(1)
	}
	cluster = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop cluster:", err)
	}
	os.Exit(code)
}

// quietLogger drops router logs unless -v.
func quietLogger(tb testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// configFor is a router config for c's current topology.
func configFor(tb testing.TB, c *testcluster.Cluster) router.Config {
	return router.Config{
		PrimaryDSN:  c.PrimaryDSN(),
		ReplicaDSNs: c.ReplicaDSNs(),
		Logger:      quietLogger(tb),
	}
}

// mustRouter opens a router, closed at cleanup.
func mustRouter(tb testing.TB, cfg router.Config) *router.Router {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := router.New(ctx, cfg)
	if err != nil {
		tb.Fatalf("router.New: %v", err)
	}
	tb.Cleanup(r.Close)
	return r
}

// nodeAddr is the router's name for a testcluster node.
func nodeAddr(n *testcluster.Node) string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// mustExec runs DDL/DML on the primary through the router.
func mustExec(tb testing.TB, r *router.Router, sql string, args ...any) router.Token {
	tb.Helper()
	tok, err := r.Write(context.Background(), func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		tb.Fatalf("write %q: %v", sql, err)
	}
	return tok
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// pauseReplay pauses replay on the named standbys; resumed at cleanup.
func pauseReplay(tb testing.TB, c *testcluster.Cluster, names ...string) {
	tb.Helper()
	ctx := context.Background()
	for _, name := range names {
		if err := c.PauseReplay(ctx, name); err != nil {
			tb.Fatalf("pause replay on %s: %v", name, err)
		}
		tb.Cleanup(func() {
			if err := c.ResumeReplay(context.Background(), name); err != nil {
				tb.Errorf("resume replay on %s: %v", name, err)
			}
		})
	}
}

func standbyNames(c *testcluster.Cluster) []string {
	var out []string
	for _, n := range c.Nodes() {
		if n.Role() == testcluster.RoleStandby {
			out = append(out, n.Name)
		}
	}
	return out
}

// waitCaughtUp waits until r sees every reachable standby caught up with the
// primary (lag known, zero bytes behind).
func waitCaughtUp(tb testing.TB, r *router.Router) {
	tb.Helper()
	waitFor(tb, 30*time.Second, "router to see the standbys caught up", func() bool {
		for _, n := range r.Status().Nodes {
			if n.Standby && n.Reachable && (!n.LagKnown || n.LagBytes > 0) {
				return false
			}
		}
		return true
	})
}
