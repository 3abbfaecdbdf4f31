package dal_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

var soak = flag.Duration("dal.soak", 3*time.Second,
	"how long TestRandomizedCacheHistory runs its writers, readers and replay pauses (e.g. -dal.soak=1m)")

// versions is the history of every versioned key: its values in commit
// order. Writes of one key are serialised by the key's lock, so the order
// they take the lock is their commit order; a value is registered before its
// write runs, so a read that sees it early still finds it.
type versions struct {
	mu     sync.Mutex
	locks  map[string]*sync.Mutex
	values map[string][]string
	index  map[string]map[string]int
}

func newVersions() *versions {
	return &versions{locks: map[string]*sync.Mutex{}, values: map[string][]string{}, index: map[string]map[string]int{}}
}

func (v *versions) lock(key string) *sync.Mutex {
	v.mu.Lock()
	defer v.mu.Unlock()
	l, ok := v.locks[key]
	if !ok {
		l = &sync.Mutex{}
		v.locks[key] = l
	}
	return l
}

// next registers the next value of key, prefix#N (call with the key's lock
// held).
func (v *versions) next(key, prefix string) (int, string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i := len(v.values[key])
	value := fmt.Sprintf("%s#%d", prefix, i)
	v.values[key] = append(v.values[key], value)
	if v.index[key] == nil {
		v.index[key] = map[string]int{}
	}
	v.index[key][value] = i
	return i, value
}

func (v *versions) of(key, value string) (int, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	i, ok := v.index[key][value]
	return i, ok
}

// violations collects what the checker found.
type violations struct {
	mu   sync.Mutex
	n    int
	msgs []string
}

func (v *violations) add(format string, args ...any) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.n++
	if len(v.msgs) < 20 {
		v.msgs = append(v.msgs, fmt.Sprintf(format, args...))
	}
}

