package cache_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hsdal/hsdal/cache"
)

// The watermark lets a token-bearing Get use an entry read at or below its
// token once every write below the watermark has been invalidated.
func TestWatermarkServesCurrentEntriesToOlderTokens(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, cache.Config{})
	f.db.write("a", "v1", false)
	_, filled := f.get("a", 0)
	for range 10 {
		f.db.write("other", "x", false)
	}
	token := filled.Pos + 3 // a session token above the entry

	if _, info := f.get("a", token); info.Source != cache.SourceLoader {
		t.Fatalf("without a watermark: served from %v, want loader", info.Source)
	}
	// The read-through refilled "a" above the token; start over with an
	// entry below it.
	pos := f.write("a", "v2")
	_, filled = f.get("a", 0)
	for range 10 {
		f.db.write("other", "x", false)
	}
	token = filled.Pos + 3
	if err := f.c.SetWatermark(ctx, token+1); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		token  uint64
		source cache.Source
	}{
		{"token below the watermark uses the entry", token, cache.SourceRedis},
		{"token at the watermark reads through", token + 1, cache.SourceLoader},
	}
	for _, st := range steps {
		if v, info := f.get("a", st.token); info.Source != st.source || v != "v2" {
			t.Fatalf("%s: %q from %v, want v2 from %v", st.name, v, info.Source, st.source)
		}
	}
	if s := f.c.Stats(); s.WatermarkHits != 1 || s.Watermark != token+1 {
		t.Fatalf("stats: watermark hits %d, watermark %d", s.WatermarkHits, s.Watermark)
	}
	// An invalidated entry is gone whatever the watermark.
	f.write("a", "v3")
	if v, info := f.get("a", pos); v != "v3" || info.Source != cache.SourceLoader {
		t.Fatalf("after invalidation: %q from %v", v, info.Source)
	}
	// Watermarks only grow.
	if err := f.c.SetWatermark(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := f.c.SetWatermark(ctx, 0); !errors.Is(err, cache.ErrInvalidArgument) {
		t.Fatalf("SetWatermark(0) = %v, want ErrInvalidArgument", err)
	}
}

// An epoch bump (e.g. after Redis lost data, or on request) forgets the
// watermark: it was a claim about the invalidations of the old epoch.
func TestWatermarkResetByEpochBump(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, cache.Config{})
	f.db.write("a", "v1", false)
	_, filled := f.get("a", 0)
	if err := f.c.SetWatermark(ctx, filled.Pos+10); err != nil {
		t.Fatal(err)
	}
	if _, info := f.get("a", filled.Pos+1); info.Source != cache.SourceRedis {
		t.Fatalf("before the bump: served from %v, want redis", info.Source)
	}
	if err := f.c.BumpEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	f.get("a", 0) // refill in the new epoch
	if _, info := f.get("a", f.db.current()); info.Source != cache.SourceLoader {
		t.Fatalf("after the bump: served from %v, want loader", info.Source)
	}
}

// An L1 uses the watermark only as received through its subscription, after
// the invalidation messages published before it.
func TestWatermarkReachesL1ThroughPubSub(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	d := newDB(clk.Now)
	prefix := uniquePrefix(t)
	a := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	b := newInstance(t, cluster.RedisAddr(), prefix, clk, d, cache.Config{})
	d.write("k", "v1", false)
	info := wantGet(t, b, "k", 0, "v1", cache.SourceLoader)
	wantGet(t, b, "k", 0, "v1", cache.SourceL1)
	token := info.Pos + 1
	d.write("other", "x", false)
	d.write("other", "y", false)
	if err := a.c.SetWatermark(ctx, token+1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b's L1 serves a token below the watermark", func() bool {
		_, got := b.get("k", token)
		return got.Source == cache.SourceL1
	})
	// A flush (here: an epoch bump message) forgets the L1's watermark.
	if err := a.c.BumpEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b's L1 flushed", func() bool { return b.c.Stats().L1Entries == 0 })
	clk.Advance(0)
	if _, got := b.get("k", token); got.Source == cache.SourceL1 {
		t.Fatal("L1 served a token above the entry after the watermark was reset")
	}
}
