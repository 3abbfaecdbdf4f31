package dal_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// seedUsers creates n users named user(i) with display name "v0" and
// returns their IDs.
func seedUsers(t *testing.T, d *dal.DAL, n int) []string {
	t.Helper()
	ctx := testCtx(t)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("@user%d:example.org", i)
		if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: ids[i], DisplayName: ptr("v0")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	return ids
}

// assertConverged waits for the outbox to drain and the replicas to catch
// up, then checks that every DAL serves every user exactly as the primary
// has it. A cached entry that missed an invalidation would show here: it
// would not expire for minutes.
func assertConverged(t *testing.T, db *cachedDB, ds []*dal.DAL, users []string) {
	t.Helper()
	ctx := testCtx(t)
	su := db.super(t)
	waitFor(t, 20*time.Second, "the outbox to drain", func() bool {
		return mustCount(t, su, `SELECT count(*) FROM cache_outbox`) == 0
	})
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		var want string
		if err := su.QueryRow(ctx, `SELECT coalesce(displayname, '') FROM users WHERE user_id = $1`, u).Scan(&want); err != nil {
			t.Fatal(err)
		}
		for i, d := range ds {
			got, err := d.Users.GetUser(ctx, u)
			if err != nil || name(got) != want {
				t.Errorf("DAL %d: GetUser(%s) = %q, %v; the primary has %q", i, u, name(got), err, want)
			}
		}
	}
}

// The active relay's session is killed while writes made outside hsdal
// stream in: a standby relay takes over and no invalidation is missed.
func TestRelayTakeoverMissesNoInvalidation(t *testing.T) {
	for _, how := range []string{"backend terminated", "DAL closed"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			db := newCachedDB(t)
			a, b := db.open(t, nil), db.open(t, nil)
			ds := []*dal.DAL{a, b}
			users := seedUsers(t, a, 20)
			waitFillable(t, a)
			waitFillable(t, b)
			leader := waitActiveRelay(t, a, b)
			standby := a
			if leader == a {
				standby = b
			}
			for _, u := range users { // fill both instances' entries
				for _, d := range ds {
					if _, err := d.Users.GetUser(ctx, u); err != nil {
						t.Fatal(err)
					}
				}
			}
			su := db.super(t)
			const rounds = 30
			for i := 1; i <= rounds; i++ {
				if i == rounds/3 {
					switch how {
					case "backend terminated":
						pid := leader.RelayStatus().BackendPID
						var ok bool
						if err := su.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(pid)).Scan(&ok); err != nil || !ok {
							t.Fatalf("terminate relay backend %d: %v %v", pid, ok, err)
						}
					case "DAL closed":
						leader.Close()
						ds = []*dal.DAL{standby}
					}
				}
				for _, u := range users {
					mustExec(t, su, `UPDATE users SET displayname = $2 WHERE user_id = $1`, u, fmt.Sprintf("v%d", i))
				}
				// Keep the entries filled, so that a missed invalidation
				// leaves a stale one behind.
				for _, d := range ds {
					_, _ = d.Users.GetUser(ctx, users[i%len(users)])
				}
			}
			waitFor(t, 10*time.Second, "the standby to take over", func() bool { return standby.RelayStatus().Active })
			assertConverged(t, db, ds, users)
			if standby.RelayStatus().Applied == 0 {
				t.Fatal("the standby applied nothing")
			}
		})
	}
}

