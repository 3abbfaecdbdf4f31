package repos_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

var cachePrefixSeq atomic.Int64

// cachedFixture is a fixture whose repositories use a cache of their own
// (a fresh key space on the package's Redis).
type cachedFixture struct {
	*fixture
	cache *cache.Cache
}

func newCachedRepos(tb testing.TB, tune func(*repos.Config)) *cachedFixture {
	return newCachedReposL1(tb, false, tune)
}

func newCachedReposL1(tb testing.TB, l1 bool, tune func(*repos.Config)) *cachedFixture {
	tb.Helper()
	rc := redis.NewClient(&redis.Options{Addr: env.cluster.RedisAddr()})
	tb.Cleanup(func() { _ = rc.Close() })
	c, err := cache.New(rc, cache.Config{
		Prefix: fmt.Sprintf("repos%d_%d", cachePrefixSeq.Add(1), time.Now().UnixNano()),
		// Every loader here reads within the router's bounds and nothing
		// restarts Redis: no grace period needed.
		MaxSourceLag: -1,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		L1:           cache.L1Config{Enabled: l1},
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if l1 {
		deadline := time.Now().Add(10 * time.Second)
		for !c.Stats().L1Trusted {
			if time.Now().After(deadline) {
				tb.Fatal("L1 subscription not up")
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	f := &cachedFixture{fixture: &fixture{db: &countingDB{db: env.router}, clock: newFakeClock()}, cache: c}
	cfg := repos.Config{
		CursorKey: cursorKeyForTests,
		Now:       f.clock.Now,
		Cache:     c,
		AfterCommit: func(_ context.Context, _ router.Token, ch []repos.Change) {
			f.changes.Store(&ch)
		},
	}
	if tune != nil {
		tune(&cfg)
	}
	rp, err := repos.New(f.db, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	f.Repos = rp
	return f
}

func waitReplicated(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := env.cluster.WaitReplicated(ctx); err != nil {
		tb.Fatal(err)
	}
}

// Pages cut from cached lists are exactly the pages the database returns:
// same items, same cursors, every limit, both directions, cursors from
// either side, ties in membership_ts, and lists over the cached bound.
func TestCachedPagesMatchUncached(t *testing.T) {
	ctx := session(t)
	plain := newRepos(t)
	for _, bound := range []int{0, 4} { // default bound, and one the lists exceed
		t.Run(fmt.Sprintf("bound %d", bound), func(t *testing.T) {
			cached := newCachedRepos(t, func(c *repos.Config) { c.CacheMaxMembers, c.CacheMaxDevices = bound, bound })
			owner := mustUser(t, plain, ctx, "owner")
			for _, id := range []string{"B", "a", "C", "b2", "A", "c-1", "Z"} {
				must[repos.Device](t)(plain.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: owner, DeviceID: id}))
			}
			room := mustRoom(t, plain, ctx, owner)
			for i := range 9 {
				if i%3 == 0 {
					plain.clock.Add(time.Millisecond) // groups of three joined in the same millisecond
				}
				u := mustUser(t, plain, ctx, fmt.Sprintf("m%d", 9-i))
				must[repos.Membership](t)(plain.Memberships.Join(ctx, room, u))
			}
			type walk func(r *repos.Repos, from string, dir repos.Direction, limit int) ([]string, string, string, error)
			devices := func(r *repos.Repos, from string, dir repos.Direction, limit int) ([]string, string, string, error) {
				p, err := r.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: owner, From: from, Dir: dir, Limit: limit})
				var ids []string
				for _, d := range p.Items {
					ids = append(ids, d.DeviceID)
				}
				return ids, p.Next, p.Prev, err
			}
			members := func(r *repos.Repos, from string, dir repos.Direction, limit int) ([]string, string, string, error) {
				p, err := r.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room, From: from, Dir: dir, Limit: limit})
				return userIDsOf(p.Items), p.Next, p.Prev, err
			}
			for name, list := range map[string]walk{"devices": devices, "members": members} {
				for limit := 1; limit <= 4; limit++ {
					for _, dir := range []repos.Direction{repos.Forward, repos.Backward} {
						// Walk to the end with both, comparing every page and
						// every turn-around.
						from := ""
						for step := 0; ; step++ {
							want, wantNext, wantPrev, err := list(plain.Repos, from, dir, limit)
							if err != nil {
								t.Fatal(err)
							}
							got, next, prev, err := list(cached.Repos, from, dir, limit)
							if err != nil {
								t.Fatal(err)
							}
							if !slices.Equal(got, want) || next != wantNext || prev != wantPrev {
								t.Fatalf("%s limit %d dir %v step %d: cached %v, database %v (cursors equal: next %v prev %v)",
									name, limit, dir, step, got, want, next == wantNext, prev == wantPrev)
							}
							if wantNext == "" || step > 20 {
								break
							}
							from = wantNext
						}
					}
				}
			}
			if s := cached.cache.Stats(); s.RedisHits == 0 {
				t.Fatalf("nothing was served from the cache: %+v", s)
			}
		})
	}
}

