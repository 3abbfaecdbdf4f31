package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/router"
)

// ChaosConfig configures RunChaos. Cluster is required; every other zero
// field means the default documented on it.
type ChaosConfig struct {
	// Cluster is a running local cluster (its Options.Sync decides whether
	// lost writes are violations or counted losses). RunChaos migrates it.
	Cluster *testcluster.Cluster
	// Seed drives the workload's choices and the fault schedule.
	Seed uint64
	// Duration is how long the workload runs. Default 30s.
	Duration time.Duration
	// Warmup is the fault-free start. Default Duration/10, at most 3s.
	Warmup time.Duration
	// Cooldown is the fault-free end: faults are healed Cooldown before the
	// workload stops. Default Duration/6, at least 3s.
	Cooldown time.Duration
	// DALs is the number of independently opened DALs. Default 3.
	DALs int
	// Workload tunes the workload; RunChaos sets its DALs and Seed.
	Workload WorkloadConfig
	// Faults tunes the injector; RunChaos sets Cluster, Seed, Sync and
	// Epoch.
	Faults FaultConfig
	// Router is the base router config of every DAL (DSNs are set by
	// RunChaos). A nil Logger means router logs go to Logf.
	Router router.Config
	// Slack widens staleness bounds in the checker. Default DefaultSlack;
	// negative means none.
	Slack time.Duration
	// NoCache runs the DALs without the Redis cache even when the cluster
	// has Redis. With a cache (the default when Cluster.RedisAddr is set),
	// every DAL uses the cluster's Redis, every second one with the
	// in-process L1 tier; the fault kinds FaultRedisKill and
	// FaultRelayLeaderKill are added, and the final state is also checked
	// through the cache (VCacheStale).
	NoCache bool
	// Logf receives progress lines and router logs. Default: silent.
	Logf func(format string, args ...any)
	// FinalChecks run after quiescence, on a freshly opened DAL, after the
	// history check: the place for checks of parts the history does not
	// see, such as "every cached entry equals the primary" once the DAL
	// has a cache. Their violations are added to the report.
	FinalChecks []FinalCheck
}

// FinalCheck is an extra check run by RunChaos after quiescence, given
// every DAL of the run (the workload's, then a freshly opened one). It
// returns the violations it found; an error means it could not check.
type FinalCheck func(ctx context.Context, dals []*dal.DAL, h *History) ([]Violation, error)

// logWriter turns slog output into Logf lines.
type logWriter struct{ logf func(string, ...any) }

func (w logWriter) Write(p []byte) (int, error) {
	w.logf("%s", string(p[:len(p)-min(1, len(p))]))
	return len(p), nil
}

