package router_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"
)

func TestBoundedStalenessSkipsPausedReplica(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS stale (k int PRIMARY KEY, v bigint NOT NULL)")
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	paused := standbyNames(cluster)[0]
	pausedAddr := nodeAddr(cluster.Node(paused))
	pauseReplay(t, cluster, paused)

	// Keep the primary moving, so the paused replica falls behind in time.
	wctx, stopWriter := context.WithCancel(ctx)
	var writer sync.WaitGroup
	writer.Add(1)
	go func() {
		defer writer.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := int64(0); wctx.Err() == nil; i++ {
			if _, err := setValue(wctx, r, "stale", 1, i); err != nil && wctx.Err() == nil {
				t.Errorf("writer: %v", err)
				return
			}
			select {
			case <-wctx.Done():
			case <-tick.C:
			}
		}
	}()
	defer func() { stopWriter(); writer.Wait() }()

	const bound = 600 * time.Millisecond
	lagOf := func(name string) (time.Duration, bool) {
		for _, n := range r.Status().Nodes {
			if n.Name == name {
				return n.Lag, n.LagKnown
			}
		}
		return 0, false
	}
	waitFor(t, 30*time.Second, "paused replica to lag past the bound", func() bool {
		lag, known := lagOf(pausedAddr)
		return !known || lag > 2*bound
	})
	var onOther, onPrimary int
	for range 200 {
		_, info, err := readValue(ctx, r, router.BoundedStaleness(bound), "stale", 1)
		if err != nil {
			t.Fatal(err)
		}
		if info.Node == pausedAddr {
			lag, _ := lagOf(pausedAddr)
			t.Fatalf("bounded-staleness(%v) read served by the paused replica (lag now %v)", bound, lag)
		}
		if info.Primary {
			onPrimary++
		} else {
			onOther++
		}
	}
	if onOther == 0 {
		t.Fatalf("no read went to the healthy replica (primary: %d)", onPrimary)
	}

	if err := cluster.ResumeReplay(ctx, paused); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "resumed replica to serve bounded-staleness reads again", func() bool {
		_, info, err := readValue(ctx, r, router.BoundedStaleness(bound), "stale", 1)
		if err != nil {
			t.Fatal(err)
		}
		return info.Node == pausedAddr
	})
}

func TestStalePolicies(t *testing.T) {
	ctx := context.Background()
	setup := mustRouter(t, configFor(t, cluster))
	mustExec(t, setup, "CREATE TABLE IF NOT EXISTS pol (k int PRIMARY KEY, v bigint NOT NULL)")
	if _, err := setValue(ctx, setup, "pol", 1, 1); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	pauseReplay(t, cluster, standbyNames(cluster)...)
	// Move the primary after the pause: every replica is now behind.
	tok, err := setValue(ctx, setup, "pol", 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		policy      router.Fallback
		wantPrimary bool
		wantErr     error
	}{
		{router.FallbackPrimary, true, nil},
		{router.FallbackLeastLagged, false, nil},
		{router.FallbackError, false, router.ErrUnavailable},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			cfg := configFor(t, cluster)
			cfg.StalePolicy = tc.policy
			r := mustRouter(t, cfg)
			const bound = 50 * time.Millisecond
			waitFor(t, 30*time.Second, "every replica past the bound", func() bool {
				for _, n := range r.Status().Nodes {
					if n.Standby && (n.LagBytes == 0 || n.LagKnown && n.Lag <= 2*bound) {
						return false
					}
				}
				return true
			})
			v, info, err := readValue(ctx, r, router.BoundedStaleness(bound), "pol", 1)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Primary != tc.wantPrimary {
				t.Fatalf("served by %+v, want primary=%v", info, tc.wantPrimary)
			}
			if tc.wantPrimary && v != 2 || !tc.wantPrimary && v != 1 {
				t.Fatalf("read %d from %+v", v, info)
			}
			// A token still wins over the least-lagged policy: never a stale
			// replica for a read-your-writes read.
			if v, info, err := readValue(ctx, r, router.ReadYourWrites(tok), "pol", 1); err != nil || v != 2 || !info.Primary {
				t.Fatalf("read-your-writes under %v: %d, %+v, %v", tc.policy, v, info, err)
			}
		})
	}
}

