package router_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5/pgxpool"
)

// BenchmarkRouteDecision measures one routing decision (no I/O): a default
// bounded-staleness read choosing between two fresh replicas, a
// read-your-writes read whose token is covered by the probes, and a Strong
// read.
func BenchmarkRouteDecision(b *testing.B) {
	clk := newFakeClock()
	r, err := router.NewFakeRouter(router.Config{Now: clk.Now, Logger: quietLogger(b)}, "p", "r1", "r2")
	if err != nil {
		b.Fatal(err)
	}
	r.FakeProbe("p", false, 1000, 1)
	r.FakeProbe("r1", true, 1000, 1)
	r.FakeProbe("r2", true, 1000, 1)
	for _, bc := range []struct {
		name string
		c    router.Consistency
	}{
		{"bounded-staleness", router.Consistency{}},
		{"read-your-writes", router.ReadYourWrites(router.Token{LSN: 900, Timeline: 1})},
		{"strong", router.Strong()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.RouteFor(bc.c, router.Token{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkReadLatency compares one point read through the router with the
// same read on a raw pgxpool connected to the same node (primary: Strong
// read; replica: a router whose only replica is that node).
func BenchmarkReadLatency(b *testing.B) {
	ctx := context.Background()
	setup := mustRouter(b, configFor(b, cluster))
	mustExec(b, setup, "CREATE TABLE IF NOT EXISTS bench (k int PRIMARY KEY, v bigint NOT NULL)")
	mustExec(b, setup, "INSERT INTO bench SELECT g, g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING")
	if err := cluster.WaitReplicated(ctx); err != nil {
		b.Fatal(err)
	}
	const query = "SELECT v FROM bench WHERE k = $1"
	replicaDSN := cluster.ReplicaDSNs()[0]
	for _, target := range []struct {
		name string
		dsn  string
		c    router.Consistency
	}{
		{"primary", cluster.PrimaryDSN(), router.Strong()},
		{"replica", replicaDSN, router.BoundedStaleness(time.Hour)},
	} {
		b.Run(target.name+"/raw-pgxpool", func(b *testing.B) {
			pcfg, err := pgxpool.ParseConfig(target.dsn)
			if err != nil {
				b.Fatal(err)
			}
			pcfg.MaxConns, pcfg.MinConns = 16, 2
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				var v int64
				i++
				if err := pool.QueryRow(ctx, query, i%1000+1).Scan(&v); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(target.name+"/router", func(b *testing.B) {
			cfg := configFor(b, cluster)
			cfg.ReplicaDSNs = []string{replicaDSN}
			r := mustRouter(b, cfg)
			waitCaughtUp(b, r)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				var v int64
				i++
				k := i%1000 + 1
				info, err := r.Read(ctx, target.c, func(ctx context.Context, q router.Querier) error {
					return q.QueryRow(ctx, query, k).Scan(&v)
				})
				if err != nil {
					b.Fatal(err)
				}
				if info.Primary != (target.name == "primary") {
					b.Fatalf("read ran on %+v", info)
				}
			}
		})
	}
}

// BenchmarkReadOverheadPaired interleaves a raw pgxpool read and a router
// read on the same node in every iteration, so both see the same machine
// load, and reports the medians and the router's overhead in percent.
func BenchmarkReadOverheadPaired(b *testing.B) {
	ctx := context.Background()
	setup := mustRouter(b, configFor(b, cluster))
	mustExec(b, setup, "CREATE TABLE IF NOT EXISTS bench (k int PRIMARY KEY, v bigint NOT NULL)")
	mustExec(b, setup, "INSERT INTO bench SELECT g, g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING")
	if err := cluster.WaitReplicated(ctx); err != nil {
		b.Fatal(err)
	}
	const query = "SELECT v FROM bench WHERE k = $1"
	replicaDSN := cluster.ReplicaDSNs()[0]
	for _, target := range []struct {
		name string
		dsn  string
		c    router.Consistency
	}{
		{"primary", cluster.PrimaryDSN(), router.Strong()},
		{"replica", replicaDSN, router.BoundedStaleness(time.Hour)},
	} {
		b.Run(target.name, func(b *testing.B) {
			pcfg, err := pgxpool.ParseConfig(target.dsn)
			if err != nil {
				b.Fatal(err)
			}
			pcfg.MaxConns, pcfg.MinConns = 16, 2
			pool, err := pgxpool.NewWithConfig(ctx, pcfg)
			if err != nil {
				b.Fatal(err)
			}
			defer pool.Close()
			cfg := configFor(b, cluster)
			cfg.ReplicaDSNs = []string{replicaDSN}
			r := mustRouter(b, cfg)
			waitCaughtUp(b, r)
			var raw, routed []time.Duration
			i := 0
			for b.Loop() {
				i++
				k := i%1000 + 1
				var v int64
				t0 := time.Now()
				if err := pool.QueryRow(ctx, query, k).Scan(&v); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				info, err := r.Read(ctx, target.c, func(ctx context.Context, q router.Querier) error {
					return q.QueryRow(ctx, query, k).Scan(&v)
				})
				t2 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				if info.Primary != (target.name == "primary") {
					b.Fatalf("read ran on %+v", info)
				}
				raw, routed = append(raw, t1.Sub(t0)), append(routed, t2.Sub(t1))
			}
			rm, qm := median(raw), median(routed)
			b.ReportMetric(float64(rm.Nanoseconds()), "raw-p50-ns")
			b.ReportMetric(float64(qm.Nanoseconds()), "router-p50-ns")
			b.ReportMetric(100*(float64(qm)-float64(rm))/float64(rm), "overhead-%")
		})
	}
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	slices.Sort(s)
	return s[len(s)/2]
}