func userIDsOf(ms []repos.Membership) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.UserID)
	}
	return out
}

// Each cached read is served from the cache once filled, and each write
// that changes it makes the next read (of any session, once replicas
// caught up) return the new data.
func TestCachedReadsFollowWrites(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := session(t)
	alice := mustUser(t, f.fixture, ctx, "alice")
	bob := mustUser(t, f.fixture, ctx, "bob")
	must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "D1"}))
	raw := mustToken(t, f.fixture, ctx, alice, "D1")
	room := mustRoom(t, f.fixture, ctx, alice)
	must[repos.Membership](t)(f.Memberships.Join(ctx, room, alice))
	waitReplicated(t)
	noSession := context.Background()

	tests := []struct {
		name  string
		read  func(ctx context.Context) (string, error)
		write func(ctx context.Context) error
		after string
	}{
		{"profile", func(ctx context.Context) (string, error) {
			u, err := f.Users.GetUser(ctx, alice)
			return fmt.Sprint(u.DisplayName != nil && *u.DisplayName == "Al"), err
		}, func(ctx context.Context) error {
			_, _, err := f.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{DisplayName: ptr("Al")})
			return err
		}, "true"},
		{"device list", func(ctx context.Context) (string, error) {
			p, err := f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: alice})
			return fmt.Sprint(len(p.Items)), err
		}, func(ctx context.Context) error {
			_, _, err := f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "D2"})
			return err
		}, "2"},
		{"device seen, through the token lookup", func(ctx context.Context) (string, error) {
			o, err := f.AccessTokens.LookupToken(ctx, raw)
			return fmt.Sprint(o.DeviceLastSeenIP != nil), err
		}, func(ctx context.Context) error {
			_, _, err := f.Devices.TouchDevice(ctx, repos.DeviceTouch{UserID: alice, DeviceID: "D1", IP: "10.0.0.1"})
			return err
		}, "true"},
		{"room", func(ctx context.Context) (string, error) {
			r, err := f.Rooms.GetRoom(ctx, room)
			return fmt.Sprint(r.IsPublic), err
		}, func(ctx context.Context) error {
			_, _, err := f.Rooms.UpdateRoom(ctx, room, repos.RoomUpdate{IsPublic: ptr(true)})
			return err
		}, "true"},
		{"joined members", func(ctx context.Context) (string, error) {
			p, err := f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room})
			return fmt.Sprint(userIDsOf(p.Items)), err
		}, func(ctx context.Context) error {
			_, _, err := f.Memberships.Join(ctx, room, bob)
			return err
		}, fmt.Sprint([]string{alice, bob})},
		{"is joined", func(ctx context.Context) (string, error) {
			ok, err := f.Memberships.IsJoined(ctx, room, alice)
			return fmt.Sprint(ok), err
		}, func(ctx context.Context) error {
			_, _, err := f.Memberships.Leave(ctx, room, alice)
			return err
		}, "false"},
		{"token revoked", func(ctx context.Context) (string, error) {
			_, err := f.AccessTokens.LookupToken(ctx, raw)
			return fmt.Sprint(errors.Is(err, repos.ErrNotFound)), nil
		}, func(ctx context.Context) error {
			_, err := f.AccessTokens.RevokeToken(ctx, raw)
			return err
		}, "true"},
		{"room deleted", func(ctx context.Context) (string, error) {
			ok, err := f.Memberships.IsJoined(ctx, room, bob)
			return fmt.Sprint(ok), err
		}, func(ctx context.Context) error {
			_, err := f.Rooms.DeleteRoom(ctx, room)
			return err
		}, "false"},
		{"room restored", func(ctx context.Context) (string, error) {
			ok, err := f.Memberships.IsJoined(ctx, room, bob)
			return fmt.Sprint(ok), err
		}, func(ctx context.Context) error {
			_, err := f.Rooms.RestoreRoom(ctx, room)
			return err
		}, "true"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := tc.read(noSession)
			if err != nil {
				t.Fatal(err)
			}
			if before == tc.after {
				t.Fatalf("already %q before the write", before)
			}
			hits := f.cache.Stats().RedisHits
			if again, err := tc.read(noSession); err != nil || again != before {
				t.Fatalf("second read = %q, %v", again, err)
			}
			if f.cache.Stats().RedisHits == hits {
				t.Fatal("second read not served from the cache")
			}
			wctx := session(t)
			if err := tc.write(wctx); err != nil {
				t.Fatal(err)
			}
			if got, err := tc.read(wctx); err != nil || got != tc.after {
				t.Fatalf("in the writer's session: %q, %v; want %q", got, err, tc.after)
			}
			waitReplicated(t)
			if got, err := tc.read(noSession); err != nil || got != tc.after {
				t.Fatalf("outside the session, after replication: %q, %v; want %q", got, err, tc.after)
			}
		})
	}
}

