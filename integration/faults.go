package integration

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hsdal/hsdal/internal/testcluster"
)

// Built-in fault kinds.
const (
	// FaultReplicaKill: kill -9 a hot standby, restart it after the hold.
	FaultReplicaKill = "replica_kill"
	// FaultReplicaPause: pause WAL replay on a standby, resume after the
	// hold (the standby keeps receiving WAL, its data stays frozen).
	FaultReplicaPause = "replica_pause"
	// FaultPrimaryFailover: kill -9 the primary, promote a standby after a
	// short detection delay, re-point the other standbys at it; after the
	// hold, re-attach the old primary as a standby (pg_rewind or a fresh
	// base backup).
	FaultPrimaryFailover = "primary_failover"
	// FaultTerminateBackends: pg_terminate_backend of 1-5 random
	// application backends on a random running node.
	FaultTerminateBackends = "terminate_backends"
)

// BuiltinFaults lists the built-in kinds, in a fixed order.
var BuiltinFaults = []string{FaultReplicaKill, FaultReplicaPause, FaultPrimaryFailover, FaultTerminateBackends}

// ExtraFault is a fault kind the injector does not implement itself, such as
// Redis or invalidation-relay faults once the DAL has a cache. Inject breaks
// something and returns a description; Heal (may be nil for instant faults)
// repairs it. Both run on the injector's goroutine.
type ExtraFault struct {
	Kind   string
	Inject func(ctx context.Context) (detail string, err error)
	Heal   func(ctx context.Context) error
}

// FaultConfig configures an Injector. Cluster is required; every other zero
// field means the default documented on it.
type FaultConfig struct {
	Cluster *testcluster.Cluster
	// Seed makes the schedule (kinds, targets, gaps, holds) reproducible.
	Seed uint64
	// Kinds are the enabled built-in kinds. Default all of BuiltinFaults.
	Kinds []string
	// Extra are additional fault kinds, always enabled.
	Extra []ExtraFault
	// Sync says the cluster runs synchronous quorum replication: the
	// injector then never leaves the primary without a streaming standby
	// (except inside a failover), or every commit would block.
	Sync bool
	// MinGap, MaxGap bound the pause between two injections. Default 1s, 3s.
	MinGap, MaxGap time.Duration
	// MinHold, MaxHold bound how long a fault lasts before it is healed.
	// Default 1s, 4s.
	MinHold, MaxHold time.Duration
	// MinDetect, MaxDetect bound the delay between killing the primary and
	// promoting a standby (the failure detector's time). Default 200ms, 1s.
	MinDetect, MaxDetect time.Duration
	// Epoch is the time FaultEvent offsets are measured from (use the
	// history's). Default: when NewInjector runs.
	Epoch time.Time
	// Logf receives one line per injection and heal. Default: silent.
	Logf func(format string, args ...any)
}

