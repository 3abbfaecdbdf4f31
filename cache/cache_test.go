package cache_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
)

// fixture is one Cache + a string entity over a shared db, with a manual
// clock already past the epoch grace period whenever it is read.
type fixture struct {
	t      *testing.T
	clk    *clock
	db     *db
	rc     *redis.Client
	prefix string
	c      *cache.Cache
	ent    *cache.Entity[string]
	calls  atomic.Int64
}

func newFixture(t *testing.T, cfg cache.Config) *fixture {
	t.Helper()
	f := &fixture{t: t, clk: newClock()}
	f.db = newDB(f.clk.Now)
	f.rc = newClient(t, cluster.RedisAddr())
	if cfg.Now == nil {
		cfg.Now = f.clk.Now
	}
	if cfg.MaxSourceLag == 0 {
		cfg.MaxSourceLag = -1
	}
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t)
	}
	f.prefix = cfg.Prefix
	f.c = mustCache(t, f.rc, cfg)
	f.ent = mustEntity(t, f.c, cache.EntityConfig[string]{Kind: "thing"})
	return f
}

func (f *fixture) get(id string, token uint64) (string, cache.Info) {
	f.t.Helper()
	v, info, err := f.ent.Get(context.Background(), id, token, f.db.loader(id, &f.calls))
	if err != nil {
		f.t.Fatalf("Get(%s): %v", id, err)
	}
	return v, info
}

// write changes id in the db and invalidates it, like a repository write.
func (f *fixture) write(id, value string) uint64 {
	f.t.Helper()
	pos := f.db.write(id, value, false)
	if err := f.ent.Invalidate(context.Background(), pos, id); err != nil {
		f.t.Fatalf("Invalidate: %v", err)
	}
	return pos
}

func TestGetServesFromRedisAfterFill(t *testing.T) {
	f := newFixture(t, cache.Config{})
	f.db.write("a", "v1", false)

	v, info := f.get("a", 0)
	if v != "v1" || !info.Found || info.Source != cache.SourceLoader {
		t.Fatalf("first Get = %q %+v, want v1 from loader", v, info)
	}
	v, info2 := f.get("a", 0)
	if v != "v1" || info2.Source != cache.SourceRedis || info2.Pos != info.Pos {
		t.Fatalf("second Get = %q %+v, want v1 from redis at pos %d", v, info2, info.Pos)
	}
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("loader calls = %d, want 1", got)
	}
	if s := f.c.Stats(); s.Fills != 1 || s.RedisHits != 1 || s.Misses != 1 {
		t.Fatalf("stats = %+v", s)
	}

	// After a write and its invalidation the entry is gone from Redis and
	// the new value is loaded.
	f.write("a", "v2")
	if n := len(entryKeys(t, f.rc, f.prefix, "thing", "a")); n != 0 {
		t.Fatalf("%d entry keys left after Invalidate", n)
	}
	if v, info := f.get("a", 0); v != "v2" || info.Source != cache.SourceLoader {
		t.Fatalf("after write Get = %q %+v, want v2 from loader", v, info)
	}
}

func TestReadYourWritesToken(t *testing.T) {
	f := newFixture(t, cache.Config{})
	f.db.write("a", "v1", false)
	_, filled := f.get("a", 0) // cached at filled.Pos
	for range 10 {
		f.db.write("other", "x", false) // later writes, so tokens up to +10 exist
	}

	latest := f.db.current() // every write so far is < latest
	steps := []struct {
		name   string
		token  uint64
		source cache.Source
		pos    uint64
	}{
		{"token below the entry's position is covered", filled.Pos - 1, cache.SourceRedis, filled.Pos},
		{"zero token needs nothing", 0, cache.SourceRedis, filled.Pos},
		{"token at the entry's position reads through", filled.Pos, cache.SourceLoader, latest},
		{"the read-through refilled at a later position", filled.Pos + 5, cache.SourceRedis, latest},
		{"token at the new position reads through", latest, cache.SourceLoader, latest},
	}
	for _, st := range steps {
		if st.source == cache.SourceLoader && st.token == latest {
			f.db.write("other", "y", false)
			st.pos = f.db.current()
		}
		_, info := f.get("a", st.token)
		if info.Source != st.source || info.Pos != st.pos {
			t.Fatalf("%s: got %v at %d, want %v at %d", st.name, info.Source, info.Pos, st.source, st.pos)
		}
	}
}

