package cache_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hsdal/hsdal/cache"
)

// instance is one Cache with L1 and a string entity, sharing a db and a
// prefix with its peers.
type instance struct {
	t   *testing.T
	c   *cache.Cache
	ent *cache.Entity[string]
	db  *db
}

func newInstance(t *testing.T, addr, prefix string, clk *clock, d *db, cfg cache.Config) *instance {
	t.Helper()
	cfg.Prefix = prefix
	cfg.Now = clk.Now
	if cfg.MaxSourceLag == 0 {
		cfg.MaxSourceLag = -1
	}
	cfg.L1.Enabled = true
	if cfg.L1.HealthInterval == 0 {
		cfg.L1.HealthInterval = 100 * time.Millisecond
	}
	c := mustCache(t, newClient(t, addr), cfg)
	in := &instance{t: t, c: c, ent: mustEntity(t, c, cache.EntityConfig[string]{Kind: "thing"}), db: d}
	eventually(t, "L1 subscription up", func() bool { return c.Stats().L1Trusted })
	return in
}

func (in *instance) get(id string, token uint64) (string, cache.Info) {
	in.t.Helper()
	v, info, err := in.ent.Get(context.Background(), id, token, in.db.loader(id, nil))
	if err != nil {
		in.t.Fatalf("Get(%s): %v", id, err)
	}
	return v, info
}

func (in *instance) write(id, value string) (uint64, error) {
	pos := in.db.write(id, value, false)
	return pos, in.ent.Invalidate(context.Background(), pos, id)
}

func wantGet(t *testing.T, in *instance, id string, token uint64, value string, source cache.Source) cache.Info {
	t.Helper()
	v, info := in.get(id, token)
	if v != value || info.Source != source {
		t.Fatalf("Get(%s, %d) = %q from %v, want %q from %v", id, token, v, info.Source, value, source)
	}
	return info
}

func TestL1InvalidatedAcrossInstances(t *testing.T) {
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	a := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	b := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	d.write("x", "v1", false)

	wantGet(t, a, "x", 0, "v1", cache.SourceLoader)
	filled := wantGet(t, a, "x", 0, "v1", cache.SourceL1)
	wantGet(t, b, "x", 0, "v1", cache.SourceRedis)
	wantGet(t, b, "x", 0, "v1", cache.SourceL1)

	// An L1 entry obeys tokens like a Redis entry.
	wantGet(t, b, "x", filled.Pos-1, "v1", cache.SourceL1)
	wantGet(t, a, "x", filled.Pos, "v1", cache.SourceLoader)

	flushes := b.c.Stats().L1Flushes
	pos, err := a.write("x", "v2")
	if err != nil {
		t.Fatal(err)
	}
	// The writer's own L1 is dropped at once; a reader holding the token is
	// never served the old entry, message or not.
	wantGet(t, a, "x", 0, "v2", cache.SourceLoader)
	if v, _ := b.get("x", pos); v != "v2" {
		t.Fatalf("B with the write's token got %q", v)
	}
	// B's L1 drops it through pub/sub (a per-key drop, not a flush).
	eventually(t, "B's L1 entry dropped", func() bool {
		v, _ := b.get("x", 0)
		return v == "v2"
	})
	if got := b.c.Stats().L1Flushes; got != flushes {
		t.Fatalf("B flushed its whole L1 (%d -> %d) for one key", flushes, got)
	}

	// L1 entries expire after L1.TTL by the injected clock.
	wantGet(t, b, "x", 0, "v2", cache.SourceL1)
	clk.Advance(cache.DefaultL1TTL)
	wantGet(t, b, "x", 0, "v2", cache.SourceRedis)
	if r := b.c.Stats().L1HitRate(); r <= 0 || r >= 1 {
		t.Fatalf("L1 hit rate = %v", r)
	}
}

// Killing the subscription's connection flushes the L1, and the L1 is used
// again only after the subscription is back.
func TestL1FlushedOnSubscriptionLoss(t *testing.T) {
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	in := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	d.write("x", "v1", false)
	in.get("x", 0)
	wantGet(t, in, "x", 0, "v1", cache.SourceL1)

	before := in.c.Stats().L1Flushes
	admin := newClient(t, cluster.RedisAddr())
	if err := admin.ClientKillByFilter(context.Background(), "TYPE", "pubsub").Err(); err != nil {
		t.Fatal(err)
	}
	// lost (flush) + resubscribed (flush)
	eventually(t, "L1 flushed twice and trusted again", func() bool {
		s := in.c.Stats()
		return s.L1Flushes >= before+2 && s.L1Trusted
	})
	wantGet(t, in, "x", 0, "v1", cache.SourceRedis)
	wantGet(t, in, "x", 0, "v1", cache.SourceL1)
}

// While an instance is cut off from Redis its L1 is not used, so an
// invalidation message it cannot receive cannot leave it serving old data.
func TestL1UnusedWhileCutOff(t *testing.T) {
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	p := newProxy(t, cluster.RedisAddr())
	cutOff := newInstance(t, p.Addr(), prefix, clk, d, cache.Config{OpTimeout: 100 * time.Millisecond})
	writer := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	d.write("x", "v1", false)
	cutOff.get("x", 0)
	wantGet(t, cutOff, "x", 0, "v1", cache.SourceL1)

	p.setCut(true)
	eventually(t, "cut-off L1 untrusted", func() bool { return !cutOff.c.Stats().L1Trusted })
	if _, err := writer.write("x", "v2"); err != nil {
		t.Fatal(err)
	}
	wantGet(t, cutOff, "x", 0, "v2", cache.SourceLoader)

	p.setCut(false)
	eventually(t, "cut-off L1 trusted again", func() bool { return cutOff.c.Stats().L1Trusted })
	eventually(t, "served from a cache tier again", func() bool {
		v, info := cutOff.get("x", 0)
		if v != "v2" {
			t.Fatalf("served %q after reconnecting", v)
		}
		return info.Source != cache.SourceLoader
	})
}

// With ShareValues, L1 hits return the decoded value kept at fill time
// instead of decoding again; without it every hit gets its own copy.
func TestL1SharedValues(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	cfg := cache.Config{Prefix: uniquePrefix(t), Now: clk.Now, MaxSourceLag: -1}
	cfg.L1 = cache.L1Config{Enabled: true, HealthInterval: 100 * time.Millisecond}
	c := mustCache(t, newClient(t, cluster.RedisAddr()), cfg)
	eventually(t, "L1 subscription up", func() bool { return c.Stats().L1Trusted })
	load := func(context.Context) ([]string, uint64, bool, error) { return []string{"a", "b"}, 10, true, nil }
	for _, share := range []bool{true, false} {
		e := mustEntity(t, c, cache.EntityConfig[[]string]{Kind: fmt.Sprintf("list%v", share), ShareValues: share})
		if _, _, err := e.Get(ctx, "k", 0, load); err != nil {
			t.Fatal(err)
		}
		var got [][]string
		for range 2 {
			v, info, err := e.Get(ctx, "k", 0, load)
			if err != nil || info.Source != cache.SourceL1 || len(v) != 2 || v[1] != "b" {
				t.Fatalf("share=%v: Get = %v %+v %v", share, v, info, err)
			}
			got = append(got, v)
		}
		if same := &got[0][0] == &got[1][0]; same != share {
			t.Fatalf("share=%v: the two hits share memory: %v", share, same)
		}
	}
}
