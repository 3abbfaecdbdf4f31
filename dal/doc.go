// Package dal is hsdal's facade: the one place where a homeserver opens the
// data-access layer.
//
// Open wires a router (PostgreSQL primary plus hot-standby replicas), an
// optional Redis cache and the typed repositories, after checking that the
// database schema matches the code. Migrate applies the embedded schema
// migrations. Health, maintenance jobs and observability also live here.
//
//	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: dsn, ReplicaDSNs: replicas, RedisAddr: "127.0.0.1:6379"})
//	if err != nil { ... }
//	defer d.Close()
//
// # Cache and relay
//
// With Config.Redis or Config.RedisAddr the hot reads are cached (see
// package repos, "Caching", and package cache). Migration 3 installs the
// durable change feed: triggers on users, devices, access_tokens, rooms and
// room_memberships write a row naming what changed into cache_outbox in the
// writing transaction (so writes by plain SQL count too) and NOTIFY. Every
// DAL with a cache runs a relay candidate; one of them, elected with a
// PostgreSQL advisory lock on a dedicated session to the primary, LISTENs,
// reads the outbox from the start after every (re)connect, invalidates the
// keys at a WAL position read after the rows became visible, deletes the
// rows it applied, and advances the cache's watermark. A failed invalidation
// keeps its rows for the next try; when the active relay's session dies a
// standby takes over. Rows older than RelayConfig.Retention are pruned,
// leaving a flush row that makes the next relay bump the cache's epoch. A
// DAL without a cache only prunes.
//
// Redis outages never fail a read: the cache's breaker opens and reads go to
// PostgreSQL; invalidations that could not be applied stay in the outbox (and
// the instance that dropped one stops using Redis until it gave the cache a
// new epoch). A failover (new primary timeline) bumps the epoch too.
// CacheStats, RelayStatus and Health (Redis ping, relay lag) report on it.
package dal
