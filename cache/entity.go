package cache

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Loader reads one entity from the source of truth. It returns the value,
// whether the row exists, and the position pos the data was read at: every
// write whose position is < pos is included (for a read on a hot standby,
// its replay position before the query plus one). pos 0 means "unknown":
// the value is returned to the caller but never cached. A Loader must honour
// the token its caller passed to Get (read from a source that covers it).
type Loader[V any] func(ctx context.Context) (v V, pos uint64, found bool, err error)

// Source says where a Get's value came from.
type Source uint8

// Sources of a Get's value.
const (
	SourceLoader Source = iota // the caller's (or a concurrent caller's) loader
	SourceL1                   // the in-process tier
	SourceRedis                // Redis
)

// String returns "loader", "l1" or "redis".
func (s Source) String() string {
	switch s {
	case SourceL1:
		return "l1"
	case SourceRedis:
		return "redis"
	default:
		return "loader"
	}
}

// Info describes the value a Get returned.
type Info struct {
	// Found is false when the row does not exist (a negative entry or the
	// loader's found=false); the value is then V's zero value, unless the
	// entity keeps NegativeValues.
	Found bool
	// Pos is the position the value was read at (0 if the loader reported
	// none). A caller keeping monotonic reads passes Pos-1 as a later token.
	Pos uint64
	// Source is where the value came from.
	Source Source
	// Shared reports that the value came from a concurrent Get of the same
	// key that was already under way (singleflight): it may have been read
	// slightly before this Get began, but it still covers this Get's token.
	Shared bool
}

// EntityConfig describes one entity kind.
type EntityConfig[V any] struct {
	// Kind names the entity, e.g. "profile" (required; no ':', '{' or '}';
	// unique per Cache). It is part of every key and of invalidations.
	Kind string
	// Version is the schema version of V's encoding, part of every entry key
	// with the codec's ID: change it when V changes shape. Default "1".
	Version string
	// Codec encodes values. Default JSON[V]().
	Codec Codec[V]
	// TTL and NegativeTTL override the Cache's (same rules: jittered,
	// clamped to MarkerTTL). Zero means the Cache's.
	TTL, NegativeTTL time.Duration
	// MaxValueBytes overrides the Cache's size bound when > 0.
	MaxValueBytes int
	// NoNegative disables negative entries: absent rows are not cached.
	NoNegative bool
	// NegativeValues keeps the loader's value with a negative entry (for
	// metadata about the absence, such as where it was read): Get then
	// returns that value with Found false instead of V's zero value.
	// Negative entries still live NegativeTTL.
	NegativeValues bool
	// NoL1 keeps this kind out of the in-process tier.
	NoL1 bool
	// ShareValues lets the in-process tier keep the decoded value and hand
	// that same value to every Get it serves, instead of decoding the
	// stored bytes on each hit (which for a long list costs far more than
	// the lookup). Callers must then treat values as immutable: whatever a
	// V refers to (slice elements, pointed-to fields, maps) is shared with
	// the cache and with other callers.
	ShareValues bool
}

// Entity is the typed cache-aside view of one entity kind. Safe for
// concurrent use.
type Entity[V any] struct {
	c         *Cache
	kind, tag string
	codec     Codec[V]
	ttl, neg  time.Duration
	maxBytes  int
	noNeg     bool
	negVals   bool
	share     bool
	l1        *l1
	flight    flight[V]
	attrs     entityAttrs
	ePrefix   []string // per shard: "P:F:{S}:e:KIND:TAG:"
	mPrefix   []string // per shard: "P:F:{S}:m:KIND:"
	epochKey  []string
	wmKey     []string
}

