// Package router sends each query to a PostgreSQL node that satisfies the
// caller's consistency requirement: writes to the primary, reads to a hot
// standby whenever that is provably safe.
//
// It knows nodes, roles, replication lag, breakers and consistency tokens, and
// nothing of tables.
package router
