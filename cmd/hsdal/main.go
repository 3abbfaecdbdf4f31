// Command hsdal is the operator's tool for an hsdal database: schema
// migrations, maintenance jobs and reports, and a health check.
//
//	hsdal migrate
//	hsdal maint run [--json] [job ...]      (jobs: expired_tokens orphans purge_deleted vacuum reindex)
//	hsdal maint report [--json] [--orphans] [--exact-bloat]
//	hsdal maint jobs
//	hsdal health [--json] [--window 1s]
//
// Connection settings come from the environment and may be overridden by
// flags given after the command:
//
//	HSDAL_PRIMARY_DSN    --primary   primary's DSN (required)
//	HSDAL_REPLICA_DSNS   --replicas  comma-separated hot-standby DSNs (health)
//	HSDAL_REDIS_ADDR     --redis     Redis host:port (health)
//
// Passwords are never printed: DSNs are shown redacted and error messages
// are scrubbed of the configured passwords.
//
// Exit status: 0 success (health: OK), 1 failure (health: WARN), 2 usage
// error or health CRITICAL.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/dal/maint"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `usage: hsdal <command> [flags]

commands:
  migrate                         apply the embedded schema migrations on the primary
  maint run [--json] [job ...]    run maintenance jobs (default: all, in order)
  maint report [--json] [--orphans] [--exact-bloat]
                                  sizes, dead tuples, index usage and bloat, XID age, replication
  maint jobs                      list the maintenance jobs
  health [--json] [--window 1s]   probe every node, Redis and the primary's catalog; exit 0 OK, 1 WARN, 2 CRITICAL

connection flags (every command; default from the environment):
  --primary DSN    HSDAL_PRIMARY_DSN
  --replicas DSNS  HSDAL_REPLICA_DSNS (comma-separated)
  --redis ADDR     HSDAL_REDIS_ADDR
  --timeout D      overall time limit (default 30s; maint run: 1h)
