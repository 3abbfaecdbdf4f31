// Package health turns a snapshot of the data-access layer's state into an
// OK / WARN / CRITICAL verdict with reasons.
//
// The package has two halves:
//
//   - Pure logic: a Snapshot (per-node reachability, role and replication lag,
//     pool utilisation and acquire wait, mean query time and slow-query rate,
//     Redis, invalidation relay lag, transaction-ID age, replication slots) is
//     evaluated against Thresholds by Evaluate. Nothing in that half does I/O,
//     so it is tested table-driven without servers.
//   - Probes that fill a Snapshot from the real system: NodeProber asks each
//     PostgreSQL node for its role and WAL positions and measures lag in bytes
//     and in seconds; Checker samples pool counters, query counters, Redis and
//     the relay through small interfaces, so the dal facade can plug in the
//     router's node states and the cache's relay without this package
//     importing them.
//
// The default thresholds follow the maintenance plan's alert table: pool
// utilisation above 80% warns and above 90% is critical, a mean acquire wait
// above 5s warns and above 30s is critical, any failed acquire is critical, a
// mean query time above 100ms warns and above 500ms is critical, more than 10
// slow queries a minute warn and more than 50 are critical.
//
//	c := health.NewChecker(health.CheckerConfig{
//		Nodes: health.NewNodeProber(health.NodeProberConfig{Primary: pool, Replicas: replicas}),
//		Pools: []health.PoolSource{health.PgxPool("primary", pool)},
//	})
//	rep := c.Check(ctx)
//	if rep.Status != health.OK {
//		for _, p := range rep.Problems() {
//			log.Printf("%s %s: %s", p.Status, p.Name, p.Reason)
//		}
//	}
package health
