// Package integration holds hsdal's fault-injection suite: a homeserver
// workload driven through several independently opened DALs while servers are
// killed, paused and promoted, and a checker that proves no acknowledged write
// was lost and no read went backwards.
//
// The pieces are exported so that the benchmark harness (and anyone with a
// cluster) can reuse them:
//
//   - Workload: simulated users, each running requests one after another
//     through a randomly picked DAL, carrying its consistency token between
//     requests as the encoded string a client would hold. Writes: its own
//     displayname with an increasing version, events with unique IDs,
//     private messages, soft delete and restore of its own events and
//     messages, joins and leaves. Reads: its own data in its session
//     (ReadYourWrites), its own profile with Strong, followed users'
//     profiles and memberships, room timelines and member lists with
//     BoundedStaleness(d), in the session or without one. Every request
//     and its result goes into a History (start, end, outcome: acknowledged,
//     failed, or unknown outcome; what each read saw).
//   - Injector: a seeded, reproducible fault schedule on an
//     internal/testcluster cluster: kill -9 and restart of standbys, WAL
//     replay pause and resume, kill of the primary followed by promotion of
//     a standby and later re-attachment of the old primary (Rejoin), and
//     pg_terminate_backend of random application backends; with the Redis
//     cache, kill -9 and restart of Redis and the loss of the invalidation
//     relay leader's session. ExtraFault plugs in kinds it does not know.
//   - Check: the history checker; see its documentation for the exact
//     definitions of lost writes, read-your-writes, staleness, monotonic
//     reads, soft-delete visibility and half-applied writes.
//   - RunChaos: all of it, plus quiescence, a Strong read of the final state,
//     the check that every read the cache may serve then equals the
//     primary, and a Report (JSON under integration/results/, Summary for
//     stdout).
//
// Typical use:
//
//	c, err := testcluster.Start(ctx, testcluster.Options{Sync: true})
//	...
//	rep, err := integration.RunChaos(ctx, integration.ChaosConfig{Cluster: c, Seed: 42, Duration: time.Minute})
//	if err != nil { ... }
//	fmt.Println(rep.Summary())
//	if rep.ViolationTotal() > 0 { ... }
//
// `make test` runs TestChaos for 30 s. A long run:
//
//	HSDAL_CHAOS_DURATION=10m go test -run TestChaos -timeout 30m -v ./integration
//
// (or -chaos.duration=10m; -chaos.seed / HSDAL_CHAOS_SEED reproduces a
// schedule, -chaos.async / HSDAL_CHAOS_ASYNC=1 runs with asynchronous
// replication, where writes lost at a failover are counted instead of
// failing the run).
package integration
