// Package cache is hsdal's Redis hot-entity cache: cache-aside reads with
// stampede protection, an optional in-process tier, and fills that are accepted
// only when they are at least as new as the last invalidation of their key.
//
// The package knows nothing of SQL: a WAL position is a plain number to it.
// The durable change feed that turns PostgreSQL rows into invalidations lives
// on the SQL side and calls into this package.
package cache
