package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// options are the harness's flags.
type options struct {
	primary, replicas, redis string
	scale                    string
	duration                 time.Duration
	rounds                   int
	concurrency              int
	sweep                    string
	scenarios, variants      string
	seed                     uint64
	out                      string
	pgpool                   string
	quiet                    bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.primary, "primary", "", "primary DSN of an existing cluster (default: start a local cluster)")
	fs.StringVar(&o.replicas, "replicas", "", "comma-separated replica DSNs of an existing cluster")
	fs.StringVar(&o.redis, "redis", "", "Redis address of an existing cluster")
	fs.StringVar(&o.scale, "scale", "small", "data set size: tiny, small (default, loads in seconds) or large")
	fs.DurationVar(&o.duration, "duration", 3*time.Second, "measuring time per scenario × variant (split into -rounds)")
	fs.IntVar(&o.rounds, "rounds", 2, "rounds per scenario; variants run interleaved, in rotating order, each round")
	fs.IntVar(&o.concurrency, "concurrency", 16, "concurrent workers per run")
	fs.StringVar(&o.sweep, "sweep", "1,4,16,32", "concurrency levels for the throughput-vs-concurrency curve (hot-profile); empty to skip")
	fs.StringVar(&o.scenarios, "scenarios", "", "comma-separated scenario ids or prefixes (default all): "+strings.Join(scenarioIDs(), ", "))
	fs.StringVar(&o.variants, "variants", "", "comma-separated variants (default all): "+strings.Join(allVariants, ", "))
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the data set and the key sequences")
	fs.StringVar(&o.out, "out", "bench/results", "directory for latest.json and report.html")
	fs.StringVar(&o.pgpool, "pgpool", "auto", "pgpool-II variant: auto (install Debian's pgpool2 if root, else skip), off, require")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if _, ok := scales[o.scale]; !ok {
		return o, fmt.Errorf("bench: unknown -scale %q (tiny, small, large)", o.scale)
	}
	if o.duration <= 0 || o.rounds <= 0 || o.concurrency <= 0 {
		return o, errors.New("bench: -duration, -rounds and -concurrency must be positive")
	}
	if n := len(allVariants) * o.concurrency; n > scales[o.scale].Users {
		return o, fmt.Errorf("bench: the mix gives every worker of every variant its own user: -concurrency %d needs %d users, scale %s has %d", o.concurrency, n, o.scale, scales[o.scale].Users)
	}
	if false {
		return o, errors.New("bench: -duration, -rounds and -concurrency must be positive")
	}
	switch o.pgpool {
	case "auto", "off", "require":
	default:
		return o, fmt.Errorf("bench: -pgpool must be auto, off or require, not %q", o.pgpool)
	}
	return o, nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, err)
		}
		os.Exit(1)
	}
}

// cluster is where the harness runs: DSNs and Redis, and the local cluster
// when it started one.
type cluster struct {
	primary  string
	replicas []string
	redis    string
	local    *testcluster.Cluster
}

