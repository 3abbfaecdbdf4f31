package integration_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// waitFor polls f every 50ms until it returns nil or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, d, err)
		}
		tm := time.NewTimer(50 * time.Millisecond)
		<-tm.C
	}
}

// TestReplicaReadsSurviveSecondPrimaryLoss is the reduced repro of what the
// chaos run found at its second failover, kept as a regression test: while
// the primary is down, reads must continue on the replicas (DESIGN.md,
// "Faults and what users see"). That held at the first failover only:
// after one failover and rejoin, a standby whose WAL receiver stopped (its
// upstream died) reported the timeline of its last restartpoint, older than
// the one it replays, so the router dropped every standby from the read set
// and every read failed with ErrUnavailable until a standby was promoted.
// Fixed in the router by keeping a standby's highest known timeline.
func TestReplicaReadsSurviveSecondPrimaryLoss(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{NoRedis: true, Logf: t.Logf})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := dal.Migrate(ctx, c.PrimaryDSN()); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, n := range c.Nodes() {
		all = append(all, n.DSN())
	}
	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: all[0], ReplicaDSNs: all[1:], DisableQueryTracer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const user = "@repro:chaos.test"
	if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: user}); err != nil {
		t.Fatal(err)
	}

	// readsDuringOutage kills the primary and reads with bounded staleness
	// (no session) until a standby would have to be promoted.
	readsDuringOutage := func(round int) {
		t.Helper()
		if err := c.WaitReplicated(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, "router sees every standby", func() error {
			st := d.Router().Status()
			for _, n := range st.Nodes {
				if !n.Primary && !n.Serving {
					return fmt.Errorf("%s not serving: %+v", n.Name, st)
				}
			}
			return nil
		})
		// Flush connections the pools still hold to nodes restarted since
		// (a pooled connection idle for less than a second is handed out
		// unchecked; its failure is retried on the primary while there is
		// one). That is a separate issue; this test is about the timeline.
		for range 100 {
			if _, err := d.Users.GetUser(ctx, user, router.BoundedStaleness(time.Hour)); err != nil {
				t.Fatalf("warm-up read with the primary up: %v", err)
			}
		}
		old := c.Primary().Name
		if err := c.KillNode(ctx, old); err != nil {
			t.Fatal(err)
		}
		// Give the probers time to notice (ProbeInterval 100ms).
		waitFor(t, 10*time.Second, "router notices the dead primary", func() error {
			if p := d.Router().Status().Primary; p != "" {
				return fmt.Errorf("still primary: %s", p)
			}
			return nil
		})
		failures := 0
		var last error
		var lastStatus router.Status
		for range 20 {
			_, err := d.Users.GetUser(ctx, user, router.BoundedStaleness(time.Hour))
			if err != nil {
				failures++
				last = err
				lastStatus = d.Router().Status()
			}
		}
		if failures > 0 {
			t.Errorf("round %d: %d of 20 bounded-staleness reads failed while the primary was down (replicas up): %v\nrouter status: %+v",
				round, failures, last, lastStatus)
		}
		var target string
		for _, n := range c.Nodes() {
			if n.Role() == testcluster.RoleStandby {
				target = n.Name
				break
			}
		}
		if err := c.Promote(ctx, target); err != nil {
			t.Fatal(err)
		}
		for _, n := range c.Nodes() {
			if n.Name != target {
				if err := c.Rejoin(ctx, n.Name, target); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitFor(t, 30*time.Second, "writes on the new primary", func() error {
			_, _, err := d.Users.UpdateProfile(ctx, user, repos.ProfileUpdate{})
			if errors.Is(err, router.ErrUnavailable) {
				return err
			}
			return nil
		})
	}
	readsDuringOutage(1)
	readsDuringOutage(2)
}

// TestCacheSharedLoadKeepsStalenessBound is the reduced repro of the stale
// reads the 10-minute chaos run with the cache found (15 stale_read
// violations, all on reads without a session): two concurrent reads of one
// cached entity with different staleness bounds share one load (the
// cache's per-key singleflight), so the read with the tight bound gets what
// the other one loaded from a replica that only its loose bound allowed.
// Here one replica is paused; a read with a 1-hour bound (served by the
// paused replica) and a read with a 1ns bound (served by the primary) of
// the same profile run together right after a write; the second must see
// that write, every time.
func TestCacheSharedLoadKeepsStalenessBound(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{Replicas: 1, Logf: t.Logf})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := dal.Migrate(ctx, c.PrimaryDSN()); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: c.PrimaryDSN(), ReplicaDSNs: c.ReplicaDSNs(),
		RedisAddr: c.RedisAddr(), DisableQueryTracer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const user = "@shared:chaos.test"
	name := func(i int) *string { s := fmt.Sprintf("v%d", i); return &s }
	if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: user, DisplayName: name(0)}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "router sees the standby", func() error {
		for _, n := range d.Router().Status().Nodes {
			if !n.Primary && !n.Serving {
				return fmt.Errorf("%s not serving", n.Name)
			}
		}
		return nil
	})
	if err := c.PauseReplay(ctx, c.Nodes()[1].Name); err != nil {
		t.Fatal(err)
	}
	const rounds = 200
	stale, looseFromReplica := 0, 0
	var example string
	for i := 1; i <= rounds; i++ {
		if _, _, err := d.Users.UpdateProfile(ctx, user, repos.ProfileUpdate{DisplayName: name(i)}); err != nil {
			t.Fatal(err)
		}
		var loose, tight repos.User
		var lerr, terr error
		done := make(chan struct{})
		go func() {
			defer close(done)
			loose, lerr = d.Users.GetUser(ctx, user, router.BoundedStaleness(time.Hour))
		}()
		runtime.Gosched()
		tight, terr = d.Users.GetUser(ctx, user, router.BoundedStaleness(time.Nanosecond))
		<-done
		if lerr != nil || terr != nil {
			t.Fatalf("round %d: loose read: %v, tight read: %v", i, lerr, terr)
		}
		if *loose.DisplayName != *name(i) {
			looseFromReplica++
		}
		if *tight.DisplayName != *name(i) {
			stale++
			example = fmt.Sprintf("round %d: BoundedStaleness(1ns) read returned %s after %s was acknowledged", i, *tight.DisplayName, *name(i))
		}
	}
	t.Logf("%d of %d loose reads came from the paused replica; %d tight reads were stale", looseFromReplica, rounds, stale)
	if stale > 0 {
		t.Errorf("%d of %d BoundedStaleness(1ns) reads returned data older than a write acknowledged before they began (e.g. %s)",
			stale, rounds, example)
	}
}