// A loader that read before a write, and offers its result after the write's
// invalidation, must be refused.
func TestSlowFillAfterInvalidationIsRefused(t *testing.T) {
	f := newFixture(t, cache.Config{})
	f.db.write("a", "old", false)

	read := make(chan struct{})
	release := make(chan struct{})
	done := make(chan string)
	go func() {
		v, _, err := f.ent.Get(context.Background(), "a", 0, func(ctx context.Context) (string, uint64, bool, error) {
			v, pos, found, err := f.db.loader("a", nil)(ctx)
			close(read)
			<-release
			return v, pos, found, err
		})
		if err != nil {
			t.Errorf("slow Get: %v", err)
		}
		done <- v
	}()
	<-read
	f.write("a", "new") // commit + invalidate while the slow reader holds "old"
	close(release)
	if v := <-done; v != "old" {
		t.Fatalf("slow Get = %q, want its own read %q", v, "old")
	}
	if s := f.c.Stats(); s.FillsRejectedStale != 1 || s.Fills != 0 {
		t.Fatalf("fills stored=%d stale=%d, want 0 and 1", s.Fills, s.FillsRejectedStale)
	}
	if v, info := f.get("a", 0); v != "new" || info.Source != cache.SourceLoader {
		t.Fatalf("Get after refused fill = %q from %v, want new from loader", v, info.Source)
	}
}

// A loader reporting a position at or below the marker (a lagging replica)
// is refused; strictly above it is accepted. Positions near 2^64 exercise
// the Lua comparison (doubles cannot hold them).
func TestFillPositionAgainstMarker(t *testing.T) {
	big := uint64(math.MaxUint64 - 1000)
	tests := []struct {
		name    string
		marker  uint64
		fillPos uint64
		stored  bool
	}{
		{"below marker refused", 100, 50, false},
		{"at marker refused", 100, 100, false},
		{"above marker stored", 100, 101, true},
		{"huge below marker refused", big, big - 1, false},
		{"huge at marker refused", big, big, false},
		{"huge above marker stored", big, big + 1, true},
		{"high word differs", 1 << 40, 1<<40 - 1, false},
		{"low word differs, high above", 1<<32 + 5, 1<<33 + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, cache.Config{})
			ctx := context.Background()
			if err := f.ent.Invalidate(ctx, tt.marker, "k"); err != nil {
				t.Fatal(err)
			}
			load := func(context.Context) (string, uint64, bool, error) { return "v", tt.fillPos, true, nil }
			if _, _, err := f.ent.Get(ctx, "k", 0, load); err != nil {
				t.Fatal(err)
			}
			_, info, err := f.ent.Get(ctx, "k", 0, load)
			if err != nil {
				t.Fatal(err)
			}
			if got := info.Source == cache.SourceRedis; got != tt.stored {
				t.Fatalf("served from redis = %v, want %v (stats %+v)", got, tt.stored, f.c.Stats())
			}
		})
	}
}

// An older fill never replaces a newer entry.
func TestFillDoesNotReplaceNewerEntry(t *testing.T) {
	f := newFixture(t, cache.Config{})
	ctx := context.Background()
	at := func(pos uint64, v string) cache.Loader[string] {
		return func(context.Context) (string, uint64, bool, error) { return v, pos, true, nil }
	}
	if _, _, err := f.ent.Get(ctx, "k", 0, at(50, "newer")); err != nil {
		t.Fatal(err)
	}
	// token 60 forces a load, which reads at 40 (a loader ignoring the token)
	if _, _, err := f.ent.Get(ctx, "k", 60, at(40, "older")); err != nil {
		t.Fatal(err)
	}
	v, info, err := f.ent.Get(ctx, "k", 0, at(1, "unused"))
	if err != nil || v != "newer" || info.Pos != 50 {
		t.Fatalf("Get = %q %+v %v, want newer at 50", v, info, err)
	}
	if s := f.c.Stats(); s.FillsSuperseded != 1 {
		t.Fatalf("superseded fills = %d, want 1", s.FillsSuperseded)
	}
}