// NewEntity registers an entity kind with c and returns its typed view. It
// returns an error wrapping ErrInvalidConfig for a bad or duplicate Kind, a
// bad Version or codec ID.
func NewEntity[V any](c *Cache, cfg EntityConfig[V]) (*Entity[V], error) {
	if !validName(cfg.Kind) {
		return nil, fmt.Errorf("%w: entity kind %q", ErrInvalidConfig, cfg.Kind)
	}
	if cfg.Version == "" {
		cfg.Version = "1"
	}
	if cfg.Codec == nil {
		cfg.Codec = JSON[V]()
	}
	if !validName(cfg.Version) || !validCodecID(cfg.Codec.ID()) {
		return nil, fmt.Errorf("%w: entity %q: version %q / codec ID %q", ErrInvalidConfig, cfg.Kind, cfg.Version, cfg.Codec.ID())
	}
	e := &Entity[V]{
		c:        c,
		kind:     cfg.Kind,
		tag:      cfg.Version + "." + cfg.Codec.ID(),
		codec:    cfg.Codec,
		ttl:      c.cfg.TTL,
		neg:      c.cfg.NegativeTTL,
		maxBytes: c.cfg.MaxValueBytes,
		noNeg:    cfg.NoNegative,
		negVals:  cfg.NegativeValues,
		share:    cfg.ShareValues,
		attrs:    newEntityAttrs(cfg.Kind),
	}
	if cfg.TTL > 0 {
		e.ttl = min(cfg.TTL, c.cfg.MarkerTTL)
	}
	if cfg.NegativeTTL > 0 {
		e.neg = min(cfg.NegativeTTL, c.cfg.MarkerTTL)
	}
	if cfg.MaxValueBytes > 0 {
		e.maxBytes = cfg.MaxValueBytes
	}
	if !cfg.NoL1 {
		e.l1 = c.l1
	}
	for s := range c.ks.shards {
		e.ePrefix = append(e.ePrefix, c.entryKey(s, e.kind, e.tag, ""))
		e.mPrefix = append(e.mPrefix, c.ks.markerKey(s, e.kind, ""))
		e.epochKey = append(e.epochKey, c.ks.epochKey(s))
		e.wmKey = append(e.wmKey, c.ks.watermarkKey(s))
	}
	if err := c.register(e.kind, e.tag); err != nil {
		return nil, err
	}
	return e, nil
}

// Cache returns the Cache e belongs to.
func (e *Entity[V]) Cache() *Cache { return e.c }

// Key returns the Key of id in this kind, for Cache.Invalidate.
func (e *Entity[V]) Key(id string) Key { return Key{Kind: e.kind, ID: id} }

// Invalidate is Cache.Invalidate for ids of this kind.
func (e *Entity[V]) Invalidate(ctx context.Context, pos uint64, ids ...string) error {
	keys := make([]Key, len(ids))
	for i, id := range ids {
		keys[i] = Key{Kind: e.kind, ID: id}
	}
	return e.c.Invalidate(ctx, pos, keys...)
}

type result[V any] struct {
	v    V
	info Info
	wm   uint64 // the watermark a cached value was served under
}

// Get returns the entity id, from the L1, Redis or load, in that order.
//
// token is the caller's consistency requirement: the position of the latest
// write the caller must see (0 for none). A cached entry is used only if it
// was read at a position > token, or if token is below the watermark (see
// Cache.SetWatermark: every write below it has been invalidated, so a current
// entry includes every write of its key the token covers); otherwise Get
// calls load (which must honour the token itself) and offers the result to
// the cache.
//
// Concurrent Gets of the same id in one process share one Redis lookup and at
// most one load (a caller whose token the shared result does not cover runs
// its own). A loaded value is stored only if the Redis script accepts it:
// same epoch as when loading began, position above the key's invalidation
// marker, load begun less than MarkerTTL/2 ago, encoded size within
// MaxValueBytes. Absent rows (found=false) are cached as negative entries
// with NegativeTTL unless NoNegative.
//
// Redis problems never surface: when Redis is slow, down or the breaker is
// open, Get calls load. Errors returned are load's own (unwrapped), the
// ctx's error while waiting for a shared load, or ErrLoaderPanicked when a
// shared load panicked.
func (e *Entity[V]) Get(ctx context.Context, id string, token uint64, load Loader[V]) (V, Info, error) {
	return e.GetShared(ctx, id, token, "", load)
}

// GetShared is Get where a load is shared only among concurrent callers
// passing the same group. Callers whose loaders make different promises —
// e.g. reads with different staleness bounds, where a load that satisfied a
// loose bound (a lagging replica) must not be handed to a caller with a
// tight one — pass different groups. Redis entries are shared regardless:
// they are kept current by invalidation, not by the loader's promise.
func (e *Entity[V]) GetShared(ctx context.Context, id string, token uint64, group string, load Loader[V]) (V, Info, error) {
	k := l1Key{e.kind, id}
	if e.l1 != nil {
		if h, ok := e.l1.get(k, token, e.c.epochOf); ok {
			if v, found, err := e.decodeHit(h); err == nil {
				e.c.inst.lookups.Add(ctx, 1, e.attrs.l1Hit)
				if !covers(h.pos, token) {
					e.c.ctr.watermarkHits.Add(1)
				}
				return v, Info{Found: found, Pos: h.pos, Source: SourceL1}, nil
			}
			e.l1.invalidate(k, h.pos)
		}
	}
	fetch := func(ctx context.Context) (result[V], error) { return e.fetch(ctx, k, token, load) }
	fkey := id
	if group != "" {
		fkey = group + "\x00" + id
	}
	r, shared, err := e.flight.do(ctx, fkey, &e.c.ctr.waiting, fetch)
	if shared {
		switch {
		case err == nil && (covers(r.info.Pos, token) || r.info.Source != SourceLoader && token < r.wm):
			e.c.ctr.shared.Add(1)
			e.c.inst.loads.Add(ctx, 1, e.attrs.sharedLoad)
			r.info.Shared = true
			return r.v, r.info, nil
		case err == nil, ctx.Err() == nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
			// The shared result does not cover our token, or the leader's
			// context ended: do our own.
			r, err = fetch(ctx)
		}
	}
	return r.v, r.info, err
}

