package dal_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

var prefixSeq atomic.Int64

// cachedDB is a fresh migrated database shared by several DALs with one
// cache key space on the package's Redis.
type cachedDB struct {
	name, dsn string
	replicas  []string
	prefix    string
}

func newCachedDB(t testing.TB) *cachedDB {
	t.Helper()
	ctx := testCtx(t)
	name, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	db := &cachedDB{name: name, dsn: dsn, prefix: fmt.Sprintf("t%d_%d", prefixSeq.Add(1), time.Now().UnixNano())}
	for _, r := range cluster.ReplicaDSNs() {
		db.replicas = append(db.replicas, withDB(t, r, name))
	}
	return db
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// config is a DAL config over db with the cache on; tune adjusts it.
func (db *cachedDB) config(tune func(*dal.Config)) dal.Config {
	cfg := dal.Config{
		PrimaryDSN:  db.dsn,
		ReplicaDSNs: db.replicas,
		CursorKey:   []byte("0123456789abcdef0123456789abcdef"),
		RedisAddr:   cluster.RedisAddr(),
		Cache: cache.Config{
			Prefix: db.prefix,
			Logger: quietLogger(),
			// Tests restart Redis; a short grace keeps them quick. The
			// router's staleness bound below stays under it.
			MaxSourceLag: time.Second,
			Breaker:      cache.BreakerConfig{OpenTimeout: 100 * time.Millisecond},
		},
		Relay: dal.RelayConfig{PollInterval: 20 * time.Millisecond, LockWait: 200 * time.Millisecond,
			RetryBackoff: 20 * time.Millisecond},
		DisableQueryTracer: true,
	}
	cfg.Router.DefaultMaxStaleness = 300 * time.Millisecond
	cfg.Router.Logger = quietLogger()
	if tune != nil {
		tune(&cfg)
	}
	return cfg
}

func (db *cachedDB) open(t testing.TB, tune func(*dal.Config)) *dal.DAL {
	t.Helper()
	d, err := dal.Open(testCtx(t), db.config(tune))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// waitFillable waits until d's cache accepts fills: a key space's epochs
// take fills only once they are MaxSourceLag old (so that no lagging
// replica can refill what an invalidation lost with Redis's data removed).
func waitFillable(t testing.TB, d *dal.DAL) {
	t.Helper()
	ctx := testCtx(t)
	waitFor(t, 10*time.Second, "the cache to accept fills", func() bool {
		// Room IDs spread over the shards (256 IDs miss one of the 16
		// shards with odds of about 1e-6); absent rooms are negative
		// entries. Ready when every read fills or hits.
		const probes = 256
		s := stats(t, d)
		before := s.Fills + s.RedisHits + s.L1Hits
		for i := range probes {
			_, _ = d.Rooms.GetRoom(ctx, fmt.Sprintf("!probe%d:example.org", i))
		}
		s = stats(t, d)
		return s.Fills+s.RedisHits+s.L1Hits >= before+probes
	})
}

// super is a superuser connection to db on the primary, for writes made
// outside hsdal.
func (db *cachedDB) super(t testing.TB) *pgx.Conn {
	t.Helper()
	return mustConnect(t, withDB(t, cluster.Primary().SuperDSN(), db.name))
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval; the deadline bounds the wait
	}
}

func stats(t testing.TB, d *dal.DAL) cache.Stats {
	t.Helper()
	s, ok := d.CacheStats()
	if !ok {
		t.Fatal("DAL has no cache")
	}
	return s
}

func waitActiveRelay(t testing.TB, ds ...*dal.DAL) *dal.DAL {
	t.Helper()
	var leader *dal.DAL
	waitFor(t, 10*time.Second, "one relay active", func() bool {
		n := 0
		for _, d := range ds {
			if d.RelayStatus().Active {
				leader = d
				n++
			}
		}
		return n == 1
	})
	return leader
}

func name(u repos.User) string {
	if u.DisplayName == nil {
		return ""
	}
	return *u.DisplayName
}

func TestCacheServesHotReadsAndWritesInvalidate(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	a := db.open(t, nil)
	b := db.open(t, nil)
	const alice = "@alice:example.org"
	if _, _, err := a.Users.CreateUser(ctx, repos.NewUser{UserID: alice, DisplayName: ptr("Alice")}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitFillable(t, b)
	for i := range 3 {
		u, err := b.Users.GetUser(ctx, alice)
		if err != nil || name(u) != "Alice" {
			t.Fatalf("GetUser #%d = %+v, %v", i, u, err)
		}
	}
	if s := stats(t, b); s.RedisHits < 2 || s.Fills < 1 {
		t.Fatalf("b's cache: %d hits, %d fills; want the repeated reads served from Redis", s.RedisHits, s.Fills)
	}
	// A write through a invalidates at once (fast path): b's next read,
	// without any session, loads the new value.
	if _, _, err := a.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{DisplayName: ptr("Alicia")}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	if u, err := b.Users.GetUser(ctx, alice); err != nil || name(u) != "Alicia" {
		t.Fatalf("after the update GetUser = %+v, %v", u, err)
	}
	// Strong reads never touch the cache.
	before := stats(t, b)
	if u, err := b.Users.GetUser(ctx, alice, router.Strong()); err != nil || name(u) != "Alicia" {
		t.Fatalf("strong GetUser = %+v, %v", u, err)
	}
	if after := stats(t, b); after.RedisHits != before.RedisHits || after.Misses != before.Misses {
		t.Fatalf("a Strong read used the cache: %+v → %+v", before, after)
	}
	// Absent rows are cached as negative entries and created rows replace them.
	const bob = "@bob:example.org"
	for range 2 {
		if _, err := b.Users.GetUser(ctx, bob); !errors.Is(err, repos.ErrNotFound) {
			t.Fatalf("GetUser(absent) = %v, want ErrNotFound", err)
		}
	}
	sctx := router.WithSession(ctx, router.Token{})
	if _, _, err := a.Users.CreateUser(sctx, repos.NewUser{UserID: bob}); err != nil {
		t.Fatal(err)
	}
	// Read-your-writes across instances: the session token travels to b.
	if _, err := b.Users.GetUser(router.WithSession(ctx, router.SessionToken(sctx)), bob); err != nil {
		t.Fatalf("GetUser in the writer's session on another instance: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// Rows changed by plain SQL on the primary, outside hsdal, are invalidated
// by the relay within a bound.
func TestWritesOutsideHsdalAreInvalidated(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	d := db.open(t, nil)
	waitActiveRelay(t, d)
	su := db.super(t)
	const (
		alice = "@alice:example.org"
		bob   = "@bob:example.org"
		room  = "!room:example.org"
		bound = 5 * time.Second
	)
	token := "raw-token-0123456789abcdef"
	for _, f := range []func() error{
		func() error { _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: alice}); return err },
		func() error { _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: bob}); return err },
		func() error {
			_, _, err := d.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "DEV1"})
			return err
		},
		func() error {
			_, err := d.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: token, UserID: alice, DeviceID: "DEV1"})
			return err
		},
		func() error {
			_, _, err := d.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: room, Creator: alice})
			return err
		},
		func() error { _, _, err := d.Memberships.Join(ctx, room, alice); return err },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitFillable(t, d)
	tests := []struct {
		name  string
		sql   string
		check func() (bool, error) // reports whether the read shows the change
	}{
		{"profile", `UPDATE users SET displayname = 'Changed' WHERE user_id = '` + alice + `'`, func() (bool, error) {
			u, err := d.Users.GetUser(ctx, alice)
			return name(u) == "Changed", err
		}},
		{"device list", `UPDATE devices SET display_name = 'Phone' WHERE user_id = '` + alice + `'`, func() (bool, error) {
			p, err := d.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: alice})
			return err == nil && len(p.Items) == 1 && p.Items[0].DisplayName != nil && *p.Items[0].DisplayName == "Phone", err
		}},
		{"token of a deactivated user", `UPDATE users SET deactivated = true WHERE user_id = '` + alice + `'`, func() (bool, error) {
			_, err := d.AccessTokens.LookupToken(ctx, token)
			if errors.Is(err, repos.ErrNotFound) {
				return true, nil
			}
			return false, err
		}},
		{"room", `UPDATE rooms SET name = 'Renamed' WHERE room_id = '` + room + `'`, func() (bool, error) {
			r, err := d.Rooms.GetRoom(ctx, room)
			return r.Name != nil && *r.Name == "Renamed", err
		}},
		{"membership", `INSERT INTO room_memberships (room_id, user_id, membership, sender) VALUES ('` + room + `', '` + bob + `', 'join', '` + bob + `')`, func() (bool, error) {
			joined, err := d.Memberships.IsJoined(ctx, room, bob)
			if err != nil || !joined {
				return false, err
			}
			p, err := d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room})
			return len(p.Items) == 2, err
		}},
		{"room deleted", `UPDATE rooms SET deleted_at = 1 WHERE room_id = '` + room + `'`, func() (bool, error) {
			joined, err := d.Memberships.IsJoined(ctx, room, bob)
			if err != nil || joined {
				return false, err
			}
			_, err = d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room})
			return errors.Is(err, repos.ErrNotFound), nil
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Fill the cache (twice: the second read is a hit).
			for range 2 {
				if ok, err := tc.check(); err != nil || ok {
					t.Fatalf("before the change: shows it=%v, err=%v", ok, err)
				}
			}
			mustExec(t, su, tc.sql)
			start := time.Now()
			waitFor(t, bound, "the change to show through the cache", func() bool {
				ok, err := tc.check()
				if err != nil {
					t.Fatal(err)
				}
				return ok
			})
			t.Logf("visible after %v", time.Since(start).Round(time.Millisecond))
		})
	}
	if n := mustCount(t, su, `SELECT count(*) FROM cache_outbox`); n != 0 {
		waitFor(t, bound, "the outbox to drain", func() bool {
			return mustCount(t, su, `SELECT count(*) FROM cache_outbox`) == 0
		})
	}
}