// A fill whose load began before Redis lost its data (and the markers) must
// be refused, whether or not a new epoch was created meanwhile.
func TestFillAfterRedisRestartIsRefused(t *testing.T) {
	for _, newEpochFirst := range []bool{false, true} {
		name := "epoch missing"
		if newEpochFirst {
			name = "new epoch created by another reader"
		}
		t.Run(name, func(t *testing.T) {
			ownRedis(t)
			f := newFixture(t, cache.Config{})
			f.db.write("a", "old", false)
			f.get("b", 0) // creates the shard epochs this test uses

			read := make(chan struct{})
			release := make(chan struct{})
			done := make(chan error)
			go func() {
				_, _, err := f.ent.Get(context.Background(), "a", 0, func(ctx context.Context) (string, uint64, bool, error) {
					v, pos, found, err := f.db.loader("a", nil)(ctx)
					close(read)
					<-release
					return v, pos, found, err
				})
				done <- err
			}()
			<-read
			// The write is invalidated, then Redis loses everything.
			f.write("a", "new")
			ctx := context.Background()
			if err := cluster.KillRedis(ctx); err != nil {
				t.Fatal(err)
			}
			if err := cluster.StartRedis(ctx); err != nil {
				t.Fatal(err)
			}
			eventually(t, "redis answering", func() bool { return f.rc.Ping(ctx).Err() == nil })
			if newEpochFirst {
				// Another instance's read of the same shard creates its new
				// epoch.
				other := mustCache(t, newClient(t, cluster.RedisAddr()), cache.Config{Prefix: f.prefix, MaxSourceLag: -1, Logger: quietLogger()})
				oe := mustEntity(t, other, cache.EntityConfig[string]{Kind: "thing"})
				if _, info, err := oe.Get(ctx, "a", 0, f.db.loader("a", nil)); err != nil || info.Source != cache.SourceLoader {
					t.Fatalf("other instance Get: %+v %v", info, err)
				}
			}
			before := f.c.Stats()
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			after := f.c.Stats()
			if after.FillsRejectedEpoch != before.FillsRejectedEpoch+1 || after.Fills != before.Fills {
				t.Fatalf("the old-epoch fill was not refused: before %+v after %+v", before, after)
			}
			if v, _ := f.get("a", 0); v != "new" {
				t.Fatalf("Get after restart = %q, want new", v)
			}
		})
	}
}