// run is the whole harness: cluster, data, scenarios, report.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	// progress is called from several goroutines (the local cluster starts
	// its standbys in parallel), and stderr need not be safe for concurrent
	// writes.
	var progressMu sync.Mutex
	progress := func(format string, a ...any) {
		if o.quiet {
			return
		}
		line := fmt.Sprintf("[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		progressMu.Lock()
		defer progressMu.Unlock()
		io.WriteString(stderr, line)
	}
	cl, err := setupCluster(ctx, o, progress)
	if err != nil {
		return err
	}
	if cl.local != nil {
		defer func() {
			progress("stopping the local cluster")
			if err := cl.local.Stop(); err != nil {
				fmt.Fprintln(stderr, "bench: stop cluster:", err)
			}
		}()
	}
	progress("migrating the schema")
	if err := dal.Migrate(ctx, cl.primary); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, cl.primary)
	if err != nil {
		return fmt.Errorf("bench: connect primary: %w", err)
	}
	defer conn.Close(context.Background())
	var existing int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&existing); err != nil {
		return fmt.Errorf("bench: count users: %w", err)
	}
	if existing > 0 {
		return fmt.Errorf("bench: the database already has %d users; run against an empty database (the harness loads its own data)", existing)
	}
	sc := scales[o.scale]
	progress("loading the %s data set (seed %d)", sc.Name, o.seed)
	ds, err := loadDataset(ctx, conn, sc, o.seed, progress)
	if err != nil {
		return err
	}
	if err := waitReplicas(ctx, cl, conn); err != nil {
		return err
	}
	h, err := newHarness(ctx, o, cl, ds, progress)
	if err != nil {
		return err
	}
	defer h.close()
	rep, err := h.runAll(ctx)
	if err != nil {
		return err
	}
	rep.Meta.Started = h.started
	rep.Meta.Machine = machine()
	rep.Meta.CPUs = runtime.NumCPU()
	rep.Meta.Go = runtime.Version()
	rep.Meta.Scale = fmt.Sprintf("%s (%d users, %d rooms, %d events + %d in the deep room, %d private messages)",
		sc.Name, sc.Users, sc.Rooms, sc.Events, sc.Deep, sc.Messages)
	rep.Meta.Duration = o.duration.String()
	rep.Meta.Seed = o.seed
	_ = conn.QueryRow(ctx, "SHOW server_version").Scan(&rep.Meta.PostgreSQL)
	rep.Meta.Redis = h.redisVersion(ctx)
	rep.fillRatios()
	rep.Targets = evaluateTargets(rep)
	rep.writeTable(stdout)
	if err := rep.writeFiles(o.out); err != nil {
		return err
	}
	progress("wrote %s/latest.json and %s/report.html", o.out, o.out)
	return nil
}

func setupCluster(ctx context.Context, o options, progress func(string, ...any)) (*cluster, error) {
	if o.primary != "" {
		cl := &cluster{primary: o.primary, redis: o.redis}
		for _, r := range strings.Split(o.replicas, ",") {
			if r = strings.TrimSpace(r); r != "" {
				cl.replicas = append(cl.replicas, r)
			}
		}
		progress("using the cluster at %s (%d replicas)", dal.RedactDSN(o.primary), len(cl.replicas))
		return cl, nil
	}
	progress("starting a local cluster: PostgreSQL primary + 2 hot standbys + Redis")
	// Every variant keeps its own pools open (seven pools of up to
	// -concurrency connections per node, pgpool's children, relays, probes):
	// more than PostgreSQL's default 100 connections, and a refused
	// connection (53300) would open a variant's breaker mid-run.
	c, err := testcluster.Start(ctx, testcluster.Options{Logf: progress, Settings: map[string]string{"max_connections": "400"}})
	if err != nil {
		return nil, fmt.Errorf("bench: start local cluster: %w", err)
	}
	return &cluster{primary: c.PrimaryDSN(), replicas: c.ReplicaDSNs(), redis: c.RedisAddr(), local: c}, nil
}

// waitReplicas waits until every replica has replayed the loaded data, so no
// variant measures a replica still catching up.
func waitReplicas(ctx context.Context, cl *cluster, primary *pgx.Conn) error {
	if cl.local != nil {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := cl.local.WaitReplicated(wctx); err != nil {
			return fmt.Errorf("bench: wait for replicas: %w", err)
		}
		return nil
	}
	var target string
	if err := primary.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&target); err != nil {
		return fmt.Errorf("bench: primary LSN: %w", err)
	}
	for _, dsn := range cl.replicas {
		rc, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("bench: connect replica %s: %w", dal.RedactDSN(dsn), err)
		}
		deadline := time.Now().Add(5 * time.Minute)
		for {
			var done bool
			err := rc.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target).Scan(&done)
			if err == nil && done {
				break
			}
			if time.Now().After(deadline) {
				rc.Close(ctx)
				return fmt.Errorf("bench: replica %s did not replay %s in time (%v)", dal.RedactDSN(dsn), target, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		rc.Close(ctx)
	}
	return nil
}

func machine() string {
	host, _ := os.Hostname()
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s/%s %s (%s)", runtime.GOOS, runtime.GOARCH, model, host)
}
