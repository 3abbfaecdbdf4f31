package router_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// A write whose pooled connection was terminated while idle (an operator's
// pg_terminate_backend, a pooler restart) must not fail: BEGIN is retried on
// a fresh connection, which is safe because BEGIN changes nothing.
func TestWriteSurvivesTerminatedIdleConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS terminate_probe (id int)")
	mustExec(t, r, "INSERT INTO terminate_probe VALUES (1)")

	super, err := pgx.Connect(ctx, cluster.Primary().SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	var killed int
	if err := super.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE usename = 'hsdal' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
		  AND state = 'idle'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed == 0 {
		t.Fatal("no idle pooled connection to terminate")
	}
	for i := range 3 {
		if _, err := r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO terminate_probe VALUES ($1)", i+2)
			return err
		}); err != nil {
			t.Fatalf("write %d after %d idle connections were terminated: %v", i, killed, err)
		}
	}
}

// A Strong read whose pooled primary connection was terminated while idle is
// retried on a fresh connection instead of failing.
func TestStrongReadSurvivesTerminatedIdleConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r := mustRouter(t, configFor(t, cluster))
	read := func() error {
		_, err := r.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
			var one int
			return q.QueryRow(ctx, "SELECT 1").Scan(&one)
		})
		return err
	}
	if err := read(); err != nil {
		t.Fatal(err)
	}
	super, err := pgx.Connect(ctx, cluster.Primary().SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	if _, err := super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE usename = 'hsdal' AND backend_type = 'client backend' AND state = 'idle'`); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := read(); err != nil {
			t.Fatalf("strong read %d after idle connections were terminated: %v", i, err)
		}
	}
}