func TestReplicaKilledUnderLoad(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{Replicas: 2, NoRedis: true})
	ctx := context.Background()
	r := mustRouter(t, configFor(t, c))
	mustExec(t, r, "CREATE TABLE kill (k int PRIMARY KEY, v bigint NOT NULL)")
	mustExec(t, r, "INSERT INTO kill SELECT g, g FROM generate_series(1, 100) g")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	victim := standbyNames(c)[0]
	victimAddr := nodeAddr(c.Node(victim))

	var reads, afterKill atomic.Int64
	var killed atomic.Bool
	served := sync.Map{}
	lctx, stop := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(lctx)
	for w := range 4 {
		g.Go(func() error {
			for i := 0; gctx.Err() == nil; i++ {
				k := (w*31+i)%100 + 1
				c := router.Consistency{}
				if i%2 == 1 {
					c = router.BoundedStaleness(time.Hour)
				}
				v, info, err := readValue(gctx, r, c, "kill", k)
				if err != nil {
					if gctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("read error returned to caller: %w", err)
				}
				if v != int64(k) {
					return fmt.Errorf("read %d for key %d", v, k)
				}
				reads.Add(1)
				if killed.Load() {
					afterKill.Add(1)
				}
				served.Store(info.Node, true)
			}
			return nil
		})
	}
	waitFor(t, 30*time.Second, "reads on the victim before the kill", func() bool {
		_, ok := served.Load(victimAddr)
		return ok && reads.Load() > 200
	})
	if err := c.KillNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	killed.Store(true)
	waitFor(t, 30*time.Second, "router to mark the victim down and keep reading", func() bool {
		for _, n := range r.Status().Nodes {
			if n.Name == victimAddr && n.Serving {
				return false
			}
		}
		return afterKill.Load() > 500
	})
	served.Delete(victimAddr)
	if err := c.StartNode(ctx, victim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "restarted replica to serve reads again", func() bool {
		_, ok := served.Load(victimAddr)
		return ok
	})
	stop()
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d reads, %d after the kill, zero errors", reads.Load(), afterKill.Load())
}