func TestCachedTokenExpiryIsCheckedAtUse(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := session(t)
	alice := mustUser(t, f.fixture, ctx, "alice")
	raw, _ := repos.GenerateToken()
	mustTok(t)(f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: raw, UserID: alice,
		ExpiresTS: f.clock.Now().Add(time.Minute).UnixMilli()}))
	for range 2 {
		if _, err := f.AccessTokens.LookupToken(ctx, raw); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Add(2 * time.Minute)
	hits := f.cache.Stats().RedisHits
	if _, err := f.AccessTokens.LookupToken(ctx, raw); !errors.Is(err, repos.ErrNotFound) {
		t.Fatalf("expired token: %v, want ErrNotFound", err)
	}
	if f.cache.Stats().RedisHits == hits {
		t.Fatal("the expired lookup was not the cached entry re-checked")
	}
}

// Deactivating or deleting a user invalidates the cached lookups of all the
// user's tokens.
func TestUserChangesInvalidateTheirTokens(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := session(t)
	for _, change := range []string{"deactivate", "delete"} {
		t.Run(change, func(t *testing.T) {
			u := mustUser(t, f.fixture, ctx, change)
			must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: u, DeviceID: "D"}))
			raws := []string{mustToken(t, f.fixture, ctx, u, "D"), mustToken(t, f.fixture, ctx, u, "")}
			waitReplicated(t)
			for _, raw := range raws {
				for range 2 {
					if _, err := f.AccessTokens.LookupToken(context.Background(), raw); err != nil {
						t.Fatal(err)
					}
				}
			}
			switch change {
			case "deactivate":
				mustTok(t)(f.Users.Deactivate(ctx, u))
			case "delete":
				mustTok(t)(f.Users.DeleteUser(ctx, u))
			}
			waitReplicated(t)
			for _, raw := range raws {
				if _, err := f.AccessTokens.LookupToken(context.Background(), raw); !errors.Is(err, repos.ErrNotFound) {
					t.Fatalf("token of a %sd user: %v, want ErrNotFound", change, err)
				}
			}
		})
	}
}

func TestStrongReadsBypassTheCache(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := session(t)
	alice := mustUser(t, f.fixture, ctx, "alice")
	before := f.cache.Stats()
	for range 3 {
		if _, err := f.Users.GetUser(ctx, alice, router.Strong()); err != nil {
			t.Fatal(err)
		}
	}
	if after := f.cache.Stats(); after.Misses != before.Misses || after.RedisHits != before.RedisHits || after.Fills != before.Fills {
		t.Fatalf("Strong reads touched the cache: %+v → %+v", before, after)
	}
}

// A cached read records where it read in the session, so later reads in the
// session never return older data.
func TestCachedReadsAdvanceTheSession(t *testing.T) {
	f := newCachedRepos(t, nil)
	setup := session(t)
	alice := mustUser(t, f.fixture, setup, "alice")
	waitReplicated(t)
	ctx := router.WithSession(context.Background(), router.Token{})
	if _, err := f.Users.GetUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if router.SessionToken(ctx).IsZero() {
		t.Fatal("the read left the session token empty")
	}

	g := newCachedRepos(t, func(c *repos.Config) { c.CacheNoReadPositions = true })
	ctx = router.WithSession(context.Background(), router.Token{})
	if _, err := g.Users.GetUser(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if tok := router.SessionToken(ctx); !tok.IsZero() {
		t.Fatalf("with CacheNoReadPositions the read recorded %v in the session", tok)
	}
}

func TestInvalidateCachedArguments(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := context.Background()
	if err := f.InvalidateCached(ctx, nil, 0, []repos.Change{{Kind: repos.ChangeUser, Key: "@a:b"}}); !errors.Is(err, repos.ErrInvalidArgument) {
		t.Fatalf("position 0: %v, want ErrInvalidArgument", err)
	}
	if err := f.InvalidateCached(ctx, nil, 1, nil); err != nil {
		t.Fatalf("no changes: %v", err)
	}
	plain := newRepos(t)
	if err := plain.InvalidateCached(ctx, nil, 1, []repos.Change{{Kind: repos.ChangeUser, Key: "@a:b"}}); err != nil {
		t.Fatalf("without a cache: %v", err)
	}
	if _, err := repos.New(env.router, repos.Config{Cache: f.cache, CacheMaxMembers: -1}); !errors.Is(err, repos.ErrInvalidArgument) {
		t.Fatalf("negative bound: %v, want ErrInvalidArgument", err)
	}
}

func TestWarmCacheFillsEntries(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := session(t)
	var users []string
	for i := range 5 {
		u := mustUser(t, f.fixture, ctx, fmt.Sprintf("warm%d", i))
		must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: u, DeviceID: "D"}))
		mustToken(t, f.fixture, ctx, u, "D")
		users = append(users, u)
	}
	waitReplicated(t)
	if err := f.WarmCache(context.Background(), append(users, "not an ID")); err != nil {
		t.Fatal(err)
	}
	if s := f.cache.Stats(); s.Fills < 15 {
		t.Fatalf("warm-up filled %d entries, want 3 per user: %+v", s.Fills, s)
	}
	hits := f.cache.Stats().RedisHits
	for _, u := range users {
		if _, err := f.Users.GetUser(context.Background(), u); err != nil {
			t.Fatal(err)
		}
	}
	if got := f.cache.Stats().RedisHits - hits; got != uint64(len(users)) {
		t.Fatalf("%d of %d profile reads after the warm-up were hits", got, len(users))
	}
}