// A fill that took longer than MarkerTTL/2 (by the injected clock) is
// refused: its marker might have expired.
func TestFillTooOldIsRefused(t *testing.T) {
	f := newFixture(t, cache.Config{MarkerTTL: time.Minute})
	f.db.write("a", "v", false)
	_, _, err := f.ent.Get(context.Background(), "a", 0, func(ctx context.Context) (string, uint64, bool, error) {
		f.clk.Advance(30 * time.Second)
		return f.db.loader("a", nil)(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := f.c.Stats(); s.FillsTooOld != 1 || s.Fills != 0 {
		t.Fatalf("fills stored=%d too-old=%d, want 0 and 1", s.Fills, s.FillsTooOld)
	}
	if _, info := f.get("a", 0); info.Source != cache.SourceLoader {
		t.Fatalf("source = %v, want loader", info.Source)
	}
	if _, info := f.get("a", 0); info.Source != cache.SourceRedis {
		t.Fatalf("a quick fill should be stored; source = %v", info.Source)
	}
}

// A new epoch accepts no fill until it is MaxSourceLag old (by the Redis
// server's clock).
func TestYoungEpochIsNotFilled(t *testing.T) {
	f := newFixture(t, cache.Config{MaxSourceLag: 100 * time.Millisecond})
	f.db.write("a", "v", false)
	if _, info := f.get("a", 0); info.Source != cache.SourceLoader {
		t.Fatal("want loader")
	}
	if s := f.c.Stats(); s.FillsYoungEpoch != 1 || s.Fills != 0 {
		t.Fatalf("fills stored=%d young=%d, want 0 and 1", s.Fills, s.FillsYoungEpoch)
	}
	eventually(t, "served from redis once the epoch is old enough", func() bool {
		_, info := f.get("a", 0)
		return info.Source == cache.SourceRedis
	})
}

func TestSingleflightCollapsesConcurrentMisses(t *testing.T) {
	f := newFixture(t, cache.Config{})
	f.db.write("hot", "v", false)
	const n = 20
	release := make(chan struct{})
	var calls atomic.Int64
	load := func(ctx context.Context) (string, uint64, bool, error) {
		calls.Add(1)
		<-release
		return f.db.loader("hot", nil)(ctx)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := f.ent.Get(context.Background(), "hot", 0, load)
			if err == nil && v != "v" {
				err = errors.New("wrong value " + v)
			}
			errs <- err
		}()
	}
	eventually(t, "all callers waiting on one load", func() bool {
		return calls.Load() == 1 && f.c.Stats().Waiting == n-1
	})
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("loader calls = %d, want 1", got)
	}
	if s := f.c.Stats(); s.Shared != n-1 {
		t.Fatalf("shared = %d, want %d", s.Shared, n-1)
	}
}

// A caller whose token the shared load does not cover loads on its own.
func TestSingleflightRespectsTokens(t *testing.T) {
	f := newFixture(t, cache.Config{})
	release := make(chan struct{})
	started := make(chan struct{})
	var calls atomic.Int64
	load := func(pos uint64) cache.Loader[string] {
		return func(context.Context) (string, uint64, bool, error) {
			if calls.Add(1) == 1 {
				close(started)
				<-release
			}
			return "v", pos, true, nil
		}
	}
	done := make(chan cache.Info)
	go func() {
		_, info, _ := f.ent.Get(context.Background(), "k", 0, load(10))
		done <- info
	}()
	<-started
	go func() {
		_, info, _ := f.ent.Get(context.Background(), "k", 20, load(30))
		done <- info
	}()
	eventually(t, "second caller waiting", func() bool { return f.c.Stats().Waiting == 1 })
	close(release)
	a, b := <-done, <-done
	if a.Pos > b.Pos {
		a, b = b, a
	}
	if a.Pos != 10 || b.Pos != 30 || calls.Load() != 2 {
		t.Fatalf("positions %d, %d with %d loads; want 10 and 30 with 2", a.Pos, b.Pos, calls.Load())
	}
}

func TestLoaderErrorsAndPanics(t *testing.T) {
	f := newFixture(t, cache.Config{})
	ctx := context.Background()
	_, _, err := f.ent.Get(ctx, "k", 0, func(context.Context) (string, uint64, bool, error) { return "", 0, false, errBoom })
	if !errors.Is(err, errBoom) {
		t.Fatalf("err = %v, want the loader's", err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Fatal("the loader's panic did not reach its caller")
			}
		}()
		_, _, _ = f.ent.Get(ctx, "k", 0, func(context.Context) (string, uint64, bool, error) { panic("loader bug") })
	}()
	// The key is usable afterwards.
	v, _, err := f.ent.Get(ctx, "k", 0, func(context.Context) (string, uint64, bool, error) { return "ok", 5, true, nil })
	if err != nil || v != "ok" {
		t.Fatalf("Get after panic = %q, %v", v, err)
	}
}