// Redis is killed under load: callers see no error; after it restarts, no
// stale entry is served.
func TestRedisKilledUnderLoadThenRestarted(t *testing.T) {
	ctx := testCtx(t)
	t.Cleanup(func() {
		if !cluster.RedisRunning() {
			if err := cluster.StartRedis(context.Background()); err != nil {
				t.Errorf("restart redis: %v", err)
			}
		}
	})
	db := newCachedDB(t)
	a := db.open(t, func(c *dal.Config) { c.Cache.L1.Enabled = true })
	b := db.open(t, nil)
	ds := []*dal.DAL{a, b}
	users := seedUsers(t, a, 8)
	waitFillable(t, a)

	var (
		stop     atomic.Bool
		errs     atomic.Int64
		ryw      atomic.Int64
		firstErr atomic.Pointer[error]
		wg       sync.WaitGroup
	)
	fail := func(err error) {
		errs.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	// What each writer committed last: its version number and the write's
	// token, which readers on other instances present.
	type published struct {
		version int
		tok     router.Token
	}
	last := make([]atomic.Pointer[published], len(users))
	var stale atomic.Int64
	// One writer per user (so read-your-writes is exact), reading its own
	// profile back within its session through a random DAL.
	for w, u := range users {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			tok := router.Token{}
			for i := 0; !stop.Load(); i++ {
				sctx := router.WithSession(ctx, tok)
				nm := fmt.Sprintf("w%d-%d", w, i)
				wt, err := func() (router.Token, error) {
					_, t, err := ds[rng.IntN(2)].Users.UpdateProfile(sctx, u, repos.ProfileUpdate{DisplayName: &nm})
					return t, err
				}()
				if err != nil {
					fail(err)
					continue
				}
				last[w].Store(&published{version: i, tok: wt})
				got, err := ds[rng.IntN(2)].Users.GetUser(sctx, u)
				switch {
				case err != nil:
					fail(err)
				case name(got) != nm:
					ryw.Add(1)
				}
				tok = router.SessionToken(sctx)
			}
		})
	}
	// Readers holding the latest write's token of a user (as if handed
	// over by its writer) must see at least that version, whichever
	// instance serves them, through the outage and after.
	for r := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(r), 11))
			for !stop.Load() {
				w := rng.IntN(len(users))
				p := last[w].Load()
				cons := router.Consistency{}
				if p != nil {
					cons = router.ReadYourWrites(p.tok)
				}
				got, err := ds[rng.IntN(2)].Users.GetUser(ctx, users[w], cons)
				if err != nil {
					fail(err)
					continue
				}
				var gw, gi int
				if p != nil {
					if _, err := fmt.Sscanf(name(got), "w%d-%d", &gw, &gi); err != nil || gi < p.version {
						stale.Add(1)
					}
				}
			}
		})
	}
	phase := func(d time.Duration) { time.Sleep(d) } // load runs meanwhile; nothing waits for an event
	phase(300 * time.Millisecond)
	if err := cluster.KillRedis(ctx); err != nil {
		t.Fatal(err)
	}
	phase(700 * time.Millisecond)
	if s := stats(t, a); s.RedisErrors == 0 {
		t.Error("no Redis error seen while Redis was dead")
	}
	if err := cluster.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	phase(1500 * time.Millisecond) // past the new epochs' grace period, so entries are filled again
	stop.Store(true)
	wg.Wait()
	if n := errs.Load(); n != 0 {
		t.Fatalf("%d errors reached callers; first: %v", n, *firstErr.Load())
	}
	if n := ryw.Load(); n != 0 {
		t.Fatalf("%d read-your-writes violations", n)
	}
	if n := stale.Load(); n != 0 {
		t.Fatalf("%d reads older than the write whose token they presented", n)
	}
	if s := stats(t, a); s.Fills == 0 || s.EpochBumps == 0 && s.FillsRejectedEpoch == 0 {
		t.Logf("cache stats after the outage: %+v", s)
	}
	assertConverged(t, db, ds, users)
	// The relay re-applied what it could not apply while Redis was down.
	if n := mustCount(t, db.super(t), `SELECT count(*) FROM cache_outbox`); n != 0 {
		t.Fatalf("%d outbox rows left", n)
	}
}

// Where no relay runs, the outbox is pruned after the retention, and the
// pruning leaves a flush row that makes a relay started later bump the
// cache's epoch (the pruned rows' invalidations are lost).
func TestOutboxPrunedWithoutRelay(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	plain := db.open(t, func(c *dal.Config) {
		c.RedisAddr = ""
		c.Relay.Retention = 300 * time.Millisecond
	})
	if _, _, err := plain.Users.CreateUser(ctx, repos.NewUser{UserID: "@pruned:example.org"}); err != nil {
		t.Fatal(err)
	}
	su := db.super(t)
	if n := mustCount(t, su, `SELECT count(*) FROM cache_outbox WHERE kind <> 'flush'`); n == 0 {
		t.Fatal("the write left no outbox row")
	}
	waitFor(t, 10*time.Second, "the outbox pruned to a flush row", func() bool {
		return mustCount(t, su, `SELECT count(*) FROM cache_outbox WHERE kind <> 'flush'`) == 0 &&
			mustCount(t, su, `SELECT count(*) FROM cache_outbox WHERE kind = 'flush'`) > 0
	})
	cached := db.open(t, nil)
	waitActiveRelay(t, cached)
	waitFor(t, 10*time.Second, "the relay to apply the flush", func() bool {
		return stats(t, cached).EpochBumps > 0 && mustCount(t, su, `SELECT count(*) FROM cache_outbox`) == 0
	})
	if _, ok := plain.CacheStats(); ok {
		t.Fatal("a DAL without Redis reports a cache")
	}
	if st := plain.RelayStatus(); st.Candidate {
		t.Fatalf("a DAL without cache runs a relay: %+v", st)
	}
}
