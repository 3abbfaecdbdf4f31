// Package integration holds hsdal's fault-injection suite: a homeserver
// workload driven through several independently opened DALs while servers are
// killed, paused and promoted, and a checker that proves no acknowledged write
// was lost and no read went backwards.
package integration
