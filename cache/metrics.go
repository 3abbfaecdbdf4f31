package cache

import (
	"context"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Stats is a snapshot of a Cache's counters since New. Counters count events
// of this instance only.
type Stats struct {
	L1Hits    uint64 // Gets served by the in-process tier
	L1Misses  uint64 // L1 lookups that found nothing usable
	RedisHits uint64 // Gets served by Redis
	Misses    uint64 // Gets that needed a load (absent, stale for the token, or Redis unavailable)
	Loads     uint64 // loader calls
	Shared    uint64 // Gets answered by another caller's concurrent load of the same key
	// WatermarkHits counts hits (L1 or Redis) whose entry was read at or
	// below the Get's token and was served because the token is below the
	// watermark.
	WatermarkHits uint64

	Fills              uint64 // entries stored in Redis
	FillsRejectedStale uint64 // refused: position not above the key's invalidation marker
	FillsRejectedEpoch uint64 // refused: the shard's epoch changed while loading (Redis restarted or epoch bumped)
	FillsTooOld        uint64 // refused: the load began more than MarkerTTL/2 before the fill
	FillsTooLarge      uint64 // not attempted: encoded value above MaxValueBytes
	FillsSuperseded    uint64 // not stored: a current entry at the same or a later position exists
	FillsSkipped       uint64 // not attempted: position unknown (0), Redis unavailable or epoch dirty
	FillsYoungEpoch    uint64 // not attempted: the shard's epoch is younger than MaxSourceLag
	FillErrors         uint64 // failed: Redis error or encoding error

	Invalidations      uint64 // keys invalidated in Redis
	InvalidationErrors uint64 // Invalidate calls that failed (and marked the epoch dirty)
	EpochBumps         uint64 // successful epoch bumps
	RedisErrors        uint64 // failed Redis operations, all kinds

	L1Flushes uint64 // whole-L1 flushes (subscription loss/recovery, epoch change, overflow)
	L1Entries int
	L1Bytes   int
	L1Trusted bool // the L1 subscription is up and the L1 is in use

	Watermark  uint64          // the last watermark this instance set (SetWatermark)
	Waiting    int64           // callers now waiting for another caller's load
	Breaker    gobreaker.State // state of the Redis breaker
	EpochDirty bool            // invalidations were dropped and the epoch bump has not succeeded yet
}

// L1HitRate returns L1Hits / (L1Hits + L1Misses), or 0 before any lookup.
func (s Stats) L1HitRate() float64 {
	n := s.L1Hits + s.L1Misses
	if n == 0 {
		return 0
	}
	return float64(s.L1Hits) / float64(n)
}

type counters struct {
	redisHits, misses, loads, shared, watermarkHits                            atomic.Uint64
	fills, fillsStale, fillsEpoch, fillsTooOld, fillsTooLarge, fillsSuperseded atomic.Uint64
	fillsSkipped, fillsYoungEpoch, fillErrors                                  atomic.Uint64
	invalidations, invalidationErrors, epochBumps, redisErrors                 atomic.Uint64
	waiting                                                                    atomic.Int64
}

// Metric names; every instrument has an "entity" attribute where it applies.
const (
	metricLookups       = "hsdal.cache.lookups"       // attrs entity, result=l1_hit|redis_hit|miss
	metricLoads         = "hsdal.cache.loads"         // attrs entity, shared=true|false
	metricFills         = "hsdal.cache.fills"         // attrs entity, outcome
	metricInvalidations = "hsdal.cache.invalidations" // attrs outcome=ok|error (keys)
	metricEpochBumps    = "hsdal.cache.epoch_bumps"
	metricL1Flushes     = "hsdal.cache.l1.flushes" // attrs reason
	metricBreaker       = "hsdal.cache.breaker.state"
	metricL1HitRate     = "hsdal.cache.l1.hit_ratio"
	metricL1Entries     = "hsdal.cache.l1.entries"
	metricL1Bytes       = "hsdal.cache.l1.bytes"
)

// Fill outcomes, as the "outcome" attribute of hsdal.cache.fills.
const (
	outStored     = "stored"
	outStale      = "rejected_stale"
	outEpoch      = "rejected_epoch"
	outTooOld     = "rejected_too_old"
	outTooLarge   = "too_large"
	outSuperseded = "superseded"
	outSkipped    = "skipped"
	outYoungEpoch = "young_epoch"
	outError      = "error"
)

type instruments struct {
	lookups, loads, fills, invalidations, bumps, flushes metric.Int64Counter
	reg                                                  metric.Registration
}

func newInstruments(mp metric.MeterProvider, c *Cache) (*instruments, error) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter("github.com/hsdal/hsdal/cache")
	var in instruments
	var err error
	mk := func(name, desc string) metric.Int64Counter {
		if err != nil {
			return nil
		}
		var ctr metric.Int64Counter
		ctr, err = m.Int64Counter(name, metric.WithDescription(desc))
		return ctr
	}
	in.lookups = mk(metricLookups, "Cache lookups by result (l1_hit, redis_hit, miss).")
	in.loads = mk(metricLoads, "Loader calls, and callers that shared one.")
	in.fills = mk(metricFills, "Fill attempts by outcome; rejected_stale counts fills refused by an invalidation marker.")
	in.invalidations = mk(metricInvalidations, "Keys invalidated, by outcome.")
	in.bumps = mk(metricEpochBumps, "Epoch bumps after dropped invalidations or on request.")
	in.flushes = mk(metricL1Flushes, "Whole-L1 flushes by reason.")
	if err != nil {
		return nil, err
	}
	breaker, err := m.Int64ObservableGauge(metricBreaker, metric.WithDescription("Redis breaker state: 0 closed, 1 half-open, 2 open."))
	if err != nil {
		return nil, err
	}
	hitRate, err := m.Float64ObservableGauge(metricL1HitRate, metric.WithDescription("L1 hits / L1 lookups since start."))
	if err != nil {
		return nil, err
	}
	entries, err := m.Int64ObservableGauge(metricL1Entries, metric.WithDescription("Entries in the L1."))
	if err != nil {
		return nil, err
	}
	byteSize, err := m.Int64ObservableGauge(metricL1Bytes, metric.WithDescription("Accounted bytes in the L1."), metric.WithUnit("By"))
	if err != nil {
		return nil, err
	}
	in.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(breaker, int64(c.cb.State()))
		if c.l1 != nil {
			n, b := c.l1.size()
			o.ObserveInt64(entries, int64(n))
			o.ObserveInt64(byteSize, int64(b))
			h, mi := c.l1.hits.Load(), c.l1.misses.Load()
			if h+mi > 0 {
				o.ObserveFloat64(hitRate, float64(h)/float64(h+mi))
			}
		}
		return nil
	}, breaker, hitRate, entries, byteSize)
	if err != nil {
		return nil, err
	}
	return &in, nil
}

// entityAttrs holds precomputed attribute options for one entity kind.
type entityAttrs struct {
	l1Hit, redisHit, miss, load, sharedLoad metric.AddOption
	fill                                    map[string]metric.AddOption
}

func newEntityAttrs(kind string) entityAttrs {
	ent := attribute.String("entity", kind)
	opt := func(kv ...attribute.KeyValue) metric.AddOption {
		return metric.WithAttributeSet(attribute.NewSet(append([]attribute.KeyValue{ent}, kv...)...))
	}
	a := entityAttrs{
		l1Hit:      opt(attribute.String("result", "l1_hit")),
		redisHit:   opt(attribute.String("result", "redis_hit")),
		miss:       opt(attribute.String("result", "miss")),
		load:       opt(attribute.Bool("shared", false)),
		sharedLoad: opt(attribute.Bool("shared", true)),
		fill:       map[string]metric.AddOption{},
	}
	for _, o := range []string{outStored, outStale, outEpoch, outTooOld, outTooLarge, outSuperseded, outSkipped, outYoungEpoch, outError} {
		a.fill[o] = opt(attribute.String("outcome", o))
	}
	return a
}