// decodeHit returns an L1 hit's value: the shared decoded one if kept.
func (e *Entity[V]) decodeHit(h l1Hit) (V, bool, error) {
	if v, ok := h.value.(V); ok && e.share {
		return v, !h.negative, nil
	}
	return e.decode(h.payload, h.negative)
}

// l1Value is what the L1 keeps of a value besides its bytes.
func (e *Entity[V]) l1Value(v V) any {
	if e.share {
		return v
	}
	return nil
}

func (e *Entity[V]) decode(payload []byte, negative bool) (V, bool, error) {
	if negative && !e.negVals {
		var zero V
		return zero, false, nil
	}
	v, err := e.codec.Decode(payload)
	return v, err == nil && !negative, err
}

// fetch is one caller's (or one flight's) Redis lookup, load and fill.
func (e *Entity[V]) fetch(ctx context.Context, k l1Key, token uint64, load Loader[V]) (result[V], error) {
	c := e.c
	sh := c.ks.shard(k.kind, k.id)
	var (
		ekey, mkey string
		epoch      uint64
		started    time.Time
		epochAge   time.Duration
		useRedis   = c.usable(ctx)
	)
	if useRedis {
		ekey, mkey = e.ePrefix[sh]+k.id, e.mPrefix[sh]+k.id
		snap := e.snap()
		started = snap.at
		ep, age, raw, wm, err := e.read(ctx, sh, mkey, ekey)
		switch {
		case err != nil:
			useRedis = false
		default:
			epoch, epochAge = ep, age
			c.noteEpoch(sh, ep)
			if raw == "" {
				break
			}
			h, herr := parseHeader(raw)
			if herr != nil || !covers(h.pos, token) && token >= wm {
				break
			}
			payload := []byte(raw[hdrLen:])
			v, found, derr := e.decode(payload, h.negative)
			if derr != nil {
				c.log.Warn("undecodable cache entry dropped", "kind", k.kind, "err", derr)
				_ = c.exec(ctx, func(ctx context.Context) error { return c.client.Del(ctx, ekey).Err() })
				break
			}
			c.ctr.redisHits.Add(1)
			if !covers(h.pos, token) {
				c.ctr.watermarkHits.Add(1)
			}
			c.inst.lookups.Add(ctx, 1, e.attrs.redisHit)
			if e.l1 != nil {
				e.l1.put(k, sh, payload, e.l1Value(v), h.pos, h.epoch, h.negative, snap)
			}
			return result[V]{v: v, info: Info{Found: found, Pos: h.pos, Source: SourceRedis}, wm: wm}, nil
		}
	}
	c.ctr.misses.Add(1)
	c.inst.lookups.Add(ctx, 1, e.attrs.miss)
	c.ctr.loads.Add(1)
	c.inst.loads.Add(ctx, 1, e.attrs.load)
	v, pos, found, err := load(ctx)
	if err != nil {
		var zero V
		return result[V]{v: zero}, err
	}
	if !found && !e.negVals {
		var zero V
		v = zero
	}
	r := result[V]{v: v, info: Info{Found: found, Pos: pos, Source: SourceLoader}}
	e.fill(ctx, useRedis, k, sh, ekey, mkey, epoch, epochAge, started, r)
	return r, nil
}

func (e *Entity[V]) snap() l1Snap {
	if e.l1 != nil {
		return e.l1.snap()
	}
	return l1Snap{at: e.c.cfg.Now()}
}

