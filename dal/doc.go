// Package dal is hsdal's facade: the one place where a homeserver opens the
// data-access layer.
//
// Open wires a router (PostgreSQL primary plus hot-standby replicas), an
// optional Redis cache and the typed repositories, after checking that the
// database schema matches the code. Migrate applies the embedded schema
// migrations. Health, maintenance jobs and observability also live here.
//
//	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: dsn, ReplicaDSNs: replicas})
//	if err != nil { ... }
//	defer d.Close()
package dal
