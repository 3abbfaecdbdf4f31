package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Cache is a Redis cache-aside store for hot entities, with an optional
// in-process tier. Entities are typed views created with NewEntity; the Cache
// itself handles invalidation, epochs, the breaker and the L1 subscription.
// A Cache is safe for concurrent use. Close it when done; it never closes the
// Redis client it was given.
//
// # Positions
//
// Positions are WAL positions as plain numbers. A write has a position (its
// consistency token); data read "at position p" includes every write whose
// position is < p. Loaders report the position their data was read at, and
// Invalidate is given the position of the write that changed the key.
//
// # Guarantees
//
//   - No backwards fill: once Invalidate(pos, k) has returned nil, a Get of
//     k begun afterwards is never served, from Redis or this instance's L1,
//     an entry read at a position <= pos, and no such entry can be stored
//     again (refused atomically in Redis by the key's invalidation marker,
//     kept for MarkerTTL). Other instances' L1s drop the entry when the
//     pub/sub message arrives; an L1 whose subscription is down is not used.
//     (A Get that joins a lookup of k already under way shares its result;
//     see Info.Shared.)
//   - Read-your-writes: Get with token t serves a cached entry only if it was
//     read at a position > t, or t is below the watermark (SetWatermark: the
//     durable feed has invalidated every write below it, so a current entry
//     includes every write t covers); otherwise it calls the loader.
//   - Redis restarts and outages: every shard of keys has an epoch in Redis
//     (a random ID and its creation time); a fill presents the epoch it saw
//     before loading and is refused if the epoch changed; the epoch is
//     recreated with a new ID when Redis lost it, and a new epoch is filled
//     only by loads begun when it was MaxSourceLag old, so lagging sources
//     cannot refill what lost markers protected. An Invalidate that fails
//     marks this instance's epoch dirty: until new epochs have been written
//     to Redis this instance neither reads nor fills Redis, and once written
//     every older entry is dead. So when Redis returns, nothing that missed
//     an invalidation is served.
//
// Redis requirements: no persistence that can restore an older data set
// (a restored snapshot brings back markers and entries from before writes
// that were invalidated since; call BumpEpoch after such a restore or a
// Sentinel/Cluster failover that may have lost acknowledged writes), and a
// maxmemory policy that does not evict invalidation markers before entries
// (noeviction or volatile-ttl; allkeys-* policies are unsupported).
type Cache struct {
	client redis.UniversalClient
	cfg    Config
	ks     keyspace
	cb     *gobreaker.CircuitBreaker[struct{}]
	log    *slog.Logger

	readScript, fillScript, invScript, epochScript, wmScript *redis.Script
	lastWatermark                                            atomic.Uint64 // set by this instance

	// dropped counts invalidations dropped so far; clean is the value of
	// dropped covered by the last successful epoch bump. The epoch is dirty
	// while they differ.
	dropped, clean atomic.Uint64
	bumpMu         sync.Mutex

	epochs []atomic.Uint64 // last epoch seen per shard; 0 = none yet
	l1     *l1

	mu    sync.Mutex
	kinds map[string]string // registered kind -> "VER.CODEC"

	ctr  counters
	inst *instruments

	closed   atomic.Bool
	stop     context.CancelFunc
	subDone  chan struct{}
	closeErr error
	once     sync.Once
}

// New returns a Cache over client with cfg (zero fields take their
// defaults). It performs no I/O itself; with cfg.L1.Enabled it starts a
// goroutine that keeps the L1's pub/sub subscription, stopped by Close.
// It returns an error wrapping ErrInvalidConfig for a bad cfg or a nil
// client, or the error of registering the metrics.
func New(client redis.UniversalClient, cfg Config) (*Cache, error) {
	if client == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cache{
		client:      client,
		cfg:         cfg,
		ks:          newKeyspace(cfg.Prefix, cfg.Shards),
		log:         cfg.Logger.With("component", "hsdal/cache"),
		readScript:  redis.NewScript(readLua),
		fillScript:  redis.NewScript(fillLua),
		invScript:   redis.NewScript(invalidateLua),
		epochScript: redis.NewScript(setEpochLua),
		wmScript:    redis.NewScript(setWatermarkLua),
		epochs:      make([]atomic.Uint64, cfg.Shards),
		kinds:       make(map[string]string),
	}
	c.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:    "hsdal-cache-redis",
		Timeout: cfg.Breaker.OpenTimeout,
		ReadyToTrip: func(n gobreaker.Counts) bool {
			return n.ConsecutiveFailures >= cfg.Breaker.ConsecutiveFailures
		},
		IsExcluded: func(err error) bool {
			var cg callerGone
			return errors.As(err, &cg)
		},
		OnStateChange: func(_ string, from, to gobreaker.State) {
			c.log.Info("redis breaker state changed", "from", from.String(), "to", to.String())
		},
	})
	if cfg.L1.Enabled {
		c.l1 = newL1(cfg.L1, cfg.Now, c.onL1Flush)
	}
	c.inst, err = newInstruments(cfg.MeterProvider, c)
	if err != nil {
		return nil, fmt.Errorf("cache: metrics: %w", err)
	}
	if c.l1 != nil {
		ctx, cancel := context.WithCancel(context.Background())
		c.stop = cancel
		c.subDone = make(chan struct{})
		go c.subscribeLoop(ctx)
	}
	return c, nil
}