// TestRandomizedCacheHistory runs sessions that write and read the same hot
// keys through three independently opened DALs sharing one Redis (two with
// an in-process tier), while WAL replay on the replicas is paused and
// resumed at random. Every session carries its consistency token from one
// operation to the next, across instances, like a client. It records every
// read and checks:
//   - no read fails;
//   - read-your-writes: a session never reads a version older than its own
//     last write of that key (for memberships, which only their owner
//     changes: exactly the owner's last write);
//   - monotonic reads: a session never reads a version older than one it
//     read before;
//   - every value read was written (or seeded);
//
// and after the writers stop and the feed drains, that every instance
// serves every key exactly as the primary has it (convergence).
// Longer: go test ./dal -run Randomized -dal.soak=1m.
func TestRandomizedCacheHistory(t *testing.T) {
	ctx := testCtx(t)
	if *soak > 40*time.Second {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), *soak+time.Minute)
		defer cancel()
	}
	db := newCachedDB(t)
	l1 := func(c *dal.Config) { c.Cache.L1.Enabled = true }
	ds := []*dal.DAL{db.open(t, l1), db.open(t, l1), db.open(t, nil)}

	const (
		nUsers   = 4
		nRooms   = 2
		nWorkers = 6
	)
	hist := newVersions()
	users := make([]string, nUsers)
	rooms := make([]string, nRooms)
	tokens := make([]string, nUsers)
	members := make([]string, nWorkers) // worker w owns members[w]'s membership in rooms[0]
	seed := ds[0]
	for i := range users {
		users[i] = fmt.Sprintf("@hot%d:example.org", i)
		if _, _, err := seed.Users.CreateUser(ctx, repos.NewUser{UserID: users[i], DisplayName: ptr("user#0")}); err != nil {
			t.Fatal(err)
		}
		hist.next("user:"+users[i], "user")
		if _, _, err := seed.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: users[i], DeviceID: "D1", DisplayName: ptr("dev#0")}); err != nil {
			t.Fatal(err)
		}
		hist.next("dev:"+users[i], "dev")
		tokens[i] = fmt.Sprintf("token-of-hot-user-%d-0123456789", i)
		if _, err := seed.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: tokens[i], UserID: users[i], DeviceID: "D1"}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range rooms {
		rooms[i] = fmt.Sprintf("!hot%d:example.org", i)
		if _, _, err := seed.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: rooms[i], Creator: users[0], Name: ptr("room#0")}); err != nil {
			t.Fatal(err)
		}
		hist.next("room:"+rooms[i], "room")
	}
	for w := range members {
		members[w] = fmt.Sprintf("@member%d:example.org", w)
		if _, _, err := seed.Users.CreateUser(ctx, repos.NewUser{UserID: members[w]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		waitFillable(t, d)
	}

	var (
		viol   violations
		stop   atomic.Bool
		reads  atomic.Int64
		writes atomic.Int64
		wg     sync.WaitGroup
	)
	// Chaos: pause one replica's replay for a while, now and then.
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(1, 2))
		replicas := cluster.Nodes()[1:]
		for !stop.Load() {
			n := replicas[rng.IntN(len(replicas))].Name
			if err := cluster.PauseReplay(ctx, n); err != nil {
				viol.add("pause %s: %v", n, err)
				return
			}
			time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond) // the pause being injected
			if err := cluster.ResumeReplay(ctx, n); err != nil {
				viol.add("resume %s: %v", n, err)
				return
			}
			time.Sleep(time.Duration(rng.IntN(200)) * time.Millisecond) // time between pauses
		}
	})
	t.Cleanup(func() {
		for _, n := range cluster.Nodes()[1:] {
			_ = cluster.ResumeReplay(context.Background(), n.Name)
		}
	})

	for w := range nWorkers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 42))
			tok := router.Token{}
			seen := map[string]int{} // key → newest version this session wrote or read
			joined := false          // members[w]'s membership in rooms[0], as last written by w
			wroteJoin := false
			observe := func(key, value, what string) {
				i, ok := hist.of(key, value)
				if !ok {
					viol.add("worker %d: %s returned %q, never written", w, what, value)
					return
				}
				if prev, ok := seen[key]; ok && i < prev {
					viol.add("worker %d: %s returned version %d after the session had seen version %d (token %s)",
						w, what, i, prev, tok.LSN)
				}
				seen[key] = max(seen[key], i)
			}
			for !stop.Load() {
				sctx := router.WithSession(ctx, tok)
				d := ds[rng.IntN(len(ds))]
				u := users[rng.IntN(nUsers)]
				r := rooms[rng.IntN(nRooms)]
				var err error
				switch p := rng.IntN(100); {
				case p < 10: // profile
					key := "user:" + u
					l := hist.lock(key)
					l.Lock()
					i, v := hist.next(key, "user")
					_, _, err = d.Users.UpdateProfile(sctx, u, repos.ProfileUpdate{DisplayName: &v})
					l.Unlock()
					seen[key] = i
					writes.Add(1)
				case p < 15: // room name
					key := "room:" + r
					l := hist.lock(key)
					l.Lock()
					i, v := hist.next(key, "room")
					_, _, err = d.Rooms.UpdateRoom(sctx, r, repos.RoomUpdate{Name: &v})
					l.Unlock()
					seen[key] = i
					writes.Add(1)
				case p < 20: // device name (the device list)
					key := "dev:" + u
					l := hist.lock(key)
					l.Lock()
					i, v := hist.next(key, "dev")
					_, _, err = d.Devices.UpsertDevice(sctx, repos.NewDevice{UserID: u, DeviceID: "D1", DisplayName: &v})
					l.Unlock()
					seen[key] = i
					writes.Add(1)
				case p < 25: // own membership
					if joined {
						_, _, err = d.Memberships.Leave(sctx, rooms[0], members[w])
					} else {
						_, _, err = d.Memberships.Join(sctx, rooms[0], members[w])
					}
					if err == nil {
						joined, wroteJoin = !joined, true
					}
					writes.Add(1)
				case p < 45:
					var got repos.User
					if got, err = d.Users.GetUser(sctx, u); err == nil {
						observe("user:"+u, name(got), "GetUser")
					}
					reads.Add(1)
				case p < 55:
					var got repos.Room
					if got, err = d.Rooms.GetRoom(sctx, r); err == nil {
						observe("room:"+r, deref(got.Name), "GetRoom")
					}
					reads.Add(1)
				case p < 65:
					var pg repos.Page[repos.Device]
					if pg, err = d.Devices.ListDevices(sctx, repos.DevicePageRequest{UserID: u}); err == nil {
						if len(pg.Items) != 1 {
							viol.add("worker %d: ListDevices(%s) = %d devices", w, u, len(pg.Items))
						} else {
							observe("dev:"+u, deref(pg.Items[0].DisplayName), "ListDevices")
						}
					}
					reads.Add(1)
				case p < 75:
					var ok bool
					if ok, err = d.Memberships.IsJoined(sctx, rooms[0], members[w]); err == nil && wroteJoin && ok != joined {
						viol.add("worker %d: IsJoined = %v after its own write of %v", w, ok, joined)
					}
					reads.Add(1)
				case p < 85:
					var pg repos.Page[repos.Membership]
					if pg, err = d.Memberships.ListJoinedMembers(sctx, repos.MemberPageRequest{RoomID: rooms[0]}); err == nil && wroteJoin {
						in := slices.ContainsFunc(pg.Items, func(m repos.Membership) bool { return m.UserID == members[w] })
						if in != joined {
							viol.add("worker %d: ListJoinedMembers lists it: %v after its own write of %v", w, in, joined)
						}
					}
					reads.Add(1)
				default:
					i := rng.IntN(nUsers)
					var o repos.TokenOwner
					if o, err = d.AccessTokens.LookupToken(sctx, tokens[i]); err == nil && o.UserID != users[i] {
						viol.add("worker %d: token of %s owned by %s", w, users[i], o.UserID)
					}
					reads.Add(1)
				}
				if err != nil {
					viol.add("worker %d: %v", w, err)
				}
				// Like a client: keep only the encoded token between
				// requests.
				tok, err = router.DecodeToken(router.SessionToken(sctx).Encode())
				if err != nil {
					viol.add("worker %d: token: %v", w, err)
				}
			}
		})
	}
	time.Sleep(*soak) // the workers run meanwhile
	stop.Store(true)
	wg.Wait()
	for _, n := range cluster.Nodes()[1:] {
		if err := cluster.ResumeReplay(ctx, n.Name); err != nil {
			t.Fatal(err)
		}
	}
	var hits, misses, wmHits uint64
	for _, d := range ds {
		s := stats(t, d)
		hits += s.L1Hits + s.RedisHits
		misses += s.Misses
		wmHits += s.WatermarkHits
	}
	t.Logf("%d reads, %d writes in %v; cache: %d hits (%d thanks to the watermark), %d misses",
		reads.Load(), writes.Load(), *soak, hits, wmHits, misses)
	if viol.n > 0 {
		t.Fatalf("%d violations, first ones:\n%s", viol.n, joinLines(viol.msgs))
	}
	if hits == 0 {
		t.Fatal("the cache served nothing")
	}

	// Convergence: once the feed has drained and the replicas caught up,
	// every instance serves every key as the primary has it.
	su := db.super(t)
	waitFor(t, 20*time.Second, "the outbox to drain", func() bool {
		return mustCount(t, su, `SELECT count(*) FROM cache_outbox`) == 0
	})
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		for _, u := range users {
			want, err := d.Users.GetUser(ctx, u, router.Strong())
			if err != nil {
				t.Fatal(err)
			}
			if got, err := d.Users.GetUser(ctx, u); err != nil || name(got) != name(want) {
				t.Errorf("DAL %d: GetUser(%s) = %q, %v; primary %q", i, u, name(got), err, name(want))
			}
			wantDev, _ := d.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: u, Consistency: router.Strong()})
			if got, err := d.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: u}); err != nil ||
				len(got.Items) != 1 || len(wantDev.Items) != 1 || deref(got.Items[0].DisplayName) != deref(wantDev.Items[0].DisplayName) {
				t.Errorf("DAL %d: ListDevices(%s) = %+v, %v; primary %+v", i, u, got.Items, err, wantDev.Items)
			}
		}
		for _, r := range rooms {
			want, _ := d.Rooms.GetRoom(ctx, r, router.Strong())
			if got, err := d.Rooms.GetRoom(ctx, r); err != nil || deref(got.Name) != deref(want.Name) {
				t.Errorf("DAL %d: GetRoom(%s) = %q, %v; primary %q", i, r, deref(got.Name), err, deref(want.Name))
			}
		}
		wantM, _ := d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: rooms[0], Consistency: router.Strong()})
		gotM, err := d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: rooms[0]})
		if err != nil || !slices.EqualFunc(gotM.Items, wantM.Items, func(a, b repos.Membership) bool { return a.UserID == b.UserID }) {
			t.Errorf("DAL %d: joined members %v, %v; primary %v", i, userIDs(gotM.Items), err, userIDs(wantM.Items))
		}
		for _, m := range members {
			want, _ := d.Memberships.IsJoined(ctx, rooms[0], m, router.Strong())
			if got, err := d.Memberships.IsJoined(ctx, rooms[0], m); err != nil || got != want {
				t.Errorf("DAL %d: IsJoined(%s) = %v, %v; primary %v", i, m, got, err, want)
			}
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func userIDs(ms []repos.Membership) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.UserID
	}
	return out
}

func joinLines(ss []string) string {
	out := ""
	for _, s := range ss {
		out += "  " + s + "\n"
	}
	return out
}
