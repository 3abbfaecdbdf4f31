// Package router sends each query to a PostgreSQL node that satisfies the
// caller's consistency requirement: writes to the primary, reads to a hot
// standby whenever that is provably safe.
//
// It knows nodes, roles, replication lag, breakers and consistency tokens, and
// nothing of tables. Its unit is "run this function on a connection that
// satisfies this requirement".
//
//	r, err := router.New(ctx, router.Config{
//		PrimaryDSN:  "postgres://app:secret@db0:5432/hs",
//		ReplicaDSNs: []string{"postgres://app:secret@db1:5432/hs", "postgres://app:secret@db2:5432/hs"},
//	})
//	if err != nil { ... }
//	defer r.Close()
//
//	ctx = router.WithSession(ctx, tokenFromClient) // request scope
//	tok, err := r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
//		_, err := tx.Exec(ctx, "UPDATE users SET displayname = $1 WHERE id = $2", name, id)
//		return err
//	})
//	// Later in the request (or on another instance, given tok.Encode()):
//	info, err := r.Read(ctx, router.ReadYourWrites(tok), func(ctx context.Context, q router.Querier) error {
//		return q.QueryRow(ctx, "SELECT displayname FROM users WHERE id = $1", id).Scan(&name)
//	})
//
// # Nodes, roles and lag
//
// Every DSN (multi-host DSNs are expanded) becomes a node with its own
// pgxpool and a dedicated probe connection. Every ProbeInterval (100ms) the
// prober reads each node's role (pg_is_in_recovery()), position (the
// standby's replay LSN, the primary's WAL insert LSN) and timeline. The
// primary is whichever reachable node is not in recovery — never the one
// configured as PrimaryDSN by assumption. Lag is measured in bytes and in
// seconds; seconds are "how long ago the primary was at this replica's
// replay position", from a short history of timestamped primary positions,
// so an idle primary does not make a caught-up replica look stale.
//
// # Consistency
//
// A write's token is the primary's WAL insert position read in the same
// round trip as its COMMIT, after the commit is visible. A replica satisfies
// ReadYourWrites(t) when its replay position is at least t.LSN on t's
// timeline. The check uses the chosen replica's last probe; when that probe
// is older than the token, the replay position is re-read on the very
// connection the read will use. When no replica is fresh enough the read goes
// to the primary (or waits up to Config.ReplicaWait). BoundedStaleness(d)
// reads use a replica whose lag bound is at most d; when every replica is
// past the bound, Config.StalePolicy decides (primary, least-lagged replica,
// or ErrUnavailable). Within WithSession, every non-Strong read is at least
// ReadYourWrites(SessionToken(ctx)). Among eligible replicas the router picks
// by the power of two choices on in-flight requests.
//
// Reads cannot write: the read callback gets a Querier (no Exec, Begin or
// Copy), and every pooled session is READ ONLY by default, so a read that
// tries to write, lock rows (FOR UPDATE/SHARE) or call nextval fails on the
// primary exactly as on a standby. ReadTx uses REPEATABLE READ READ ONLY.
//
// # Faults
//
// Each node has a gobreaker that counts only connectivity and
// server-unavailable errors (SQLSTATE class 08, 57P01-57P03, refused/reset
// connections, timeouts) — never SQL errors, never a cancelled context. A
// read that fails because its node died, or because a standby cancelled it
// for a recovery conflict (40001 on a standby, 40P01), is retried on another
// node and then the primary, within the caller's deadline and a retry
// budget (retries at most Config.RetryRatio of reads, plus a small floor).
// Writes are never retried; a connection lost during COMMIT returns
// ErrCommitUnknown.
//
// When the primary fails, or a write finds it read-only (25006), every node
// is re-probed and the node that reports pg_is_in_recovery() = false becomes
// the primary; until one does, writes fail fast with ErrUnavailable while
// reads continue on replicas. Two nodes claiming to be primary (split brain)
// stop all writes with ErrUnavailable and an error log rather than a guess.
// A node that comes back as a standby on the primary's timeline rejoins the
// read set. Promotion is the operator's tool's job; the router follows it.
//
// # Durability at failover
//
// The router cannot make a write more durable than PostgreSQL made it. With
// synchronous quorum replication (synchronous_standby_names set and
// synchronous_commit on, remote_write or remote_apply), an acknowledged
// commit is on a standby before Write returns, and promoting that standby
// loses no acknowledged write. With asynchronous replication (the
// PostgreSQL default), writes acknowledged in the replication lag window —
// typically milliseconds, more under load — are lost if the primary dies
// and a standby is promoted. Status().Replication reports the mode the
// primary runs with (ReplicationMode.Synchronous). A token minted on a
// timeline that is no longer the primary's may name a lost write: such
// reads are served by the primary, as Strong (they never wait and never
// pass on a replica); ReadInfo.Timeline shows the timeline that answered.
//
// # Observability
//
// OpenTelemetry metrics (hsdal.router.*: queries by node, role, operation
// and outcome; latency and pool-acquire histograms; pool connections;
// replica lag in bytes and seconds; breaker state; node role; retries,
// denied retries, fallbacks, failovers) and spans (router.read,
// router.read_tx, router.write) carrying the node chosen and why. Both use
// the otel global providers unless Config sets others.
package router