// read runs readLua: the shard's epoch ID (the epoch is created if missing)
// and its age by the Redis server's clock when the script ran, the entry if
// it is current and above the marker ("" if none), and the shard's
// watermark (0 if none).
func (e *Entity[V]) read(ctx context.Context, sh int, mkey, ekey string) (id uint64, age time.Duration, raw string, wm uint64, err error) {
	var res []any
	err = e.c.exec(ctx, func(ctx context.Context) error {
		var err error
		res, err = e.c.readScript.Run(ctx, e.c.client, []string{e.epochKey[sh], mkey, ekey, e.wmKey[sh]}, u64bytes(newEpochID())).Slice()
		return err
	})
	if err != nil {
		return 0, 0, "", 0, err
	}
	bad := func(what string) (uint64, time.Duration, string, uint64, error) {
		return 0, 0, "", 0, fmt.Errorf("cache: read script: bad %s", what)
	}
	if len(res) != 4 {
		return bad("result")
	}
	ep, ok := res[0].(string)
	if !ok || len(ep) < 9 {
		return bad("epoch")
	}
	created, err := strconv.ParseInt(ep[8:], 10, 64)
	if err != nil {
		return bad("epoch time")
	}
	now, ok := res[1].(int64)
	if !ok {
		return bad("time")
	}
	raw, _ = res[2].(string)
	if w, ok := res[3].(string); ok && len(w) == 8 {
		wm = beUint64(w)
	}
	return beUint64(ep[:8]), time.Duration(now-created) * time.Millisecond, raw, wm, nil
}

func (e *Entity[V]) count(ctx context.Context, outcome string) {
	c := e.c
	switch outcome {
	case outStored:
		c.ctr.fills.Add(1)
	case outStale:
		c.ctr.fillsStale.Add(1)
	case outEpoch:
		c.ctr.fillsEpoch.Add(1)
	case outTooOld:
		c.ctr.fillsTooOld.Add(1)
	case outTooLarge:
		c.ctr.fillsTooLarge.Add(1)
	case outSuperseded:
		c.ctr.fillsSuperseded.Add(1)
	case outSkipped:
		c.ctr.fillsSkipped.Add(1)
	case outYoungEpoch:
		c.ctr.fillsYoungEpoch.Add(1)
	default:
		c.ctr.fillErrors.Add(1)
	}
	c.inst.fills.Add(ctx, 1, e.attrs.fill[outcome])
}

// fill offers a loaded result to Redis (and, if accepted, to the L1).
func (e *Entity[V]) fill(ctx context.Context, useRedis bool, k l1Key, sh int, ekey, mkey string, epoch uint64, epochAge time.Duration, started time.Time, r result[V]) {
	c := e.c
	if !r.info.Found && e.noNeg {
		return
	}
	if !useRedis || r.info.Pos == 0 || c.dirty() || c.closed.Load() {
		e.count(ctx, outSkipped)
		return
	}
	buf := appendHeader(make([]byte, 0, 128), epoch, r.info.Pos, !r.info.Found)
	ttl := e.neg
	if r.info.Found || e.negVals {
		var err error
		buf, err = e.codec.Append(buf, r.v)
		if err != nil {
			c.log.Warn("cache encode failed", "kind", k.kind, "err", err)
			e.count(ctx, outError)
			return
		}
	}
	if r.info.Found {
		ttl = e.ttl
	}
	if len(buf)-hdrLen > e.maxBytes {
		e.count(ctx, outTooLarge)
		return
	}
	snap := e.snap()
	if snap.at.Sub(started) >= c.cfg.MarkerTTL/2 {
		e.count(ctx, outTooOld)
		return
	}
	// The load began after the read script ran, so even a source lagging by
	// MaxSourceLag includes every write made before the epoch was created
	// if the epoch was that old then (by the Redis server's clock).
	if epochAge < c.cfg.MaxSourceLag {
		e.count(ctx, outYoungEpoch)
		return
	}
	ttl = jitter(ttl, c.cfg.Jitter)
	var res int64
	err := c.exec(ctx, func(ctx context.Context) error {
		var err error
		res, err = c.fillScript.Run(ctx, c.client, []string{e.epochKey[sh], mkey, ekey},
			u64bytes(epoch), u64bytes(r.info.Pos), buf, strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)).Int64()
		return err
	})
	switch {
	case err != nil:
		e.count(ctx, outError)
	case res == fillStored:
		e.count(ctx, outStored)
		if e.l1 != nil {
			e.l1.put(k, sh, buf[hdrLen:], e.l1Value(r.v), r.info.Pos, epoch, !r.info.Found, snap)
		}
	case res == fillStale:
		e.count(ctx, outStale)
	case res == fillEpoch:
		e.count(ctx, outEpoch)
	case res == fillSuperseded:
		e.count(ctx, outSuperseded)
	default:
		e.count(ctx, outError)
	}
}

// jitter returns a duration uniform in [d*(1-j), d].
func jitter(d time.Duration, j float64) time.Duration {
	if j <= 0 || d <= 0 {
		return d
	}
	return d - time.Duration(rand.Float64()*j*float64(d))
}
