package integration_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hsdal/hsdal/integration"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// The short run is part of `make test`. A long run:
//
//	HSDAL_CHAOS_DURATION=10m go test -run TestChaos -timeout 30m -v ./integration
//	go test -run TestChaos -timeout 30m -v ./integration -chaos.duration=10m
//
// writes its report to integration/results/. HSDAL_CHAOS_DUMP=1 also writes
// the whole history next to the report (it is written anyway when the run
// finds violations).
var (
	flagDuration = flag.Duration("chaos.duration", 0, "chaos workload duration; a long run writes its report to integration/results (env HSDAL_CHAOS_DURATION)")
	flagSeed     = flag.Uint64("chaos.seed", 0, "chaos seed; 0 picks one from the clock (env HSDAL_CHAOS_SEED)")
	flagAsync    = flag.Bool("chaos.async", false, "asynchronous replication: lost writes are counted, not violations (env HSDAL_CHAOS_ASYNC=1)")
	flagSlack    = flag.Duration("chaos.slack", 0, "staleness slack of the checker; 0 means integration.DefaultSlack, negative none (env HSDAL_CHAOS_SLACK)")
	flagOut      = flag.String("chaos.out", "", "report path (env HSDAL_CHAOS_OUT); default integration/results/ for long runs, a temp dir for the short one")
)

// shortRun is the workload duration of the run `make test` includes; with
// cluster start and the final check the test stays under 60 s.
const shortRun = 30 * time.Second

type chaosParams struct {
	duration time.Duration
	long     bool
	seed     uint64
	async    bool
	slack    time.Duration
	out      string
}

func params(t *testing.T) chaosParams {
	t.Helper()
	p := chaosParams{duration: *flagDuration, seed: *flagSeed, async: *flagAsync, slack: *flagSlack, out: *flagOut}
	if v := os.Getenv("HSDAL_CHAOS_SLACK"); v != "" && p.slack == 0 {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HSDAL_CHAOS_SLACK=%q: %v", v, err)
		}
		p.slack = d
	}
	if v := os.Getenv("HSDAL_CHAOS_DURATION"); v != "" && p.duration == 0 {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HSDAL_CHAOS_DURATION=%q: %v", v, err)
		}
		p.duration = d
	}
	if v := os.Getenv("HSDAL_CHAOS_SEED"); v != "" && p.seed == 0 {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("HSDAL_CHAOS_SEED=%q: %v", v, err)
		}
		p.seed = s
	}
	if os.Getenv("HSDAL_CHAOS_ASYNC") == "1" {
		p.async = true
	}
	if v := os.Getenv("HSDAL_CHAOS_OUT"); v != "" && p.out == "" {
		p.out = v
	}
	p.long = p.duration > 0
	if !p.long {
		p.duration = shortRun
	}
	if p.seed == 0 {
		p.seed = uint64(time.Now().UnixNano())
	}
	if p.out == "" {
		if p.long {
			mode := "sync"
			if p.async {
				mode = "async"
			}
			p.out = filepath.Join("results", fmt.Sprintf("chaos-%s-%s-%s-seed%d.json",
				mode, p.duration, time.Now().UTC().Format("20060102T150405Z"), p.seed))
		} else {
			p.out = filepath.Join(t.TempDir(), "chaos-short.json")
		}
	}
	return p
}

// TestChaos drives a homeserver workload through three DALs sharing one
// Redis cache while replicas are killed and paused, the primary is killed
// and a standby promoted (the old primary re-attached later), backends are
// terminated, Redis is killed and restarted and the invalidation relay's
// leader loses its session; then checks the history (integration.Check)
// and the cache against the primary, and requires zero violations. The
// cluster runs synchronous quorum replication, so no acknowledged write may
// be lost.
func TestChaos(t *testing.T) {
	p := params(t)
	t.Logf("chaos seed %d (rerun with HSDAL_CHAOS_SEED=%d), duration %v, async %v", p.seed, p.seed, p.duration, p.async)
	c := testcluster.StartTB(t, testcluster.Options{
		Sync: !p.async,
		// Short, so replay cancels conflicting standby queries and the
		// router's recovery-conflict retries are exercised too.
		Settings: map[string]string{"max_standby_streaming_delay": "100ms", "max_standby_archive_delay": "100ms"},
		Logf:     t.Logf,
	})
	var faults integration.FaultConfig
	if !p.long {
		// Dense enough that every fault kind shows up in 30 s.
		faults.MinGap, faults.MaxGap = 300*time.Millisecond, 1500*time.Millisecond
		faults.MinHold, faults.MaxHold = 500*time.Millisecond, 2500*time.Millisecond
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.duration+10*time.Minute)
	defer cancel()
	rep, err := integration.RunChaos(ctx, integration.ChaosConfig{
		Cluster:  c,
		Seed:     p.seed,
		Duration: p.duration,
		Slack:    p.slack,
		Logf:     t.Logf,
		Faults:   faults,
	})
	if rep != nil && rep.History != nil && (err != nil || rep.ViolationTotal() > 0 || os.Getenv("HSDAL_CHAOS_DUMP") == "1") {
		path := p.out + ".history.json"
		if b, merr := json.Marshal(rep.History); merr == nil && os.WriteFile(path, b, 0o644) == nil {
			t.Logf("history written to %s", path)
		}
	}
	if err != nil {
		t.Fatalf("chaos run: %v", err)
	}
	if werr := rep.WriteJSON(p.out); werr != nil {
		t.Errorf("write report: %v", werr)
	} else {
		t.Logf("report written to %s", p.out)
	}
	t.Log("\n" + rep.Summary())
	for kind, msgs := range rep.ErrorSamples {
		for _, m := range msgs {
			t.Logf("error sample %s: %s", kind, m)
		}
	}

	for _, v := range rep.ViolationSamples {
		b, _ := json.MarshalIndent(v, "", "  ")
		t.Errorf("violation: %s", b)
	}
	if n := rep.ViolationTotal(); n > 0 {
		t.Errorf("%d violations: %v", n, rep.Violations)
	}
	if rep.TokenErrors != 0 {
		t.Errorf("%d carried tokens did not decode", rep.TokenErrors)
	}
	if rep.FaultErrors != 0 {
		t.Errorf("%d fault injections or heals failed (see fault_log in %s)", rep.FaultErrors, p.out)
	}
	for kind, n := range rep.Faults {
		if n == 0 {
			t.Errorf("fault kind %s was never injected", kind)
		}
	}
	if rep.Acknowledged == 0 || rep.ReadsOK == 0 {
		t.Errorf("the workload did nothing useful: %d writes acknowledged, %d reads answered", rep.Acknowledged, rep.ReadsOK)
	}
	if p.long {
		total := 0
		for _, n := range rep.Faults {
			total += n
		}
		t.Logf("long run: %d faults in %.0fs", total, rep.DurationS)
	}
}