// TestRecoveryConflictIsRetried provokes a real recovery conflict: a
// repeatable-read transaction on the standby holds a snapshot while the
// primary deletes and vacuums the rows it can see; with a 100ms
// max_standby_streaming_delay the standby cancels the query (40001) and the
// router reruns the read elsewhere.
func TestRecoveryConflictIsRetried(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{Replicas: 1, NoRedis: true,
		Settings: map[string]string{"max_standby_streaming_delay": "100ms"}})
	ctx := context.Background()
	r := mustRouter(t, configFor(t, c))
	mustExec(t, r, "CREATE TABLE conflict (k int PRIMARY KEY, pad text)")
	mustExec(t, r, "INSERT INTO conflict SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, r)
	primary, err := pgx.Connect(ctx, c.PrimaryDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer primary.Close(ctx)

	var calls atomic.Int32
	var count int64
	var firstErr error
	info, err := r.ReadTx(ctx, router.BoundedStaleness(time.Hour), func(ctx context.Context, q router.Querier) error {
		if calls.Add(1) > 1 {
			return q.QueryRow(ctx, "SELECT count(*) FROM conflict").Scan(&count)
		}
		// First attempt, on the standby: take a snapshot, then make the
		// primary remove what it sees, then outlive the streaming delay.
		if err := q.QueryRow(ctx, "SELECT count(*) FROM conflict").Scan(&count); err != nil {
			return err
		}
		if _, err := primary.Exec(ctx, "DELETE FROM conflict WHERE k > 500"); err != nil {
			return err
		}
		if _, err := primary.Exec(ctx, "VACUUM conflict"); err != nil {
			return err
		}
		var ok bool
		firstErr = q.QueryRow(ctx, "SELECT pg_sleep(30) IS NULL").Scan(&ok)
		return firstErr
	})
	if err != nil {
		t.Fatalf("read with a recovery conflict returned %v; want it retried", err)
	}
	if calls.Load() < 2 || info.Attempts < 2 {
		t.Fatalf("fn ran %d times, info %+v: the conflict was not retried", calls.Load(), info)
	}
	var pgErr *pgconn.PgError
	if !errors.As(firstErr, &pgErr) || pgErr.Code != "40001" {
		t.Fatalf("first attempt failed with %v, want a recovery conflict (40001)", firstErr)
	}
	if !router.Retryable(firstErr) {
		t.Fatalf("Retryable(%v) = false", firstErr)
	}
	if count != 500 {
		t.Fatalf("count after retry = %d, want 500", count)
	}
}

// mostAdvancedStandby returns the running standby that has received the most
// WAL: the one to promote so that no write confirmed by a quorum standby is
// lost.
func mostAdvancedStandby(tb testing.TB, c *testcluster.Cluster) string {
	tb.Helper()
	ctx := context.Background()
	best, bestLSN := "", router.LSN(0)
	for _, name := range standbyNames(c) {
		conn, err := pgx.Connect(ctx, c.Node(name).DSN())
		if err != nil {
			continue
		}
		var s string
		err = conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text").Scan(&s)
		conn.Close(ctx)
		if err != nil {
			continue
		}
		lsn, err := router.ParseLSN(s)
		if err == nil && (best == "" || lsn > bestLSN) {
			best, bestLSN = name, lsn
		}
	}
	if best == "" {
		tb.Fatal("no standby answered")
	}
	return best
}

// TestFailoverSync kills the primary of a synchronous-quorum cluster under a
// write load, checks that writes fail fast with ErrUnavailable while reads
// continue, promotes the most advanced standby, and checks that the same
// router writes to it without a restart and that every acknowledged write
// survived. It ends with a split brain (a second promotion), which must stop
// writes.
func TestFailoverSync(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{Replicas: 2, Sync: true, NoRedis: true})
	ctx := context.Background()
	r := mustRouter(t, configFor(t, c))
	// A second router whose prober never ticks on its own: it must learn
	// about the failover from its writes alone.
	lazyCfg := configFor(t, c)
	lazyCfg.ProbeInterval = time.Hour
	lazy := mustRouter(t, lazyCfg)
	if !r.Status().Replication.Synchronous() {
		t.Fatalf("replication mode %+v, want synchronous", r.Status().Replication)
	}
	mustExec(t, r, "CREATE TABLE acked (id bigint PRIMARY KEY)")
	if err := c.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, r)

	// Writers record every id whose write was acknowledged.
	var (
		mu          sync.Mutex
		acked       []int64
		unknown     int
		next        atomic.Int64
		preFailover router.Token
	)
	wctx, stopWriters := context.WithCancel(ctx)
	var writers sync.WaitGroup
	for range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for wctx.Err() == nil {
				id := next.Add(1)
				tok, err := r.Write(wctx, func(ctx context.Context, tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "INSERT INTO acked VALUES ($1)", id)
					return err
				})
				mu.Lock()
				switch {
				case err == nil:
					acked = append(acked, id)
					preFailover = preFailover.Merge(tok)
				case errors.Is(err, router.ErrCommitUnknown):
					unknown++
				}
				mu.Unlock()
				if err != nil {
					return // the primary is gone: stop this writer
				}
			}
		}()
	}
	waitFor(t, 30*time.Second, "some acknowledged writes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) > 100
	})
	if err := c.KillNode(ctx, "pg0"); err != nil {
		t.Fatal(err)
	}
	writers.Wait()
	stopWriters()
	mu.Lock()
	t.Logf("%d writes acknowledged before the kill, %d with unknown outcome", len(acked), unknown)
	oldTok := preFailover
	mu.Unlock()

	// Primary gone, nothing promoted: writes fail fast, reads continue.
	waitFor(t, 10*time.Second, "router to notice the dead primary", func() bool { return r.Status().Primary == "" })
	for range 5 {
		_, err := r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO acked VALUES (-1)")
			return err
		})
		if !errors.Is(err, router.ErrUnavailable) || !router.Retryable(err) {
			t.Fatalf("write with the primary down: %v, want ErrUnavailable", err)
		}
	}
	var n int64
	if _, err := r.Read(ctx, router.Consistency{}, func(ctx context.Context, q router.Querier) error {
		return q.QueryRow(ctx, "SELECT count(*) FROM acked").Scan(&n)
	}); err != nil {
		t.Fatalf("read with the primary down: %v", err)
	}
	if _, err := r.Read(ctx, router.Strong(), func(context.Context, router.Querier) error { return nil }); !errors.Is(err, router.ErrUnavailable) {
		t.Fatalf("strong read with the primary down: %v, want ErrUnavailable", err)
	}

	// The operator promotes the most advanced standby and re-points the other.
	newPrimary := mostAdvancedStandby(t, c)
	if err := c.Promote(ctx, newPrimary); err != nil {
		t.Fatal(err)
	}
	for _, name := range standbyNames(c) {
		if err := c.Rejoin(ctx, name, newPrimary); err != nil {
			t.Fatal(err)
		}
	}
	newAddr := nodeAddr(c.Node(newPrimary))
	waitFor(t, 30*time.Second, "router to follow the promotion", func() bool { return r.Status().Primary == newAddr })
	tok := mustExec(t, r, "INSERT INTO acked VALUES (0)")
	if tok.Timeline <= oldTok.Timeline {
		t.Fatalf("token after failover on timeline %d, before on %d", tok.Timeline, oldTok.Timeline)
	}

	// Every acknowledged write survived.
	var present []int64
	if _, err := r.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
		rows, err := q.Query(ctx, "SELECT id FROM acked")
		if err != nil {
			return err
		}
		present, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for _, id := range present {
		have[id] = true
	}
	for _, id := range acked {
		if !have[id] {
			t.Fatalf("acknowledged write %d lost at failover (sync quorum)", id)
		}
	}

	// A token from the old timeline is answered by the primary, at once.
	info, err := r.Read(ctx, router.ReadYourWrites(oldTok), func(context.Context, router.Querier) error { return nil })
	if err != nil || !info.Primary || info.Timeline != tok.Timeline {
		t.Fatalf("read with a token from the lost timeline: %+v, %v", info, err)
	}
	// And a rejoined standby serves reads again.
	waitFor(t, 30*time.Second, "rejoined standby to serve", func() bool {
		info, err := r.Read(ctx, router.ReadYourWrites(tok), func(context.Context, router.Querier) error { return nil })
		return err == nil && !info.Primary
	})

	// The old primary comes back as a standby of the new one and rejoins
	// the read set.
	if err := c.Rejoin(ctx, "pg0", newPrimary); err != nil {
		t.Fatal(err)
	}
	oldAddr := nodeAddr(c.Node("pg0"))
	waitFor(t, 30*time.Second, "old primary to serve reads as a replica", func() bool {
		for _, n := range r.Status().Nodes {
			if n.Name == oldAddr && n.Serving {
				return true
			}
		}
		return false
	})
	// The lazy router still believes pg0 is the primary: its write finds a
	// standby (read-only) or a dead connection, fails with ErrUnavailable,
	// and makes it re-probe and adopt the new primary.
	if got := lazy.Status().Primary; got != oldAddr {
		t.Fatalf("lazy router's primary = %q, want its stale view %q", got, oldAddr)
	}
	if _, err := lazy.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO acked VALUES (-2)")
		return err
	}); !errors.Is(err, router.ErrUnavailable) {
		t.Fatalf("write through a stale view: %v, want ErrUnavailable", err)
	}
	waitFor(t, 10*time.Second, "lazy router to adopt the new primary", func() bool { return lazy.Status().Primary == newAddr })
	mustExec(t, lazy, "INSERT INTO acked VALUES (-3)")

	// Split brain: promote a standby of the new primary too.
	if err := c.Promote(ctx, standbyNames(c)[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "router to see two primaries", func() bool { return r.Status().SplitBrain })
	if _, err := r.Write(ctx, func(context.Context, pgx.Tx) error { return nil }); !errors.Is(err, router.ErrUnavailable) {
		t.Fatalf("write during split brain: %v, want ErrUnavailable", err)
	}
}