// Pages cut from lists the in-process tier shares are the caller's own:
// changing them changes nothing for the next caller.
func TestCachedPagesAreCopies(t *testing.T) {
	f := newCachedReposL1(t, true, nil)
	ctx := session(t)
	owner := mustUser(t, f.fixture, ctx, "owner")
	must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: owner, DeviceID: "D", DisplayName: ptr("phone")}))
	room := mustRoom(t, f.fixture, ctx, owner)
	must[repos.Membership](t)(f.Memberships.ChangeMembership(ctx, repos.MembershipChange{RoomID: room, UserID: owner,
		Sender: owner, Membership: repos.Join, EventID: "$join:test.local", StreamOrdering: 7}))
	waitReplicated(t)
	read := func() (repos.Page[repos.Device], repos.Page[repos.Membership]) {
		d, err := f.Devices.ListDevices(context.Background(), repos.DevicePageRequest{UserID: owner})
		if err != nil || len(d.Items) != 1 {
			t.Fatalf("ListDevices = %+v, %v", d, err)
		}
		m, err := f.Memberships.ListJoinedMembers(context.Background(), repos.MemberPageRequest{RoomID: room})
		if err != nil || len(m.Items) != 1 {
			t.Fatalf("ListJoinedMembers = %+v, %v", m, err)
		}
		return d, m
	}
	for range 3 { // fill, then L1 hits
		d, m := read()
		*d.Items[0].DisplayName = "scribbled"
		d.Items[0].DeviceID = "X"
		*m.Items[0].EventID = "$scribbled"
		*m.Items[0].StreamOrdering = -1
	}
	if s := f.cache.Stats(); s.L1Hits == 0 {
		t.Fatalf("no L1 hit: %+v", s)
	}
	d, m := read()
	if *d.Items[0].DisplayName != "phone" || d.Items[0].DeviceID != "D" || *m.Items[0].EventID != "$join:test.local" || *m.Items[0].StreamOrdering != 7 {
		t.Fatalf("a caller's changes reached the cache: %+v %+v", d.Items[0], m.Items[0])
	}
}

// A load a read-your-writes read makes for the cache is shared with
// concurrent default reads of the key, so it must honour the default
// staleness bound too, not just the token: a replica that replayed the
// token but stopped long ago must not answer it.
func TestSharedCachedLoadsKeepTheDefaultBound(t *testing.T) {
	f := newCachedRepos(t, nil)
	ctx := context.Background()
	setup := session(t)
	alice := mustUser(t, f.fixture, setup, "alice")
	old := router.SessionToken(setup) // replayed by the replica before the pause
	waitReplicated(t)
	replica := env.cluster.Nodes()[1].Name
	if err := env.cluster.PauseReplay(ctx, replica); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.cluster.ResumeReplay(context.Background(), replica) })
	// Let the paused replica fall past the router's default bound (1s).
	deadline := time.Now().Add(30 * time.Second)
	for {
		st := env.router.Status()
		if st.Nodes[1].Lag > 1500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica lag never grew: %+v", st.Nodes[1])
		}
		if _, _, err := f.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{DisplayName: ptr("tick")}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // pace the writes that make the lag measurable
	}
	stale := 0
	for i := range 30 {
		v := fmt.Sprintf("v%d", i)
		if _, _, err := f.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{DisplayName: &v}); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = f.Users.GetUser(ctx, alice, router.ReadYourWrites(old))
		}()
		got, err := f.Users.GetUser(ctx, alice)
		<-done
		if err != nil {
			t.Fatal(err)
		}
		if got.DisplayName == nil || *got.DisplayName != v {
			stale++
		}
	}
	if stale > 0 {
		t.Fatalf("%d of 30 default reads returned data older than the router's bound", stale)
	}
}