// Close stops the L1 subscription and unregisters the metrics callbacks. It
// is idempotent and does not close the Redis client. After Close, Get only
// calls loaders, and Invalidate and BumpEpoch return ErrClosed.
func (c *Cache) Close() error {
	c.once.Do(func() {
		c.closed.Store(true)
		if c.stop != nil {
			c.stop()
			<-c.subDone
		}
		if c.l1 != nil {
			c.l1.setTrusted(false, "close")
		}
		c.closeErr = c.inst.reg.Unregister()
	})
	return c.closeErr
}

// callerGone wraps an error caused by the caller's own context ending, which
// must not count against Redis in the breaker.
type callerGone struct{ err error }

func (e callerGone) Error() string { return e.err.Error() }
func (e callerGone) Unwrap() error { return e.err }

// exec runs op against Redis through the breaker with OpTimeout. Errors wrap
// ErrUnavailable when the breaker refused or Redis failed.
func (c *Cache) exec(ctx context.Context, op func(ctx context.Context) error) error {
	_, err := c.cb.Execute(func() (struct{}, error) {
		octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
		defer cancel()
		err := op(octx)
		if err != nil && ctx.Err() != nil {
			return struct{}{}, callerGone{err}
		}
		return struct{}{}, err
	})
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !errors.Is(err, gobreaker.ErrOpenState) && !errors.Is(err, gobreaker.ErrTooManyRequests) {
		c.ctr.redisErrors.Add(1)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

func (c *Cache) dirty() bool { return c.dropped.Load() != c.clean.Load() }

func (c *Cache) markDirty() { c.dropped.Add(1) }

// usable reports whether Get may use Redis now: the cache is open and the
// epoch is clean (a dirty epoch is bumped first, by one caller at a time).
func (c *Cache) usable(ctx context.Context) bool {
	if c.closed.Load() {
		return false
	}
	if !c.dirty() {
		return true
	}
	if !c.bumpMu.TryLock() {
		return false // another caller is bumping right now
	}
	defer c.bumpMu.Unlock()
	return c.bumpLocked(ctx) == nil
}

// BumpEpoch gives every shard a new epoch, which makes every entry in Redis
// dead and every in-flight fill fail, and tells every L1 to flush. Call it
// after anything that may have lost or undone invalidations outside this
// package's sight (a Redis restore from a snapshot, a failover with lost
// writes). Until it succeeds this instance neither reads nor fills Redis.
// It returns an error wrapping ErrUnavailable when Redis cannot be reached
// (the bump is then retried by later operations), or ErrClosed.
func (c *Cache) BumpEpoch(ctx context.Context) error {
	if c.closed.Load() {
		return ErrClosed
	}
	c.markDirty()
	c.bumpMu.Lock()
	defer c.bumpMu.Unlock()
	if err := c.bumpLocked(ctx); err != nil {
		return fmt.Errorf("cache: bump epoch: %w", err)
	}
	return nil
}

func (c *Cache) bumpLocked(ctx context.Context) error {
	target := c.dropped.Load()
	if c.clean.Load() == target {
		return nil
	}
	err := c.exec(ctx, func(ctx context.Context) error {
		return c.evalPipeline(ctx, c.epochScript, func(pipe redis.Pipeliner, eval evalFunc) {
			for s := range c.ks.shards {
				eval(ctx, pipe, []string{c.ks.epochKey(s)}, u64bytes(newEpochID()))
			}
			pipe.Publish(ctx, c.ks.channel, []byte{msgFlush})
		})
	})
	if err != nil {
		return err
	}
	c.clean.Store(target)
	c.ctr.epochBumps.Add(1)
	c.inst.bumps.Add(ctx, 1)
	if c.l1 != nil {
		c.l1.flush("epoch_bump")
	}
	c.log.Info("epoch bumped after dropped invalidations")
	return nil
}

// newEpochID returns a random nonzero epoch ID. Randomness, not a counter, is
// what makes an epoch recreated after Redis lost its data differ from every
// epoch an in-flight fill may hold.
func newEpochID() uint64 { return rand.Uint64() | 1 }

type evalFunc func(ctx context.Context, pipe redis.Pipeliner, keys []string, args ...any)

// evalPipeline sends the commands fill adds to one pipeline, running script
// by SHA; if Redis does not know the script (NOSCRIPT, e.g. after a restart)
// the whole pipeline is sent again with the script's source, so what fill
// adds must be idempotent.
func (c *Cache) evalPipeline(ctx context.Context, script *redis.Script, fill func(pipe redis.Pipeliner, eval evalFunc)) error {
	run := func(bySource bool) error {
		pipe := c.client.Pipeline()
		fill(pipe, func(ctx context.Context, pipe redis.Pipeliner, keys []string, args ...any) {
			if bySource {
				script.Eval(ctx, pipe, keys, args...)
			} else {
				script.EvalSha(ctx, pipe, keys, args...)
			}
		})
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run(false)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		err = run(true)
	}
	return err
}

// noteEpoch records the epoch Redis reported for a shard; a change flushes
// the L1 (its entries carry the old epoch).
func (c *Cache) noteEpoch(shard int, ep uint64) {
	old := c.epochs[shard].Swap(ep)
	if old != 0 && old != ep && c.l1 != nil {
		c.l1.flush("epoch_changed")
	}
}

func (c *Cache) epochOf(shard int) uint64 { return c.epochs[shard].Load() }

func (c *Cache) onL1Flush(reason string) {
	c.inst.flushes.Add(context.Background(), 1, metric.WithAttributes(attribute.String("reason", reason)))
}

// register records a kind's entry-key tag for Invalidate.
func (c *Cache) register(kind, tag string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.kinds[kind]; dup {
		return fmt.Errorf("%w: entity kind %q registered twice", ErrInvalidConfig, kind)
	}
	c.kinds[kind] = tag
	return nil
}

func (c *Cache) entryKey(shard int, kind, tag, id string) string {
	return c.ks.base[shard] + "e:" + kind + ":" + tag + ":" + id
}

// Invalidate records that a write at position pos (its consistency token)
// changed the given keys: for each key it raises the key's invalidation
// marker to pos (markers only grow), deletes its entry unless that entry was
// read above pos, drops it from this instance's L1 at once and from every
// other instance's L1 through pub/sub. Afterwards no fill of data read at a
// position <= pos is accepted for these keys for MarkerTTL. Keys of kinds no
// Entity registered get markers (which every reader checks) but no delete.
//
// Invalidate is idempotent and may be repeated, in any order, with older
// positions (a durable feed replaying its backlog). It returns an error
// wrapping ErrInvalidArgument for pos 0 or a malformed kind (nothing is
// changed), ErrClosed after Close, or an error wrapping ErrUnavailable when
// Redis could not be updated; then the invalidation must be retried (the
// durable feed does), and meanwhile this instance's epoch is dirty: it
// stops using Redis until an epoch bump succeeds.
func (c *Cache) Invalidate(ctx context.Context, pos uint64, keys ...Key) error {
	if pos == 0 {
		return fmt.Errorf("cache: invalidate: %w: position 0", ErrInvalidArgument)
	}
	for _, k := range keys {
		if !validName(k.Kind) {
			return fmt.Errorf("cache: invalidate: %w: kind %q", ErrInvalidArgument, k.Kind)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	if c.closed.Load() {
		return ErrClosed
	}
	if c.l1 != nil {
		for _, k := range keys {
			c.l1.invalidate(l1Key{k.Kind, k.ID}, pos)
		}
	}
	// Group the keys by shard: one script per shard, all in one pipeline.
	byShard := make(map[int][]string)
	c.mu.Lock()
	for _, k := range keys {
		s := c.ks.shard(k.Kind, k.ID)
		ek := c.ks.base[s] + "x" // never written: kinds without an Entity
		if tag, ok := c.kinds[k.Kind]; ok {
			ek = c.entryKey(s, k.Kind, tag, k.ID)
		}
		byShard[s] = append(byShard[s], c.ks.markerKey(s, k.Kind, k.ID), ek)
	}
	c.mu.Unlock()
	posB := u64bytes(pos)
	ttl := strconv.FormatInt(c.cfg.MarkerTTL.Milliseconds(), 10)
	msg := appendInvalidation(nil, pos, keys)
	err := c.exec(ctx, func(ctx context.Context) error {
		// Idempotent: markers are a max, deletes and messages repeat.
		return c.evalPipeline(ctx, c.invScript, func(pipe redis.Pipeliner, eval evalFunc) {
			for _, ks := range byShard {
				eval(ctx, pipe, ks, posB, ttl)
			}
			pipe.Publish(ctx, c.ks.channel, msg)
		})
	})
	if err != nil {
		c.markDirty()
		c.ctr.invalidationErrors.Add(1)
		c.inst.invalidations.Add(ctx, int64(len(keys)), metric.WithAttributes(attribute.String("outcome", "error")))
		c.log.Warn("invalidation dropped; epoch marked dirty", "keys", len(keys), "err", err)
		if c.bumpMu.TryLock() {
			_ = c.bumpLocked(ctx)
			c.bumpMu.Unlock()
		}
		return fmt.Errorf("cache: invalidate: %w", err)
	}
	c.ctr.invalidations.Add(uint64(len(keys)))
	c.inst.invalidations.Add(ctx, int64(len(keys)), metric.WithAttributes(attribute.String("outcome", "ok")))
	if c.dirty() && c.bumpMu.TryLock() {
		_ = c.bumpLocked(ctx)
		c.bumpMu.Unlock()
	}
	return nil
}

// SetWatermark records that every write at a position below w has been
// invalidated (Invalidate returned nil for every key it changed). From then
// on a Get whose token is below w may be served a current entry even if the
// entry was read at or below the token: the entry cannot miss a write the
// token covers, since that write's invalidation would have deleted it. The
// watermark is stored per shard under the shard's current epoch (so an epoch
// change, e.g. after Redis lost its data or BumpEpoch, resets it to none)
// and sent to every L1 through pub/sub after the invalidation messages
// published before it, so an L1 uses it only once it has applied them.
// Watermarks only grow; a lower w is ignored.
//
// Only the durable feed can know w (it must have applied every write below
// w, including those committed outside this process). Call it from one
// place per key space. It returns an error wrapping ErrUnavailable when Redis
// cannot be reached, ErrInvalidArgument for w 0, or ErrClosed.
func (c *Cache) SetWatermark(ctx context.Context, w uint64) error {
	if w == 0 {
		return fmt.Errorf("cache: set watermark: %w: position 0", ErrInvalidArgument)
	}
	if c.closed.Load() {
		return ErrClosed
	}
	wb := u64bytes(w)
	msg := append([]byte{msgWatermark}, wb...)
	err := c.exec(ctx, func(ctx context.Context) error {
		return c.evalPipeline(ctx, c.wmScript, func(pipe redis.Pipeliner, eval evalFunc) {
			for s := range c.ks.shards {
				eval(ctx, pipe, []string{c.ks.epochKey(s), c.ks.watermarkKey(s)}, wb)
			}
			pipe.Publish(ctx, c.ks.channel, msg)
		})
	})
	if err != nil {
		return fmt.Errorf("cache: set watermark: %w", err)
	}
	for {
		cur := c.lastWatermark.Load()
		if w <= cur || c.lastWatermark.CompareAndSwap(cur, w) {
			break
		}
	}
	return nil
}

// Stats returns a snapshot of this instance's counters. Safe for concurrent
// use.
func (c *Cache) Stats() Stats {
	s := Stats{
		RedisHits:          c.ctr.redisHits.Load(),
		Misses:             c.ctr.misses.Load(),
		Loads:              c.ctr.loads.Load(),
		Shared:             c.ctr.shared.Load(),
		WatermarkHits:      c.ctr.watermarkHits.Load(),
		Watermark:          c.lastWatermark.Load(),
		Fills:              c.ctr.fills.Load(),
		FillsRejectedStale: c.ctr.fillsStale.Load(),
		FillsRejectedEpoch: c.ctr.fillsEpoch.Load(),
		FillsTooOld:        c.ctr.fillsTooOld.Load(),
		FillsTooLarge:      c.ctr.fillsTooLarge.Load(),
		FillsSuperseded:    c.ctr.fillsSuperseded.Load(),
		FillsSkipped:       c.ctr.fillsSkipped.Load(),
		FillsYoungEpoch:    c.ctr.fillsYoungEpoch.Load(),
		FillErrors:         c.ctr.fillErrors.Load(),
		Invalidations:      c.ctr.invalidations.Load(),
		InvalidationErrors: c.ctr.invalidationErrors.Load(),
		EpochBumps:         c.ctr.epochBumps.Load(),
		RedisErrors:        c.ctr.redisErrors.Load(),
		Waiting:            c.ctr.waiting.Load(),
		Breaker:            c.cb.State(),
		EpochDirty:         c.dirty(),
	}
	if c.l1 != nil {
		s.L1Hits = c.l1.hits.Load()
		s.L1Misses = c.l1.misses.Load()
		s.L1Flushes = c.l1.flushes.Load()
		s.L1Entries, s.L1Bytes = c.l1.size()
		s.L1Trusted = c.l1.trusted()
	}
	return s
}