func TestHealthReportsRedisAndRelay(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	d := db.open(t, nil)
	waitActiveRelay(t, d)
	rep := d.Health(ctx)
	if rep.Snapshot.Redis == nil || !rep.Snapshot.Redis.Up {
		t.Fatalf("Redis not reported up: %v", rep)
	}
	if rep.Snapshot.Relay == nil || rep.Snapshot.Relay.Error != "" {
		t.Fatalf("relay lag not reported: %v", rep)
	}
	found := 0
	for _, c := range rep.Checks {
		if c.Name == "relay" || c.Name == "redis" {
			found++
			if c.Status != health.OK {
				t.Errorf("check %s = %v (%s), want OK", c.Name, c.Status, c.Reason)
			}
		}
	}
	if found != 2 {
		t.Fatalf("checks %+v: want relay and redis", rep.Checks)
	}
}

func TestWarmupLoadsRecentlyActiveUsers(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	var tick atomic.Int64 // every timestamp a second after the previous one
	start := time.Now()
	plain := db.open(t, func(c *dal.Config) {
		c.RedisAddr = ""
		c.Repos.Now = func() time.Time { return start.Add(time.Duration(tick.Add(1)) * time.Second) }
	})
	var users []string
	for i := range 5 {
		u := fmt.Sprintf("@active%d:example.org", i)
		users = append(users, u)
		if _, _, err := plain.Users.CreateUser(ctx, repos.NewUser{UserID: u}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := plain.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: u, DeviceID: "D", IP: "10.0.0.1"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	d := db.open(t, func(c *dal.Config) { c.Warmup = dal.WarmupConfig{Users: 3} })
	waitFor(t, 15*time.Second, "the warm-up to fill 3 profiles and 3 device lists", func() bool {
		return stats(t, d).Fills >= 6
	})
	hits := stats(t, d).RedisHits
	if _, err := d.Users.GetUser(ctx, users[4]); err != nil { // the most recently seen
		t.Fatal(err)
	}
	if stats(t, d).RedisHits == hits {
		t.Fatal("the most recently active user's profile was not warmed up")
	}
}

// The cache and relay metrics reach the configured MeterProvider.
func TestCacheMetrics(t *testing.T) {
	ctx := testCtx(t)
	db := newCachedDB(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	d := db.open(t, func(c *dal.Config) {
		c.Router.MeterProvider = mp
		c.Cache.L1.Enabled = true
	})
	waitActiveRelay(t, d)
	waitFillable(t, d)
	const alice = "@alice:example.org"
	if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: alice}); err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := d.Users.GetUser(ctx, alice); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{
		"hsdal.cache.lookups":          false, // hits and misses, by tier
		"hsdal.cache.fills":            false, // incl. rejected_stale
		"hsdal.cache.l1.hit_ratio":     false,
		"hsdal.cache.breaker.state":    false,
		"hsdal.cache.invalidation.lag": false, // commit (outbox row) → invalidated by the relay
		"hsdal.cache.relay.lag":        false,
		"hsdal.cache.relay.leader":     false,
		"hsdal.cache.relay.rows":       false,
		"hsdal.cache.relay.watermark":  false,
		"hsdal.cache.invalidations":    false,
		"hsdal.router.queries":         false,
		"hsdal.cache.l1.entries":       false,
		"hsdal.cache.loads":            false,
		"hsdal.cache.epoch_bumps":      true, // only after an epoch bump
		"hsdal.cache.l1.flushes":       true, // only after a flush
	}
	waitFor(t, 10*time.Second, "every metric reported", func() bool {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if _, ok := want[m.Name]; ok {
					want[m.Name] = true
				}
			}
		}
		for _, seen := range want {
			if !seen {
				return false
			}
		}
		return true
	})
}

func TestCacheConfigChecks(t *testing.T) {
	db := newCachedDB(t)
	for _, tc := range []struct {
		name string
		tune func(*dal.Config)
	}{
		{"grace shorter than replica staleness", func(c *dal.Config) { c.Cache.MaxSourceLag = 100 * time.Millisecond }},
		{"no grace with replicas", func(c *dal.Config) { c.Cache.MaxSourceLag = -1 }},
		{"bad prefix", func(c *dal.Config) { c.Cache.Prefix = "a{b}" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := dal.Open(testCtx(t), db.config(tc.tune))
			if err == nil {
				d.Close()
			}
			if !errors.Is(err, dal.ErrConfig) {
				t.Fatalf("Open = %v, want ErrConfig", err)
			}
		})
	}
}
