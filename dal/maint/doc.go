// Package maint runs hsdal's database maintenance: the jobs of the
// maintenance plan (seed 000, sections 4–5) done safely and once per cluster,
// reports on table and index health, transaction-ID wraparound and
// replication (seed 003), and a scheduler that runs the jobs periodically.
//
// Jobs (names are the Job* constants):
//
//   - expired_tokens: deletes access and refresh tokens whose expires_ts has
//     passed; a refresh token some live, unexpired access token was minted
//     with is kept (deleting it would cascade to that token).
//   - orphans: finds rows whose foreign-key parent is missing (possible only
//     when foreign-key enforcement was bypassed: session_replication_role,
//     disabled triggers, a restore without constraints) and repairs exactly
//     what the foreign key itself would have done: ON DELETE CASCADE children
//     are deleted, ON DELETE SET NULL references are set to NULL, and
//     everything else (content whose parent's delete the schema refuses: room
//     events, memberships, aliases, private messages) is only reported.
//     Every foreign key of the current schema is checked (read from
//     pg_constraint), one anti-join scan of the referencing table each.
//   - purge_deleted: hard-deletes soft-deleted rows whose deleted_at is older
//     than a per-table retention, children before parents (a soft-deleted
//     room's events, memberships, history and aliases, then the room; a
//     soft-deleted private session's messages, then the session); soft-deleted
//     users are scrubbed (profile columns cleared), never deleted, because
//     Matrix user IDs must never be reused.
//   - vacuum: VACUUM (ANALYZE) of tables whose dead-tuple ratio passes a
//     threshold, and VACUUM (FREEZE, ANALYZE) of tables whose oldest unfrozen
//     transaction ID is older than a freeze threshold.
//   - reindex: REINDEX INDEX CONCURRENTLY of B-tree indexes whose estimated
//     bloat passes a threshold (see BloatMethod for how bloat is measured).
//
// Every job:
//
//   - runs only on the primary: it checks pg_is_in_recovery() first and
//     returns an error matching ErrStandby on a hot standby;
//   - runs on one instance at a time: it holds a session advisory lock
//     (pg_try_advisory_lock, key derived from the job name) on a dedicated
//     connection for its whole run; when another instance holds it the run
//     is skipped with Outcome Skipped, which is not an error;
//   - is idempotent and batched: each statement touches at most
//     Config.BatchSize rows in its own short transaction, so no lock is held
//     for long, and a run interrupted half-way is simply finished by the next;
//   - sets lock_timeout (Config.LockTimeout) so it never queues for long
//     behind application locks;
//   - produces an OpenTelemetry span and metrics (runs, duration, rows).
//
// Usage:
//
//	m, err := maint.New(pool, maint.Config{Logger: logger})
//	res, err := m.Run(ctx, maint.JobExpiredTokens)
//	rep, err := m.Report(ctx, maint.ReportOptions{})
//	rep.WriteText(os.Stdout)
//
//	s := maint.NewScheduler(m, maint.SchedulerConfig{})
//	go s.Run(ctx) // until ctx is cancelled
package maint
