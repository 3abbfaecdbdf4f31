// Command hsdal-cluster starts and stops a long-lived local hsdal cluster
// (PostgreSQL primary, hot standbys, Redis) for manual work; `make up` and
// `make down` call it.
//
//	hsdal-cluster up      start servers in ./.cluster, write ./.cluster.env, print the DSNs
//	hsdal-cluster status  show each server's state
//	hsdal-cluster down    stop everything recorded in ./.cluster and remove it
//
// The servers run detached (their own session), so they outlive the command.
// `source .cluster.env` exports HSDAL_PRIMARY_DSN, HSDAL_REPLICA_DSNS
// (comma-separated) and HSDAL_REDIS_ADDR.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/internal/testcluster"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: hsdal-cluster [flags] up|down|status

flags:
`

// run executes one command and returns the process exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("hsdal-cluster", flag.ContinueOnError)
	fl.SetOutput(stderr)
	dir := fl.String("dir", ".cluster", "cluster directory (state, data dirs, logs)")
	envFile := fl.String("env", ".cluster.env", "file to write the DSNs to as shell exports")
	replicas := fl.Int("replicas", 2, "number of hot standbys for up")
	sync := fl.Bool("sync", false, "synchronous quorum replication for up")
	noRedis := fl.Bool("no-redis", false, "do not start Redis for up")
	fl.Usage = func() {
		fmt.Fprint(stderr, usage)
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return 2
	}
	var err error
	switch fl.Arg(0) {
	case "up":
		opts := testcluster.Options{Replicas: *replicas, Sync: *sync, NoRedis: *noRedis}
		if opts.Replicas == 0 {
			opts.Replicas = -1
		}
		err = up(*dir, *envFile, opts, stdout, stderr)
	case "down":
		err = down(*dir, *envFile, stdout)
	case "status":
		err = status(*dir, stdout)
	default:
		fl.Usage()
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "hsdal-cluster %s: %v\n", fl.Arg(0), err)
		return 1
	}
	return 0
}

// envText renders the cluster's DSNs as shell exports.
func envText(c *testcluster.Cluster) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
	return "export HSDAL_PRIMARY_DSN=" + q(c.PrimaryDSN()) + "\n" +
		"export HSDAL_REPLICA_DSNS=" + q(strings.Join(c.ReplicaDSNs(), ",")) + "\n" +
		"export HSDAL_REDIS_ADDR=" + q(c.RedisAddr()) + "\n"
}

func up(dir, envFile string, opts testcluster.Options, stdout, stderr io.Writer) error {
	if c, err := testcluster.Attach(dir); err == nil {
		if !allRunning(c) {
			return fmt.Errorf("a cluster is recorded in %s but not all of its servers run; run `make down` first", dir)
		}
		fmt.Fprintf(stderr, "cluster already up in %s\n", dir)
		return writeEnv(c, envFile, stdout)
	} else if !errors.Is(err, testcluster.ErrNoState) {
		return err
	}
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s exists but holds no cluster state (an interrupted up?); remove it first", dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opts.Dir = dir
	opts.Detached = true
	opts.Logf = func(format string, args ...any) { fmt.Fprintf(stderr, format+"\n", args...) }
	c, err := testcluster.Start(ctx, opts)
	if err != nil {
		return err
	}
	return writeEnv(c, envFile, stdout)
}

func writeEnv(c *testcluster.Cluster, envFile string, stdout io.Writer) error {
	text := envText(c)
	if err := os.WriteFile(envFile, []byte(text), 0o644); err != nil {
		return err
	}
	fmt.Fprint(stdout, text)
	fmt.Fprintf(stdout, "# written to %s; load with: source %s\n", envFile, envFile)
	return nil
}

func allRunning(c *testcluster.Cluster) bool {
	for _, n := range c.Nodes() {
		if !n.Running() {
			return false
		}
	}
	return c.RedisAddr() == "" || c.RedisRunning()
}

func down(dir, envFile string, stdout io.Writer) error {
	if err := os.Remove(envFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	c, err := testcluster.Attach(dir)
	if errors.Is(err, testcluster.ErrNoState) {
		fmt.Fprintf(stdout, "no cluster in %s\n", dir)
		return nil
	}
	if err != nil {
		return err
	}
	if err := c.Stop(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "stopped cluster in %s\n", dir)
	return nil
}

func status(dir string, stdout io.Writer) error {
	c, err := testcluster.Attach(dir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.Nodes() {
		state := "stopped"
		if n.Running() {
			state = "running"
			if detail, err := nodeDetail(ctx, n); err != nil {
				state += " (unreachable: " + err.Error() + ")"
			} else {
				state += " " + detail
			}
		}
		fmt.Fprintf(stdout, "%-5s %-15s port %-5d %s\n", n.Name, n.Role(), n.Port, state)
	}
	if addr := c.RedisAddr(); addr != "" {
		state := "stopped"
		if c.RedisRunning() {
			state = "running"
		}
		fmt.Fprintf(stdout, "redis %-15s %s %s\n", "", addr, state)
	}
	if !allRunning(c) {
		return errors.New("not all servers are running")
	}
	return nil
}

// nodeDetail reports whether n is in recovery and its WAL position.
func nodeDetail(ctx context.Context, n *testcluster.Node) (string, error) {
	conn, err := pgx.Connect(ctx, n.DSN())
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var inRecovery bool
	var lsn string
	err = conn.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		coalesce(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text, '')`).
		Scan(&inRecovery, &lsn)
	if err != nil {
		return "", err
	}
	if inRecovery {
		return "in recovery, replayed " + lsn, nil
	}
	return "accepting writes, at " + lsn, nil
}