func TestNegativeEntries(t *testing.T) {
	f := newFixture(t, cache.Config{NegativeTTL: 3 * time.Second, TTL: time.Minute})
	v, info := f.get("ghost", 0)
	if info.Found || v != "" || info.Source != cache.SourceLoader {
		t.Fatalf("Get absent = %q %+v", v, info)
	}
	if _, info := f.get("ghost", 0); info.Found || info.Source != cache.SourceRedis {
		t.Fatalf("second Get absent = %+v, want a negative entry from redis", info)
	}
	// Its TTL is the negative one.
	ctx := context.Background()
	keys := entryKeys(t, f.rc, f.prefix, "thing", "ghost")
	if len(keys) != 1 {
		t.Fatalf("negative entry keys = %v", keys)
	}
	if ttl := f.rc.PTTL(ctx, keys[0]).Val(); ttl <= 0 || ttl > 3*time.Second {
		t.Fatalf("negative entry TTL = %v, want in (0, 3s]", ttl)
	}
	// Creating the row invalidates the negative entry like any other.
	f.write("ghost", "now here")
	if v, info := f.get("ghost", 0); !info.Found || v != "now here" {
		t.Fatalf("Get after create = %q %+v", v, info)
	}

	t.Run("NoNegative", func(t *testing.T) {
		ent := mustEntity(t, f.c, cache.EntityConfig[string]{Kind: "noneg", NoNegative: true})
		for range 2 {
			_, info, err := ent.Get(ctx, "x", 0, f.db.loader("x", nil))
			if err != nil || info.Source != cache.SourceLoader {
				t.Fatalf("Get = %+v %v, want loader every time", info, err)
			}
		}
	})
	t.Run("NegativeValues", func(t *testing.T) {
		ent := mustEntity(t, f.c, cache.EntityConfig[string]{Kind: "negval", NegativeValues: true})
		load := func(context.Context) (string, uint64, bool, error) {
			return "absent since 7", f.db.current(), false, nil
		}
		for i, want := range []cache.Source{cache.SourceLoader, cache.SourceRedis} {
			v, info, err := ent.Get(ctx, "x", 0, load)
			if err != nil || info.Found || info.Source != want || v != "absent since 7" {
				t.Fatalf("Get #%d = %q %+v %v, want the negative value from %v", i, v, info, err, want)
			}
		}
	})
}

func TestValuesOverSizeBoundAreNotCached(t *testing.T) {
	f := newFixture(t, cache.Config{MaxValueBytes: 1024})
	big := strings.Repeat("m", 2000)
	f.db.write("room", big, false)
	for range 2 {
		v, info := f.get("room", 0)
		if v != big || info.Source != cache.SourceLoader {
			t.Fatalf("Get big value: len %d from %v, want full value from loader", len(v), info.Source)
		}
	}
	if s := f.c.Stats(); s.FillsTooLarge != 2 || s.Fills != 0 {
		t.Fatalf("too-large=%d fills=%d", s.FillsTooLarge, s.Fills)
	}
	// Per-entity override.
	ent := mustEntity(t, f.c, cache.EntityConfig[string]{Kind: "bigok", MaxValueBytes: 4096})
	ctx := context.Background()
	_, _, _ = ent.Get(ctx, "room", 0, f.db.loader("room", nil))
	if _, info, _ := ent.Get(ctx, "room", 0, f.db.loader("room", nil)); info.Source != cache.SourceRedis {
		t.Fatalf("with a larger bound source = %v, want redis", info.Source)
	}
}

