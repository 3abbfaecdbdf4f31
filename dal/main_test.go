package dal_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/internal/testcluster"
)

// cluster is the one local cluster (primary + 2 hot standbys + Redis) shared by every test
// of package dal, started in TestMain. Tests that break the topology start their own.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := testcluster.Start(ctx, testcluster.Options{})
	cancel()
	if err != nil {
		// Never skip: say what is missing (the error names the package to install).
		fmt.Fprintf(os.Stderr, "dal tests need a local PostgreSQL 15+ and redis-server: %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop local cluster: %v\n", err)
		}
	}()
	cluster = c
	return m.Run()
}

// testCtx returns a context bounded so a hung server fails the test instead of the run.
func testCtx(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	tb.Cleanup(cancel)
	return ctx
}

var dbSeq atomic.Int64

// freshDB creates an empty database owned by the application role on the cluster and
// returns its application DSN for the primary; the database is dropped when tb ends.
func freshDB(tb testing.TB) (dbName string, primaryDSN string) {
	tb.Helper()
	ctx := testCtx(tb)
	name := fmt.Sprintf("dal_test_%d_%d", os.Getpid(), dbSeq.Add(1))
	super := mustConnect(tb, cluster.Primary().SuperDSN())
	if _, err := super.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER hsdal"); err != nil {
		tb.Fatalf("create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, cluster.Primary().SuperDSN())
		if err != nil {
			tb.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop database %s: %v", name, err)
		}
	})
	return name, withDB(tb, cluster.PrimaryDSN(), name)
}

// withDB returns dsn with its database replaced by name.
func withDB(tb testing.TB, dsn, name string) string {
	tb.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatalf("parse DSN: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// mustConnect opens a single connection closed when tb ends.
func mustConnect(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	ctx := testCtx(tb)
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { c.Close(context.Background()) })
	return c
}