`

// config is the connection configuration shared by every command.
type config struct {
	primary  string
	replicas []string
	redis    string
	timeout  time.Duration
}

// commonFlags registers the connection flags, defaulting from env.
func commonFlags(fs *flag.FlagSet, env func(string) string, cfg *config, defTimeout time.Duration) *string {
	// The same variables dal.ConfigFromEnv reads.
	fs.StringVar(&cfg.primary, "primary", strings.TrimSpace(env(dal.EnvPrimaryDSN)), "primary DSN (env "+dal.EnvPrimaryDSN+")")
	replicas := fs.String("replicas", env(dal.EnvReplicaDSNs), "comma-separated replica DSNs (env "+dal.EnvReplicaDSNs+")")
	fs.StringVar(&cfg.redis, "redis", strings.TrimSpace(env(dal.EnvRedisAddr)), "Redis host:port (env "+dal.EnvRedisAddr+")")
	fs.DurationVar(&cfg.timeout, "timeout", defTimeout, "overall time limit")
	return replicas
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// cli carries the output streams and the secrets to scrub from errors.
type cli struct {
	stdout, stderr io.Writer
	secrets        []string
}

func (c *cli) errorf(format string, args ...any) {
	fmt.Fprintln(c.stderr, scrub(fmt.Sprintf("hsdal: "+format, args...), c.secrets))
}

// run is main without the process: testable, and every exit path returns a
// status.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c := &cli{stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	switch args[0] {
	case "migrate":
		return c.migrate(ctx, args[1:], env)
	case "health":
		return c.health(ctx, args[1:], env)
	case "maint":
		if len(args) < 2 {
			c.errorf("maint needs a subcommand: run, report or jobs")
			return exitUsage
		}
		switch args[1] {
		case "run":
			return c.maintRun(ctx, args[2:], env)
		case "report":
			return c.maintReport(ctx, args[2:], env)
		case "jobs":
			for _, j := range maint.Jobs() {
				fmt.Fprintf(stdout, "%-16s every %s by default\n", j, maint.DefaultSchedule()[j])
			}
			return exitOK
		}
		c.errorf("unknown maint subcommand %q (run, report, jobs)", args[1])
		return exitUsage
	}
	c.errorf("unknown command %q\n%s", args[0], usage)
	return exitUsage
}

// parse parses a command's flags and checks the primary DSN.
func (c *cli) parse(name string, args []string, env func(string) string, defTimeout time.Duration, extra func(*flag.FlagSet)) (config, *flag.FlagSet, bool) {
	var cfg config
	fs := flag.NewFlagSet("hsdal "+name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	replicas := commonFlags(fs, env, &cfg, defTimeout)
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, fs, false
	}
	cfg.replicas = splitList(*replicas)
	c.secrets = secrets(append([]string{cfg.primary}, cfg.replicas...)...)
	if cfg.primary == "" {
		c.errorf("%s: no primary DSN: set HSDAL_PRIMARY_DSN or pass --primary", name)
		return cfg, fs, false
	}
	return cfg, fs, true
}

func (c *cli) migrate(ctx context.Context, args []string, env func(string) string) int {
	cfg, fs, ok := c.parse("migrate", args, env, 5*time.Minute, nil)
	if !ok {
		return exitUsage
	}
	if fs.NArg() > 0 {
		c.errorf("migrate takes no arguments")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	if err := dal.Migrate(ctx, cfg.primary); err != nil {
		c.errorf("migrate %s: %v", dal.RedactDSN(cfg.primary), err)
		return exitFail
	}
	fmt.Fprintf(c.stdout, "schema at version %d on %s\n", dal.SchemaVersion, nodeName(cfg.primary))
	return exitOK
}

// maintainer opens a small pool on the primary and a Maintainer over it; the
// returned func closes the pool.
func (c *cli) maintainer(ctx context.Context, primary string, mc maint.Config) (*maint.Maintainer, func(), error) {
	pool, err := c.pool(ctx, primary, 2)
	if err != nil {
		return nil, nil, err
	}
	m, err := maint.New(pool, mc)
	if err != nil {
		pool.Close()
		return nil, nil, err
	}
	return m, pool.Close, nil
}

func (c *cli) pool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse DSN %s: %w", dal.RedactDSN(dsn), err)
	}
	pc.MaxConns = maxConns
	pc.ConnConfig.RuntimeParams["application_name"] = "hsdal-cli"
	return pgxpool.NewWithConfig(ctx, pc)
}

func (c *cli) maintRun(ctx context.Context, args []string, env func(string) string) int {
	var (
		asJSON    bool
		batch     int
		retention time.Duration
	)
	cfg, fs, ok := c.parse("maint run", args, env, time.Hour, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print results as JSON")
		fs.IntVar(&batch, "batch-size", 0, "rows per statement (default 1000)")
		fs.DurationVar(&retention, "retention", 0, "retention of soft-deleted rows for purge_deleted (default 720h)")
	})
	if !ok {
		return exitUsage
	}
	jobs := fs.Args()
	for _, j := range jobs {
		if !contains(maint.Jobs(), j) {
			c.errorf("unknown job %q (jobs: %s)", j, strings.Join(maint.Jobs(), " "))
			return exitUsage
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	m, closePool, err := c.maintainer(ctx, cfg.primary, maint.Config{BatchSize: batch, DefaultRetention: retention,
		Logger: slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		c.errorf("%v", err)
		return exitFail
	}
	defer closePool()
	results, err := m.RunAll(ctx, jobs...)
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(results)
	} else {
		for _, r := range results {
			_ = r.WriteText(c.stdout)
		}
	}
	if err != nil {
		if errors.Is(err, maint.ErrStandby) {
			c.errorf("%v\n(%s is a hot standby: point --primary / HSDAL_PRIMARY_DSN at the primary)", err, nodeName(cfg.primary))
		} else {
			c.errorf("%v", err)
		}
		return exitFail
	}
	return exitOK
}

func (c *cli) maintReport(ctx context.Context, args []string, env func(string) string) int {
	var asJSON, orphans, exact bool
	cfg, fs, ok := c.parse("maint report", args, env, 5*time.Minute, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
		fs.BoolVar(&orphans, "orphans", false, "count orphan rows per foreign key (scans the referencing tables)")
		fs.BoolVar(&exact, "exact-bloat", false, "measure index bloat with pgstattuple when installed (reads every index)")
	})
	if !ok {
		return exitUsage
	}
	if fs.NArg() > 0 {
		c.errorf("maint report takes no arguments")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()
	m, closePool, err := c.maintainer(ctx, cfg.primary, maint.Config{})
	if err != nil {
		c.errorf("%v", err)
		return exitFail
	}
	defer closePool()
	rep, err := m.Report(ctx, maint.ReportOptions{Orphans: orphans, ExactBloat: exact})
	if err != nil {
		c.errorf("%v", err)
		return exitFail
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			c.errorf("%v", err)
			return exitFail
		}
		return exitOK
	}
	if err := rep.WriteText(c.stdout); err != nil {
		c.errorf("%v", err)
		return exitFail
	}
	return exitOK
}

// health probes what a CLI can see from outside a running homeserver: every
// node's role and lag, the primary's XID age and replication slots, Redis.
// Pool utilisation, query times and the invalidation relay belong to a
// running DAL instance and are not measured here.
func (c *cli) health(ctx context.Context, args []string, env func(string) string) int {
	var (
		asJSON bool
		window time.Duration
	)
	cfg, fs, ok := c.parse("health", args, env, 30*time.Second, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
		fs.DurationVar(&window, "window", time.Second,
			"time between the two probes lag is measured over (lag in time is a lower bound within it)")
	})
	if !ok {
		return exitUsage
	}
	if fs.NArg() > 0 {
		c.errorf("health takes no arguments")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	var nodes []health.Node
	var primary *pgxpool.Pool
	for i, dsn := range append([]string{cfg.primary}, cfg.replicas...) {
		p, err := c.pool(ctx, dsn, 2)
		if err != nil {
			c.errorf("%v", err)
			return exitFail
		}
		defer p.Close()
		if i == 0 {
			primary = p
		}
		nodes = append(nodes, health.Node{Name: nodeName(dsn), DB: p})
	}
	cc := health.CheckerConfig{
		Nodes:   health.NewNodeProber(health.NodeProberConfig{Nodes: nodes}),
		Primary: primary,
	}
	if cfg.redis != "" {
		rdb := redis.NewClient(&redis.Options{Addr: cfg.redis, MaxRetries: -1, DialTimeout: 2 * time.Second})
		defer rdb.Close()
		cc.Redis = health.PingFunc(func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
	}
	checker, err := health.NewChecker(cc)
	if err != nil {
		c.errorf("%v", err)
		return exitFail
	}
	defer checker.Close()
	// Two probes: the first records the primary's WAL position, the second
	// sees which standby has not replayed it yet.
	checker.Snapshot(ctx)
	if window > 0 {
		t := time.NewTimer(window)
		select {
		case <-ctx.Done():
			t.Stop()
			c.errorf("%v", ctx.Err())
			return exitFail
		case <-t.C:
		}
	}
	rep := checker.Check(ctx)
	for i := range rep.Checks {
		rep.Checks[i].Reason = scrub(rep.Checks[i].Reason, c.secrets)
	}
	for i := range rep.Snapshot.Nodes {
		rep.Snapshot.Nodes[i].Error = scrub(rep.Snapshot.Nodes[i].Error, c.secrets)
	}
	if asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		fmt.Fprintf(c.stdout, "%s\n", rep.Status)
		for _, ch := range rep.Checks {
			fmt.Fprintf(c.stdout, "  %-8s %-32s %s\n", ch.Status, ch.Name, ch.Reason)
		}
		fmt.Fprintln(c.stdout, "  (pool utilisation, query times and relay lag are measured inside a running DAL, not by this command)")
	}
	switch rep.Status {
	case health.OK:
		return exitOK
	case health.Warn:
		return exitFail
	default:
		return exitUsage
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func itoa(i int) string { return strconv.Itoa(i) }