// A codec/version change never reads the old bytes, and an invalidation made
// by an instance on the new version still stops the old version's entries
// (markers are shared, versions are not).
func TestVersionedKeys(t *testing.T) {
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	cfg := cache.Config{Prefix: prefix, Now: clk.Now, MaxSourceLag: -1}
	oldC := mustCache(t, newClient(t, cluster.RedisAddr()), cfg)
	newC := mustCache(t, newClient(t, cluster.RedisAddr()), cfg)
	oldE := mustEntity(t, oldC, cache.EntityConfig[string]{Kind: "profile", Version: "1"})
	newE := mustEntity(t, newC, cache.EntityConfig[string]{Kind: "profile", Version: "2"})
	ctx := context.Background()
	d.write("u", "v1", false)
	if _, _, err := oldE.Get(ctx, "u", 0, d.loader("u", nil)); err != nil {
		t.Fatal(err)
	}
	if _, info, _ := newE.Get(ctx, "u", 0, d.loader("u", nil)); info.Source != cache.SourceLoader {
		t.Fatalf("new version read old bytes (source %v)", info.Source)
	}
	if _, info, _ := oldE.Get(ctx, "u", 0, d.loader("u", nil)); info.Source != cache.SourceRedis {
		t.Fatalf("old version lost its entry (source %v)", info.Source)
	}
	pos := d.write("u", "v2", false)
	if err := newE.Invalidate(ctx, pos, "u"); err != nil {
		t.Fatal(err)
	}
	if v, _, _ := oldE.Get(ctx, "u", 0, d.loader("u", nil)); v != "v2" {
		t.Fatalf("old version served %q after the new version invalidated", v)
	}
}

func TestInvalidArguments(t *testing.T) {
	f := newFixture(t, cache.Config{})
	ctx := context.Background()
	tests := []struct {
		name string
		err  error
	}{
		{"position 0", f.c.Invalidate(ctx, 0, cache.Key{Kind: "thing", ID: "a"})},
		{"empty kind", f.c.Invalidate(ctx, 5, cache.Key{Kind: "", ID: "a"})},
		{"kind with colon", f.c.Invalidate(ctx, 5, cache.Key{Kind: "a:b", ID: "a"})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, cache.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", tt.err)
			}
		})
	}
	cfgErrs := []struct {
		name string
		err  error
	}{
		{"duplicate kind", func() error { _, err := cache.NewEntity(f.c, cache.EntityConfig[string]{Kind: "thing"}); return err }()},
		{"bad kind", func() error { _, err := cache.NewEntity(f.c, cache.EntityConfig[string]{Kind: "a{b"}); return err }()},
		{"bad prefix", func() error { _, err := cache.New(f.rc, cache.Config{Prefix: "x{y}"}); return err }()},
		{"nil client", func() error { _, err := cache.New(nil, cache.Config{}); return err }()},
		{"marker TTL below 4x source lag", func() error {
			_, err := cache.New(f.rc, cache.Config{MarkerTTL: time.Second, MaxSourceLag: time.Second})
			return err
		}()},
	}
	for _, tt := range cfgErrs {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, cache.ErrInvalidConfig) {
				t.Fatalf("err = %v, want ErrInvalidConfig", tt.err)
			}
		})
	}
}

// Invalidations for kinds without a registered Entity still set markers that
// every reader checks.
func TestInvalidateUnregisteredKindSetsMarker(t *testing.T) {
	clk := newClock()
	prefix := uniquePrefix(t)
	cfg := cache.Config{Prefix: prefix, Now: clk.Now, MaxSourceLag: -1}
	reader := mustCache(t, newClient(t, cluster.RedisAddr()), cfg)
	relay := mustCache(t, newClient(t, cluster.RedisAddr()), cfg) // registers nothing
	ent := mustEntity(t, reader, cache.EntityConfig[string]{Kind: "thing"})
	ctx := context.Background()
	load := func(pos uint64) cache.Loader[string] {
		return func(context.Context) (string, uint64, bool, error) { return "v", pos, true, nil }
	}
	_, _, _ = ent.Get(ctx, "a", 0, load(10))
	if err := relay.Invalidate(ctx, 10, cache.Key{Kind: "thing", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, info, _ := ent.Get(ctx, "a", 0, load(10)); info.Source != cache.SourceLoader {
		t.Fatalf("entry at the marker's position served from %v", info.Source)
	}
}

// entryKeys lists the Redis entry keys of kind/id under prefix (any version).
func entryKeys(t *testing.T, rc *redis.Client, prefix, kind, id string) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	iter := rc.Scan(ctx, 0, prefix+":*:e:"+kind+":*:"+id, 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}