// TestCommitOutcomeUnknown loses the connection while COMMIT waits for a
// synchronous standby that is down: the outcome is unknown to the client
// (here it did commit locally), and Write must say so.
func TestCommitOutcomeUnknown(t *testing.T) {
	c := testcluster.StartTB(t, testcluster.Options{Replicas: 1, Sync: true, NoRedis: true})
	ctx := context.Background()
	r := mustRouter(t, configFor(t, c))
	mustExec(t, r, "CREATE TABLE unknown_outcome (id int PRIMARY KEY)")
	standby := standbyNames(c)[0]
	if err := c.StopNode(ctx, standby); err != nil {
		t.Fatal(err)
	}
	super, err := pgx.Connect(ctx, c.Primary().SuperDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	insert := func(id int) func(context.Context, pgx.Tx) error {
		return func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO unknown_outcome VALUES ($1)", id)
			return err
		}
	}

	t.Run("connection terminated during COMMIT", func(t *testing.T) {
		errc := make(chan error, 1)
		go func() {
			_, err := r.Write(ctx, insert(1))
			errc <- err
		}()
		waitFor(t, 20*time.Second, "COMMIT waiting for the synchronous standby", func() bool {
			var n int
			if err := super.QueryRow(ctx, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		})
		err := <-errc
		if !errors.Is(err, router.ErrCommitUnknown) || router.Retryable(err) {
			t.Fatalf("write whose COMMIT lost its connection: %v, want ErrCommitUnknown (not retryable)", err)
		}
		var n int
		if err := super.QueryRow(ctx, "SELECT count(*) FROM unknown_outcome WHERE id = 1").Scan(&n); err != nil || n != 1 {
			t.Fatalf("row committed locally: %d, %v (this is why the outcome is 'unknown')", n, err)
		}
	})
	t.Run("context ends during COMMIT", func(t *testing.T) {
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errc := make(chan error, 1)
		go func() {
			_, err := r.Write(wctx, insert(2))
			errc <- err
		}()
		waitFor(t, 20*time.Second, "COMMIT waiting for the synchronous standby", func() bool {
			var n int
			if err := super.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		})
		cancel()
		if err := <-errc; !errors.Is(err, router.ErrCommitUnknown) {
			t.Fatalf("write cancelled during a synchronous COMMIT: %v, want ErrCommitUnknown", err)
		}
	})
	// Nothing above opened the primary's breaker: those were not node failures
	// (or too few to trip it).
	if err := c.StartNode(ctx, standby); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "writes to succeed again", func() bool {
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := r.Write(wctx, insert(3))
		return err == nil
	})
}
