package cache_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/hsdal/hsdal/cache"
)

// Benchmarks run against the package's real Redis on loopback.
//
//	go test -run '^$' -bench . -benchmem ./cache/

func benchEntity(b *testing.B, l1 bool) *cache.Entity[profile] {
	b.Helper()
	// A frozen clock: L1 entries never expire during the run.
	cfg := cache.Config{MaxSourceLag: -1, Logger: quietLogger(), Now: newClock().Now}
	cfg.L1.Enabled = l1
	c := mustCache(b, newClient(b, cluster.RedisAddr()), cfg)
	if l1 {
		eventually(b, "L1 subscription up", func() bool { return c.Stats().L1Trusted })
	}
	return mustEntity(b, c, cache.EntityConfig[profile]{Kind: "profile", Codec: profileCodec})
}

func profileLoader(p profile, pos uint64) cache.Loader[profile] {
	return func(context.Context) (profile, uint64, bool, error) { return p, pos, true, nil }
}

func BenchmarkGet(b *testing.B) {
	ctx := context.Background()
	p := sampleProfile()
	b.Run("hit_l1", func(b *testing.B) {
		e := benchEntity(b, true)
		load := profileLoader(p, 10)
		if _, _, err := e.Get(ctx, "@alice:example.org", 0, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			_, info, err := e.Get(ctx, "@alice:example.org", 0, load)
			if err != nil || info.Source != cache.SourceL1 {
				b.Fatalf("%+v %v", info, err)
			}
		}
	})
	b.Run("hit_redis", func(b *testing.B) {
		e := benchEntity(b, false)
		load := profileLoader(p, 10)
		if _, _, err := e.Get(ctx, "@alice:example.org", 0, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			_, info, err := e.Get(ctx, "@alice:example.org", 0, load)
			if err != nil || info.Source != cache.SourceRedis {
				b.Fatalf("%+v %v", info, err)
			}
		}
	})
	b.Run("miss_fill", func(b *testing.B) {
		// Every Get is a miss on a new key: read script, loader, fill script.
		e := benchEntity(b, false)
		load := profileLoader(p, 10)
		b.ReportAllocs()
		b.ResetTimer()
		i := 0
		for b.Loop() {
			i++
			_, info, err := e.Get(ctx, "@u"+strconv.Itoa(i)+":example.org", 0, load)
			if err != nil || info.Source != cache.SourceLoader {
				b.Fatalf("%+v %v", info, err)
			}
		}
		b.StopTimer()
		if s := e.Cache().Stats(); s.Fills != s.Loads {
			b.Fatalf("fills %d != loads %d", s.Fills, s.Loads)
		}
	})
	b.Run("hit_l1_parallel", func(b *testing.B) {
		e := benchEntity(b, true)
		load := profileLoader(p, 10)
		if _, _, err := e.Get(ctx, "@alice:example.org", 0, load); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, _, err := e.Get(ctx, "@alice:example.org", 0, load); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("invalidate", func(b *testing.B) {
		e := benchEntity(b, true)
		b.ReportAllocs()
		b.ResetTimer()
		var pos uint64
		for b.Loop() {
			pos++
			if err := e.Invalidate(ctx, pos, "@alice:example.org"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchCodec[V any](b *testing.B, c cache.Codec[V], v V) {
	enc, err := c.Append(nil, v)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			if _, err := c.Append(buf[:0], v); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(enc)), "bytes/value")
	})
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Decode(enc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkRedisGET is the floor for hit_redis: one plain GET round trip
// with the same client.
func BenchmarkRedisGET(b *testing.B) {
	ctx := context.Background()
	rc := newClient(b, cluster.RedisAddr())
	key := uniquePrefix(b)
	v, _ := profileCodec.Append(nil, sampleProfile())
	if err := rc.Set(ctx, key, v, 0).Err(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rc.Get(ctx, key).Bytes(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCodec compares the compact binary codec with encoding/json on a
// profile and on a 10-device list.
func BenchmarkCodec(b *testing.B) {
	b.Run("profile/binary", func(b *testing.B) { benchCodec(b, profileCodec, sampleProfile()) })
	b.Run("profile/json", func(b *testing.B) { benchCodec(b, cache.JSON[profile](), sampleProfile()) })
	b.Run("devices10/binary", func(b *testing.B) { benchCodec(b, devicesCodec, sampleDevices(10)) })
	b.Run("devices10/json", func(b *testing.B) { benchCodec(b, cache.JSON[[]device](), sampleDevices(10)) })
}