// RunChaos runs a workload through several DALs while an Injector breaks the
// cluster, heals everything, waits for quiescence, reads the final state
// with Strong consistency and checks the history. It returns the report
// (with the history) even when it found violations; an error means the run
// itself could not be completed (cluster not usable, final state
// unreadable).
func RunChaos(ctx context.Context, cfg ChaosConfig) (*Report, error) {
	if cfg.Cluster == nil {
		return nil, errors.New("integration: chaos needs a cluster")
	}
	c := cfg.Cluster
	if cfg.Duration <= 0 {
		cfg.Duration = 30 * time.Second
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = min(cfg.Duration/10, 3*time.Second)
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = max(cfg.Duration/6, 3*time.Second)
	}
	if cfg.DALs <= 0 {
		cfg.DALs = 3
	}
	switch {
	case cfg.Slack == 0:
		cfg.Slack = DefaultSlack
	case cfg.Slack < 0:
		cfg.Slack = 0
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	withCache := !cfg.NoCache && c.RedisAddr() != ""
	rep := &Report{Seed: cfg.Seed, StartedAt: time.Now(), DALs: cfg.DALs, Cache: CacheReport{Enabled: withCache}}
	if !withCache {
		rep.Cache.Note = "no cache: DALs without Redis, no cache faults, no cache-equals-primary check"
	}

	if err := dal.Migrate(ctx, c.PrimaryDSN()); err != nil {
		return nil, fmt.Errorf("integration: chaos: migrate: %w", err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		return nil, fmt.Errorf("integration: chaos: %w", err)
	}
	var slowQueries atomic.Int64
	open := func(i int) (*dal.DAL, error) {
		rc := cfg.Router
		if rc.Logger == nil {
			rc.Logger = slog.New(slog.NewTextHandler(logWriter{func(_ string, a ...any) {
				cfg.Logf("dal%d: %s", i, a[0])
			}}, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
		var replicas []string
		for _, n := range c.Nodes() {
			if n.DSN() != c.PrimaryDSN() {
				replicas = append(replicas, n.DSN())
			}
		}
		dc := dal.Config{PrimaryDSN: c.PrimaryDSN(), ReplicaDSNs: replicas,
			CursorKey: []byte("hsdal-chaos-cursor-key-0123456789"), Router: rc}
		// Slow statements are expected on 2 busy cores: count them, do not
		// flood the log.
		dc.SlowQuery.Logger = slog.New(countingHandler{&slowQueries})
		if withCache {
			dc.RedisAddr = c.RedisAddr()
			dc.Cache.L1.Enabled = i%2 == 1
		}
		return dal.Open(ctx, dc)
	}
	var dals []*dal.DAL
	defer func() {
		for _, d := range dals {
			d.Close()
		}
	}()
	for i := range cfg.DALs {
		d, err := open(i)
		if err != nil {
			return nil, fmt.Errorf("integration: chaos: open DAL %d: %w", i, err)
		}
		dals = append(dals, d)
	}
	rep.Replication = "async"
	isSync := dals[0].Router().Status().Replication.Synchronous()
	if isSync {
		rep.Replication = "sync"
	}

	wc := cfg.Workload
	wc.DALs, wc.Seed = dals, cfg.Seed
	w, err := NewWorkload(wc)
	if err != nil {
		return nil, err
	}
	rep.Users = w.cfg.Users
	if err := w.Setup(ctx); err != nil {
		return nil, err
	}
	h := w.History()
	rep.History = h

	fc := cfg.Faults
	fc.Cluster, fc.Seed, fc.Sync, fc.Epoch = c, cfg.Seed, isSync, h.Epoch()
	if fc.Logf == nil {
		fc.Logf = cfg.Logf
	}
	checks := slices.Clone(cfg.FinalChecks)
	if withCache {
		workloadDALs := slices.Clone(dals)
		fc.Extra = append(fc.Extra, cacheFaults(c, func() []*dal.DAL { return workloadDALs })...)
		checks = append([]FinalCheck{cacheConvergence(w, rep)}, checks...)
	}
	inj, err := NewInjector(fc)
	if err != nil {
		return nil, err
	}

	// Router views, sampled: how long each DAL knew no usable primary.
	monCtx, stopMon := context.WithCancel(ctx)
	noPrimary := make([]time.Duration, len(dals))
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() {
		defer monWG.Done()
		const every = 50 * time.Millisecond
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-monCtx.Done():
				return
			case <-t.C:
			}
			for i, d := range dals {
				st := d.Router().Status()
				usable := st.Primary != ""
				for _, n := range st.Nodes {
					if n.Primary && n.Breaker == "open" {
						usable = false
					}
				}
				if !usable {
					noPrimary[i] += every
				}
			}
		}
	}()

	start := time.Now()
	runCtx, stopRun := context.WithTimeout(ctx, cfg.Duration)
	defer stopRun()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.Run(runCtx)
	}()
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	go func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case <-progress.C:
				counts, _ := inj.Counts()
				cfg.Logf("chaos: %v elapsed, %d ops, faults %v", time.Since(start).Round(time.Second), w.Attempted(), counts)
			}
		}
	}()

	// Faults between Warmup and Duration-Cooldown.
	warm := time.NewTimer(cfg.Warmup)
	select {
	case <-ctx.Done():
	case <-warm.C:
	}
	faultCtx, stopFaults := context.WithDeadline(ctx, start.Add(cfg.Duration-cfg.Cooldown))
	inj.Run(faultCtx)
	stopFaults()
	healCtx, cancelHeal := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	healErr := inj.HealAll(healCtx)
	cancelHeal()
	cfg.Logf("chaos: faults healed at %v", time.Since(start).Round(time.Millisecond))
	wg.Wait()
	rep.DurationS = time.Since(start).Seconds()
	stopMon()
	monWG.Wait()
	if healErr != nil {
		return rep, fmt.Errorf("integration: chaos: heal: %w", healErr)
	}

	// Quiescence: every replica replayed everything, every router sees the
	// primary and every standby serving again.
	qctx, cancelQ := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelQ()
	if err := c.WaitReplicated(qctx); err != nil {
		return rep, fmt.Errorf("integration: chaos: quiescence: %w", err)
	}
	for i, d := range dals {
		if err := waitRouterSettled(qctx, d); err != nil {
			return rep, fmt.Errorf("integration: chaos: quiescence of DAL %d: %w", i, err)
		}
	}
	fd, err := open(len(dals))
	if err != nil {
		return rep, fmt.Errorf("integration: chaos: open final DAL: %w", err)
	}
	dals = append(dals, fd)
	final, err := w.ReadFinal(qctx, fd)
	if err != nil {
		return rep, err
	}

	faults := inj.Log()
	res := Check(h, final, CheckConfig{Slack: cfg.Slack, AllowLoss: !isSync, PrimaryKills: inj.PrimaryKills()})
	rep.Faults, rep.FaultErrors = inj.Counts()
	rep.FaultLog = faults
	rep.fill(h, faults, 2*time.Second)
	if rep.DurationS > 0 {
		rep.OpsPerSec = float64(rep.Attempted) / rep.DurationS
	}
	rep.Violations, rep.ViolationSamples, rep.Anomalies = res.Violations, res.Samples, res.Anomalies
	for _, fc := range checks {
		vs, err := fc(qctx, dals, h)
		if err != nil {
			return rep, fmt.Errorf("integration: chaos: final check: %w", err)
		}
		for _, v := range vs {
			rep.Violations[v.Kind]++
			rep.ViolationSamples = append(rep.ViolationSamples, v)
		}
	}
	rep.LostAtFailover, rep.ObservationsChecked = res.LostAtFailover, res.Observations
	if withCache {
		rep.Cache.Stats, _ = cacheStats(dals)
		for _, d := range dals {
			rep.Cache.RelayApplied = append(rep.Cache.RelayApplied, d.RelayStatus().Applied)
		}
	}
	rep.TokenErrors = w.TokenErrors()
	rep.SlowQueries = slowQueries.Load()
	for _, d := range noPrimary {
		rep.RouterNoPrimaryMS = append(rep.RouterNoPrimaryMS, d.Milliseconds())
	}
	return rep, nil
}

// waitRouterSettled polls d's router status until it has a primary with a
// closed breaker and every other reachable node serves reads.
func waitRouterSettled(ctx context.Context, d *dal.DAL) error {
	var last router.Status
	for {
		last = d.Router().Status()
		ok := last.Primary != "" && !last.SplitBrain
		for _, n := range last.Nodes {
			if n.Breaker != "closed" || !n.Reachable || !n.Primary && !n.Serving {
				ok = false
			}
		}
		if ok {
			return nil
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: router status %+v", ctx.Err(), last)
		case <-t.C:
		}
	}
}

var _ io.Writer = logWriter{}

// countingHandler is a slog.Handler that only counts records.
type countingHandler struct{ n *atomic.Int64 }

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(context.Context, slog.Record) error {
	h.n.Add(1)
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }
