package main

import (
	"context"
	"testing"
	"time"

	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/jackc/pgx/v5/pgxpool"
)

// TestPgpoolBalancesReads starts pgpool-II over a real cluster and checks that
// plain reads through it reach more than one backend.
func TestPgpoolBalancesReads(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bin, err := findOrInstallPgpool(ctx, true, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	c := testcluster.StartTB(t, testcluster.Options{NoRedis: true})
	var backends []string
	for _, n := range c.Nodes() {
		backends = append(backends, "127.0.0.1:"+itoa(n.Port))
	}
	pp, err := startPgpool(ctx, bin, backends, "hsdal", 8, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pp.Stop)
	pool, err := pgxpool.New(ctx, pp.DSN())
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	seen := map[int]bool{}
	for range 200 {
		var port int
		if err := pool.QueryRow(ctx, "SELECT inet_server_port()").Scan(&port); err != nil {
			t.Fatal(err)
		}
		seen[port] = true
	}
	if len(seen) < 2 {
		t.Fatalf("reads through pgpool reached only %v", seen)
	}
}