// FaultEvent is one injected fault. Offsets are from FaultConfig.Epoch.
type FaultEvent struct {
	Kind   string `json:"kind"`
	Node   string `json:"node,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Start: when the injection began.
	Start time.Duration `json:"start_ns"`
	// Killed: for a failover, when the kill -9 of the primary had completed
	// (a write that started earlier may still have committed on it).
	Killed time.Duration `json:"killed_ns,omitempty"`
	// Injected: when the fault was fully in place (for a failover: new
	// primary promoted and the other standbys following it).
	Injected time.Duration `json:"injected_ns"`
	// Healed: when the repair finished; 0 if never healed.
	Healed time.Duration `json:"healed_ns,omitempty"`
	Err    string        `json:"err,omitempty"`
}

// active is an injected fault awaiting its heal.
type active struct {
	ev     int // index in the log
	kind   string
	node   string
	healAt time.Time
	heal   func(ctx context.Context) error
}

// Injector injects faults into a testcluster on a seeded random schedule.
// Create it with NewInjector, call Run once, then HealAll, from one
// goroutine; Log, Counts and PrimaryKills are safe to call concurrently.
type Injector struct {
	cfg   FaultConfig
	c     *testcluster.Cluster
	rng   *rand.Rand
	kinds []string
	extra map[string]ExtraFault

	mu     sync.Mutex // guards log
	log    []FaultEvent
	active []*active
	paused map[string]bool
	killed map[string]bool
	former string // old primary awaiting Rejoin
}

// NewInjector validates cfg and fills its defaults.
func NewInjector(cfg FaultConfig) (*Injector, error) {
	if cfg.Cluster == nil {
		return nil, errors.New("integration: injector needs a cluster")
	}
	if len(cfg.Kinds) == 0 {
		cfg.Kinds = BuiltinFaults
	}
	for _, k := range cfg.Kinds {
		if !slices.Contains(BuiltinFaults, k) {
			return nil, fmt.Errorf("integration: unknown fault kind %q", k)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.MinGap, time.Second)
	def(&cfg.MaxGap, 3*time.Second)
	def(&cfg.MinHold, time.Second)
	def(&cfg.MaxHold, 4*time.Second)
	def(&cfg.MinDetect, 200*time.Millisecond)
	def(&cfg.MaxDetect, time.Second)
	if cfg.MaxGap < cfg.MinGap || cfg.MaxHold < cfg.MinHold || cfg.MaxDetect < cfg.MinDetect {
		return nil, errors.New("integration: fault config: a maximum below its minimum")
	}
	if cfg.Epoch.IsZero() {
		cfg.Epoch = time.Now()
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	in := &Injector{cfg: cfg, c: cfg.Cluster, rng: rand.New(rand.NewPCG(cfg.Seed, 0x5eed)),
		kinds: slices.Clone(cfg.Kinds), extra: map[string]ExtraFault{}, paused: map[string]bool{}, killed: map[string]bool{}}
	for _, x := range cfg.Extra {
		if x.Kind == "" || x.Inject == nil {
			return nil, errors.New("integration: extra fault needs a kind and an Inject func")
		}
		in.extra[x.Kind] = x
		in.kinds = append(in.kinds, x.Kind)
	}
	return in, nil
}

func (in *Injector) since() time.Duration { return time.Since(in.cfg.Epoch) }

func (in *Injector) between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(in.rng.Int64N(int64(hi-lo)))
}

// Log returns the faults injected so far.
func (in *Injector) Log() []FaultEvent {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.log)
}

// PrimaryKills returns the offsets at which the primary was known dead
// (FaultEvent.Killed of each failover).
func (in *Injector) PrimaryKills() []time.Duration {
	var out []time.Duration
	for _, e := range in.Log() {
		if e.Kind == FaultPrimaryFailover && e.Killed > 0 {
			out = append(out, e.Killed)
		}
	}
	return out
}

// Counts returns the number of successfully injected faults by kind (every
// enabled kind present), and the number of injections or heals that failed.
func (in *Injector) Counts() (map[string]int, int) {
	counts := map[string]int{}
	for _, k := range in.kinds {
		counts[k] = 0
	}
	failed := 0
	for _, e := range in.Log() {
		if e.Err != "" {
			failed++
			if e.Injected == 0 {
				continue
			}
		}
		counts[e.Kind]++
	}
	return counts, failed
}

func (in *Injector) record(e FaultEvent) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.log = append(in.log, e)
	return len(in.log) - 1
}

func (in *Injector) update(i int, f func(e *FaultEvent)) {
	in.mu.Lock()
	f(&in.log[i])
	in.mu.Unlock()
}

// Run injects faults until ctx ends: first every enabled kind once in a
// seeded random order, then kinds at random, each only when the topology
// allows it (see FaultConfig.Sync), healing each after its hold. It returns
// when ctx ends, leaving the faults still active for HealAll.
func (in *Injector) Run(ctx context.Context) {
	queue := slices.Clone(in.kinds)
	in.rng.Shuffle(len(queue), func(i, j int) { queue[i], queue[j] = queue[j], queue[i] })
	next := time.Now().Add(in.between(in.cfg.MinGap, in.cfg.MaxGap))
	for {
		wake := next
		for _, a := range in.active {
			if a.healAt.Before(wake) {
				wake = a.healAt
			}
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		in.healDue(ctx, time.Now())
		if time.Now().Before(next) {
			continue
		}
		kind := ""
		for i, k := range queue {
			if in.feasible(k) {
				kind = k
				queue = slices.Delete(queue, i, i+1)
				break
			}
		}
		if kind == "" {
			var ok []string
			for _, k := range in.kinds {
				if in.feasible(k) {
					ok = append(ok, k)
				}
			}
			if len(ok) > 0 {
				kind = ok[in.rng.IntN(len(ok))]
			}
		}
		if kind != "" {
			in.inject(ctx, kind)
		}
		next = time.Now().Add(in.between(in.cfg.MinGap, in.cfg.MaxGap))
	}
}

// healDue heals every active fault whose time has come. A failed heal is
// retried a second later.
func (in *Injector) healDue(ctx context.Context, now time.Time) {
	var keep []*active
	for _, a := range in.active {
		if a.healAt.After(now) {
			keep = append(keep, a)
			continue
		}
		if !in.healOne(ctx, a) {
			a.healAt = time.Now().Add(time.Second)
			keep = append(keep, a)
		}
	}
	in.active = keep
}

func (in *Injector) healOne(ctx context.Context, a *active) bool {
	// A heal started is finished even when Run's ctx ends meanwhile.
	hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	err := a.heal(hctx)
	cancel()
	if err != nil {
		in.cfg.Logf("chaos: heal %s %s failed: %v", a.kind, a.node, err)
		in.update(a.ev, func(e *FaultEvent) { e.Err = "heal: " + err.Error() })
		return false
	}
	in.update(a.ev, func(e *FaultEvent) { e.Healed = in.since() })
	switch a.kind {
	case FaultReplicaKill:
		delete(in.killed, a.node)
	case FaultReplicaPause:
		delete(in.paused, a.node)
	case FaultPrimaryFailover:
		in.former = ""
	}
	in.cfg.Logf("chaos: healed %s %s", a.kind, a.node)
	return true
}

// HealAll repairs every active fault now (start killed nodes, resume
// replay, re-attach a former primary). It keeps going past failures and
// returns them joined.
func (in *Injector) HealAll(ctx context.Context) error {
	var errs []error
	for _, a := range in.active {
		if !in.healOne(ctx, a) {
			errs = append(errs, fmt.Errorf("heal %s %s failed", a.kind, a.node))
		}
	}
	in.active = nil
	return errors.Join(errs...)
}

// standbys returns the running standbys that are neither killed nor paused
// (paused ones when withPaused), excluding except.
func (in *Injector) standbys(withPaused bool, except string) []string {
	var out []string
	for _, n := range in.c.Nodes() {
		if n.Name == except || n.Role() != testcluster.RoleStandby || !n.Running() || in.killed[n.Name] {
			continue
		}
		if in.paused[n.Name] && !withPaused {
			continue
		}
		out = append(out, n.Name)
	}
	return out
}

func (in *Injector) isActive(kind string) bool {
	for _, a := range in.active {
		if a.kind == kind {
			return true
		}
	}
	return false
}

// feasible reports whether kind can be injected now without breaking the
// rules: at most one node down at a time, no failover while another node
// fault is active, and (sync) a streaming standby always left.
func (in *Injector) feasible(kind string) bool {
	switch kind {
	case FaultReplicaPause:
		return len(in.standbys(false, "")) > 0
	case FaultReplicaKill:
		if len(in.killed) > 0 || in.former != "" {
			return false
		}
		for _, s := range in.standbys(false, "") {
			if !in.cfg.Sync || len(in.standbys(true, s)) > 0 {
				return true
			}
		}
		return false
	case FaultPrimaryFailover:
		return len(in.active) == 0 && in.c.Primary() != nil && len(in.standbys(false, "")) > 0
	case FaultTerminateBackends:
		return true
	}
	if _, ok := in.extra[kind]; ok {
		return !in.isActive(kind)
	}
	return false
}

func (in *Injector) pick(names []string) string { return names[in.rng.IntN(len(names))] }

func (in *Injector) inject(ctx context.Context, kind string) {
	// An injection started is finished even when Run's ctx ends meanwhile
	// (a half-made failover would leave the cluster without a primary).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
	defer cancel()
	hold := in.between(in.cfg.MinHold, in.cfg.MaxHold)
	ev := FaultEvent{Kind: kind, Start: in.since()}
	var (
		node string
		heal func(context.Context) error
		err  error
	)
	switch kind {
	case FaultReplicaPause:
		node = in.pick(in.standbys(false, ""))
		err = in.c.PauseReplay(ctx, node)
		if err == nil {
			in.paused[node] = true
			heal = func(ctx context.Context) error { return in.c.ResumeReplay(ctx, node) }
		}
	case FaultReplicaKill:
		var cand []string
		for _, s := range in.standbys(false, "") {
			if !in.cfg.Sync || len(in.standbys(true, s)) > 0 {
				cand = append(cand, s)
			}
		}
		node = in.pick(cand)
		err = in.c.KillNode(ctx, node)
		if err == nil {
			in.killed[node] = true
			heal = func(ctx context.Context) error { return in.c.StartNode(ctx, node) }
		}
	case FaultPrimaryFailover:
		node, ev.Detail, heal, err = in.failover(ctx, &ev)
	case FaultTerminateBackends:
		node, ev.Detail, err = in.terminate(ctx)
	default:
		x := in.extra[kind]
		ev.Detail, err = x.Inject(ctx)
		if err == nil && x.Heal != nil {
			heal = x.Heal
		}
	}
	ev.Node = node
	ev.Injected = in.since()
	if err != nil {
		ev.Err = err.Error()
		if kind != FaultPrimaryFailover || ev.Detail == "" {
			ev.Injected = 0
		}
		in.cfg.Logf("chaos: inject %s %s failed: %v", kind, node, err)
	} else {
		in.cfg.Logf("chaos: injected %s %s %s (hold %v)", kind, node, ev.Detail, hold.Round(time.Millisecond))
	}
	i := in.record(ev)
	if heal == nil {
		if err == nil {
			in.update(i, func(e *FaultEvent) { e.Healed = e.Injected })
		}
		return
	}
	in.active = append(in.active, &active{ev: i, kind: kind, node: node, healAt: time.Now().Add(hold), heal: heal})
}

// failover kills the primary, promotes a standby after the detection delay
// and re-points the other standbys; the returned heal re-attaches the old
// primary.
func (in *Injector) failover(ctx context.Context, ev *FaultEvent) (string, string, func(context.Context) error, error) {
	old := in.c.Primary().Name
	if err := in.c.KillNode(ctx, old); err != nil {
		return old, "", nil, fmt.Errorf("kill primary: %w", err)
	}
	ev.Killed = in.since()
	in.former = old
	detect := in.between(in.cfg.MinDetect, in.cfg.MaxDetect)
	t := time.NewTimer(detect)
	select {
	case <-ctx.Done():
		t.Stop()
	case <-t.C:
	}
	// Like a failover manager, promote the standby that received the most
	// WAL: with quorum commit only some standby is sure to hold each
	// acknowledged commit, and promoting another would lose it.
	target, err := in.mostAdvanced(ctx)
	if err != nil {
		return old, "", in.rejoinOld(old, ""), err
	}
	pctx := ctx
	if err := in.c.Promote(pctx, target); err != nil {
		return old, "promote " + target, in.rejoinOld(old, target), fmt.Errorf("promote %s: %w", target, err)
	}
	detail := fmt.Sprintf("promoted %s after %v", target, detect.Round(time.Millisecond))
	for _, s := range in.standbys(true, target) {
		if err := in.c.Rejoin(pctx, s, target); err != nil {
			return old, detail, in.rejoinOld(old, target), fmt.Errorf("re-point %s at %s: %w", s, target, err)
		}
		delete(in.paused, s) // a rejoined standby restarts unpaused
		detail += ", re-pointed " + s
	}
	return old, detail, in.rejoinOld(old, target), nil
}

func (in *Injector) rejoinOld(old, target string) func(context.Context) error {
	return func(ctx context.Context) error {
		if target == "" {
			p := in.c.Primary()
			if p == nil || p.Name == old {
				return fmt.Errorf("no new primary to re-attach %s to", old)
			}
			target = p.Name
		}
		return in.c.Rejoin(ctx, old, target)
	}
}

// mostAdvanced returns the running standby with the highest received WAL
// position (ties broken at random).
func (in *Injector) mostAdvanced(ctx context.Context) (string, error) {
	names := in.standbys(true, "")
	in.rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	best, bestLSN := "", ""
	var errs []error
	for _, name := range names {
		var lsn string
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := pgx.Connect(qctx, in.c.Node(name).SuperDSN())
		if err == nil {
			// Zero-padded so that text order is LSN order.
			err = conn.QueryRow(qctx, `SELECT lpad(split_part(l, '/', 1), 8, '0') || lpad(split_part(l, '/', 2), 8, '0')
				FROM (SELECT coalesce(greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::text AS l) s`).Scan(&lsn)
			conn.Close(context.WithoutCancel(qctx))
		}
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			continue
		}
		if best == "" || lsn > bestLSN {
			best, bestLSN = name, lsn
		}
	}
	if best == "" {
		return "", fmt.Errorf("no standby to promote: %w", errors.Join(errs...))
	}
	return best, nil
}

// terminate ends 1-5 random application backends on a random running node.
func (in *Injector) terminate(ctx context.Context) (string, string, error) {
	var nodes []*testcluster.Node
	for _, n := range in.c.Nodes() {
		if n.Running() && n.Role() != testcluster.RoleFormer {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return "", "", errors.New("no running node")
	}
	n := nodes[in.rng.IntN(len(nodes))]
	want := 1 + in.rng.IntN(5)
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(tctx, n.SuperDSN())
	if err != nil {
		return n.Name, "", fmt.Errorf("connect as superuser: %w", err)
	}
	defer conn.Close(context.WithoutCancel(tctx))
	var killed, of int
	q := func() error {
		return conn.QueryRow(tctx, `
WITH app AS (
    SELECT pid FROM pg_stat_activity
    WHERE usename = 'hsdal' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
), victims AS (SELECT pid FROM app ORDER BY random() LIMIT $1)
SELECT (SELECT count(*) FROM victims WHERE pg_terminate_backend(pid))::int, (SELECT count(*) FROM app)::int`, want).Scan(&killed, &of)
	}
	// On a standby the query itself may be cancelled by a recovery conflict.
	for range 5 {
		var pgErr *pgconn.PgError
		if err = q(); err == nil || !errors.As(err, &pgErr) || pgErr.Code != "40001" {
			break
		}
	}
	if err != nil {
		return n.Name, "", fmt.Errorf("terminate: %w", err)
	}
	return n.Name, fmt.Sprintf("terminated %d of %d app backends on the %s", killed, of, n.Role()), nil
}
