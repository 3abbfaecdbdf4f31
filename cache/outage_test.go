package cache_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/hsdal/hsdal/cache"
)

var outageCfg = cache.Config{
	OpTimeout: 100 * time.Millisecond,
	Breaker:   cache.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 50 * time.Millisecond},
}

// Redis killed: Gets keep succeeding through the loader and Invalidate
// reports the failure; Redis back: the epoch is bumped before Redis is used
// again and nothing stale is served.
func TestRedisKilledThenRestarted(t *testing.T) {
	ownRedis(t)
	clk := newClock()
	d := newDB(clk.Now)
	in := newInstance(t, cluster.RedisAddr(), uniquePrefix(t), clk, d, outageCfg)
	d.write("x", "v1", false)
	in.get("x", 0)
	wantGet(t, in, "x", 0, "v1", cache.SourceL1)

	ctx := context.Background()
	if err := cluster.KillRedis(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "breaker open", func() bool {
		if v, _ := in.get("x", 0); v != "v1" {
			t.Fatalf("Get during outage = %q", v)
		}
		return in.c.Stats().Breaker == gobreaker.StateOpen
	})
	if in.c.Stats().L1Trusted {
		t.Fatal("L1 still trusted with Redis down")
	}
	_, err := in.write("x", "v2")
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Invalidate during outage: err = %v, want ErrUnavailable", err)
	}
	if !in.c.Stats().EpochDirty {
		t.Fatal("epoch not dirty after a dropped invalidation")
	}
	for range 20 {
		wantGet(t, in, "x", 0, "v2", cache.SourceLoader)
	}

	if err := cluster.StartRedis(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "served from a cache tier again", func() bool {
		v, info := in.get("x", 0)
		if v != "v2" {
			t.Fatalf("served %q after Redis returned", v)
		}
		return info.Source != cache.SourceLoader
	})
	if s := in.c.Stats(); s.EpochDirty || s.EpochBumps < 1 {
		t.Fatalf("after recovery: dirty=%v bumps=%d", s.EpochDirty, s.EpochBumps)
	}
}

// An instance cut off from a Redis that keeps running (and keeps the entry)
// drops an invalidation; when it can reach Redis again it bumps the epoch
// before using Redis, so no instance serves the entry that missed the
// invalidation. Meanwhile readers holding the write's token never see it.
func TestDroppedInvalidationBumpsEpoch(t *testing.T) {
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	p := newProxy(t, cluster.RedisAddr())
	cutOff := newInstance(t, p.Addr(), prefix, clk, d, outageCfg)
	peer := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	d.write("x", "v1", false)
	peer.get("x", 0)
	wantGet(t, cutOff, "x", 0, "v1", cache.SourceRedis)

	p.setCut(true)
	pos, err := cutOff.write("x", "v2")
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Invalidate while cut off: err = %v, want ErrUnavailable", err)
	}
	wantGet(t, cutOff, "x", 0, "v2", cache.SourceLoader)
	// The peer still has the old entry (the invalidation is pending in the
	// durable feed), but never serves it to a reader holding the token.
	wantGet(t, peer, "x", 0, "v1", cache.SourceL1)
	// (The loader reports no position, so this read does not refill the
	// entry; the stale entry must stay in Redis for the rest of the test.)
	v, _, err := peer.ent.Get(context.Background(), "x", pos, func(context.Context) (string, uint64, bool, error) {
		return d.at("x", d.current()).value, 0, true, nil
	})
	if err != nil || v != "v2" {
		t.Fatalf("peer with the write's token got %q (%v)", v, err)
	}

	flushes := peer.c.Stats().L1Flushes
	p.setCut(false)
	eventually(t, "cut-off instance bumped the epoch", func() bool {
		if v, _ := cutOff.get("x", 0); v != "v2" {
			t.Fatalf("cut-off instance served %q after reconnecting", v)
		}
		s := cutOff.c.Stats()
		return !s.EpochDirty && s.EpochBumps == 1
	})
	eventually(t, "peer's L1 flushed by the bump", func() bool { return peer.c.Stats().L1Flushes > flushes })
	if v, _ := peer.get("x", 0); v != "v2" {
		t.Fatalf("peer served %q after the bump", v)
	}
}

func TestClosedCache(t *testing.T) {
	f := newFixture(t, cache.Config{})
	if err := f.c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	f.db.write("a", "v", false)
	if v, info := f.get("a", 0); v != "v" || info.Source != cache.SourceLoader {
		t.Fatalf("Get after Close = %q from %v", v, info.Source)
	}
	if err := f.ent.Invalidate(context.Background(), 5, "a"); !errors.Is(err, cache.ErrClosed) {
		t.Fatalf("Invalidate after Close: %v", err)
	}
	if err := f.c.BumpEpoch(context.Background()); !errors.Is(err, cache.ErrClosed) {
		t.Fatalf("BumpEpoch after Close: %v", err)
	}
}
