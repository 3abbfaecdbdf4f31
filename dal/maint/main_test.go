package maint_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/dal/maint"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// cluster is the one local cluster (primary + 1 hot standby, no Redis)
// shared by every test of this package, migrated to the current schema.
var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1, NoRedis: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "dal/maint tests need local PostgreSQL 15+ server binaries "+
			"(apt-get install postgresql-15 postgresql-contrib): %v\n", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintf(os.Stderr, "stop local cluster: %v\n", err)
		}
	}()
	if err := dal.Migrate(ctx, c.PrimaryDSN()); err != nil {
		fmt.Fprintf(os.Stderr, "migrate: %v\n", err)
		return 1
	}
	cluster = c
	return m.Run()
}

func testCtx(tb testing.TB) context.Context { return testcluster.Context(tb, 2*time.Minute) }

func mustPool(tb testing.TB, dsn string, maxConns int32) *pgxpool.Pool {
	return testcluster.Pool(tb, dsn, maxConns)
}

func mustMaintainer(tb testing.TB, pool *pgxpool.Pool, cfg maint.Config) *maint.Maintainer {
	tb.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m, err := maint.New(pool, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

func mustConn(tb testing.TB, dsn string) *pgx.Conn {
	tb.Helper()
	c, err := pgx.Connect(testCtx(tb), dsn)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

func mustExec(tb testing.TB, q *pgx.Conn, sql string, args ...any) {
	tb.Helper()
	if _, err := q.Exec(testCtx(tb), sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

func count(tb testing.TB, q *pgx.Conn, sql string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := q.QueryRow(testCtx(tb), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
	return n
}

func hash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func ms(t time.Time) int64 { return t.UnixMilli() }
