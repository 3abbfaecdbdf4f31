// Package testcluster runs a real local PostgreSQL streaming-replication
// cluster (one primary, N hot standbys) plus Redis for hsdal's integration
// tests, benchmarks and `make up`.
//
// Servers start from the installed binaries (PostgreSQL server programs from
// `pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH; redis-server) on
// free loopback ports in a temp dir, as OS user postgres when run as root.
// Standbys are made with pg_basebackup, each with its own physical
// replication slot; Options.Sync adds synchronous quorum replication. Auth is
// trust on 127.0.0.1; Node.DSN is the application role hsdal (owner of
// database hsdal, member of pg_monitor, not superuser), Node.SuperDSN the
// superuser postgres.
//
// Fault controls (StopNode, StartNode, KillNode, Promote, Rejoin,
// PauseReplay, ResumeReplay, StopRedis, StartRedis, KillRedis) let tests
// break the topology on purpose. Unless Options.Detached is set, every
// server dies with the process that started it, and Stop kills everything
// and removes the directory.
//
// Typical use, one cluster per test package:
//
//	var cluster *testcluster.Cluster
//
//	func TestMain(m *testing.M) {
//		c, err := testcluster.Start(context.Background(), testcluster.Options{})
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err) // names the package to install
//			os.Exit(1)
//		}
//		cluster = c
//		code := m.Run()
//		_ = c.Stop()
//		os.Exit(code)
//	}
//
// A test that breaks the topology starts its own cluster with StartTB.
package testcluster
