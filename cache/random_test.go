package cache_test

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/cache"
)

var (
	soak  = flag.Duration("cache.soak", 3*time.Second, "duration of TestRandomizedNoStaleReads' chaos phase")
	chaos = flag.String("cache.chaos", "all", "faults TestRandomizedNoStaleReads injects: all, kill (Redis kills only) or cut (proxy cuts only)")
)

// chaosDB is the randomized test's source of truth: a db whose loaders read
// at a random position that covers the caller's token and lags the newest
// write by at most maxLag, like a hot standby behind the
// router's bounded-staleness rule.
type chaosDB struct {
	*db
	maxLag  time.Duration
	noLag   atomic.Bool
	log     []version // every write in position order
	logMu   sync.Mutex
	gosched int
}

func (d *chaosDB) write(id string, gone bool) uint64 {
	d.logMu.Lock()
	defer d.logMu.Unlock()
	d.mu.Lock()
	d.pos++
	v := version{pos: d.pos, at: d.now(), value: strconv.FormatUint(d.pos, 10), gone: gone}
	d.rows[id] = append(d.rows[id], v)
	d.log = append(d.log, v)
	d.mu.Unlock()
	return v.pos
}

func (d *chaosDB) loader(id string, token uint64, rng *rand.Rand) cache.Loader[string] {
	return func(context.Context) (string, uint64, bool, error) {
		d.logMu.Lock()
		d.mu.Lock()
		cur := d.pos
		// Everything written up to now-maxLag must be included.
		floor := token
		if !d.noLag.Load() {
			cutoff := d.now().Add(-d.maxLag)
			i := sort.Search(len(d.log), func(i int) bool { return d.log[i].at.After(cutoff) })
			if i > 0 && d.log[i-1].pos > floor {
				floor = d.log[i-1].pos
			}
		} else {
			floor = cur
		}
		q := cur
		if floor < cur {
			q = floor + rng.Uint64N(cur-floor+1)
		}
		v := d.atLocked(id, q+1)
		d.mu.Unlock()
		d.logMu.Unlock()
		// Give invalidations a chance to overtake this load.
		for range rng.IntN(d.gosched + 1) {
			runtime.Gosched()
		}
		return v.value, q + 1, v.pos != 0 && !v.gone, nil
	}
}

// TestRandomizedNoStaleReads runs sessions that write and read a few hot
// keys through three instances sharing one Redis (two with L1, one of them
// behind a proxy that is cut at random) while Redis is killed and restarted
// at random, loaders read lagging positions and invalidations fail and are
// retried by a "durable feed". It checks for every read:
//   - it never errors;
//   - no backwards fill: if served from Redis, it was read above every
//     invalidation of its key that had completed when the Get began (from
//     an L1: every one this instance completed);
//   - its position covers the session's token (read-your-writes and
//     monotonic reads, since the token includes every version it saw);
//   - its value is the truth at its position;
//   - it is not older than a version the session already saw or wrote;
//
// and, after the chaos stops and the feed drains, that every instance serves
// the newest value of every key (convergence). Longer: -cache.soak=1m.
func TestRandomizedNoStaleReads(t *testing.T) {
	ownRedis(t)
	clk := newClock()
	// Source lag is modelled in real time: the epoch grace period is measured
	// by the Redis server's clock.
	const maxLag = 20 * time.Millisecond
	d := &chaosDB{db: newDB(time.Now), maxLag: maxLag, gosched: 20}
	prefix := uniquePrefix(t)
	p := newProxy(t, cluster.RedisAddr())
	base := cache.Config{
		Prefix:       prefix,
		Now:          clk.Now,
		MaxSourceLag: maxLag,
		MarkerTTL:    time.Hour,
		OpTimeout:    200 * time.Millisecond,
		Breaker:      cache.BreakerConfig{ConsecutiveFailures: 3, OpenTimeout: 20 * time.Millisecond},
		Logger:       quietLogger(),
	}
	mk := func(addr string, l1 bool) *cache.Entity[string] {
		cfg := base
		cfg.L1 = cache.L1Config{Enabled: l1, TTL: 50 * time.Millisecond, HealthInterval: 50 * time.Millisecond}
		c := mustCache(t, newClient(t, addr), cfg)
		return mustEntity(t, c, cache.EntityConfig[string]{Kind: "hot", NegativeTTL: time.Second})
	}
	insts := []*cache.Entity[string]{mk(cluster.RedisAddr(), true), mk(p.Addr(), true), mk(cluster.RedisAddr(), false)}
	caches := func() []cache.Stats {
		var out []cache.Stats
		for _, e := range insts {
			out = append(out, statsOf(e))
		}
		return out
	}

	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	ctx := context.Background()

	// Completed invalidations: per key, the highest position whose
	// Invalidate has returned nil, globally and per instance. A Get begun
	// after that must not be served from Redis (any instance) or from the
	// invalidating instance's L1 with data at or below it: no backwards fill.
	var floorMu sync.Mutex
	floor := map[string]uint64{}
	localFloor := make([]map[string]uint64, len(insts))
	for i := range localFloor {
		localFloor[i] = map[string]uint64{}
	}
	completed := func(inst int, key string, pos uint64) {
		floorMu.Lock()
		floor[key] = max(floor[key], pos)
		localFloor[inst][key] = max(localFloor[inst][key], pos)
		floorMu.Unlock()
	}
	floors := func(inst int, key string) (uint64, uint64) {
		floorMu.Lock()
		defer floorMu.Unlock()
		return floor[key], localFloor[inst][key]
	}

	// The durable feed: invalidations that failed are retried until they
	// succeed, in any order.
	type pending struct {
		pos uint64
		key string
	}
	feed := make(chan pending, 1<<16)
	var feedWG sync.WaitGroup
	var feedPending atomic.Int64
	feedStop := make(chan struct{})
	feedWG.Add(1)
	go func() {
		defer feedWG.Done()
		var backlog []pending
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case pd := <-feed:
				backlog = append(backlog, pd)
				continue
			case <-tick.C:
			case <-feedStop:
				if len(backlog) == 0 && len(feed) == 0 {
					return
				}
			}
			rest := backlog[:0]
			for _, pd := range backlog {
				if err := insts[2].Invalidate(ctx, pd.pos, pd.key); err != nil {
					rest = append(rest, pd)
				} else {
					completed(2, pd.key, pd.pos)
					feedPending.Add(-1)
				}
			}
			backlog = rest
		}
	}()

	// Chaos: kill/restart Redis, cut/heal the proxy.
	chaosStop := make(chan struct{})
	var chaosWG sync.WaitGroup
	var kills, cuts atomic.Int64
	chaosWG.Add(1)
	go func() {
		defer chaosWG.Done()
		rng := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(150 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-chaosStop:
				return
			case <-tick.C:
			}
			switch op := rng.IntN(4); {
			case *chaos == "cut" && (op == 0 || op == 3):
			case *chaos == "kill" && (op == 1 || op == 2):
			case op == 0:
				if cluster.RedisRunning() {
					if err := cluster.KillRedis(ctx); err != nil {
						t.Errorf("kill redis: %v", err)
						return
					}
					kills.Add(1)
				} else if err := cluster.StartRedis(ctx); err != nil {
					t.Errorf("start redis: %v", err)
					return
				}
			case op == 1:
				p.setCut(true)
				cuts.Add(1)
			case op == 2:
				p.setCut(false)
			case op == 3:
				if !cluster.RedisRunning() {
					if err := cluster.StartRedis(ctx); err != nil {
						t.Errorf("start redis: %v", err)
						return
					}
				}
			}
		}
	}()

	// Sessions.
	const sessions = 8
	var reads, writes, violations atomic.Int64
	var sources [3]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := range sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(s), 99))
			var token uint64
			seen := map[string]uint64{}
			fail := func(format string, args ...any) {
				if violations.Add(1) <= 10 {
					t.Errorf("session %d: "+format, append([]any{s}, args...)...)
				}
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				clk.Advance(time.Duration(rng.IntN(200)) * time.Microsecond)
				key := keys[rng.IntN(len(keys))]
				ii := rng.IntN(len(insts))
				in := insts[ii]
				if rng.IntN(4) == 0 {
					pos := d.write(key, rng.IntN(8) == 0)
					writes.Add(1)
					token = max(token, pos)
					seen[key] = max(seen[key], pos)
					if err := in.Invalidate(ctx, pos, key); err != nil {
						feedPending.Add(1)
						feed <- pending{pos, key}
					} else {
						completed(ii, key, pos)
					}
					continue
				}
				global, local := floors(ii, key)
				v, info, err := in.Get(ctx, key, token, d.loader(key, token, rng))
				reads.Add(1)
				if err != nil {
					fail("Get(%s): %v", key, err)
					continue
				}
				sources[info.Source].Add(1)
				switch {
				case info.Shared:
					// Joined a lookup begun before this Get: no claim.
				case info.Source == cache.SourceRedis && info.Pos <= global:
					fail("Get(%s) served from Redis at %d after the invalidation at %d completed", key, info.Pos, global)
				case info.Source == cache.SourceL1 && info.Pos <= local:
					fail("Get(%s) served from L1 at %d after this instance's invalidation at %d", key, info.Pos, local)
				}
				if info.Pos <= token {
					fail("Get(%s, token %d) read at %d from %v", key, token, info.Pos, info.Source)
				}
				truth := d.at(key, info.Pos)
				var got uint64
				if info.Found {
					got, _ = strconv.ParseUint(v, 10, 64)
				}
				if info.Found != (truth.pos != 0 && !truth.gone) || (info.Found && got != truth.pos) {
					fail("Get(%s) = %q found=%v at %d from %v; truth there is %+v", key, v, info.Found, info.Pos, info.Source, truth)
				}
				if truth.pos < seen[key] {
					fail("Get(%s) from %v returned version %d older than seen %d", key, info.Source, truth.pos, seen[key])
				}
				seen[key] = max(seen[key], truth.pos)
				token = max(token, truth.pos)
			}
		}()
	}

	deadline := time.NewTimer(*soak)
	<-deadline.C
	close(chaosStop)
	chaosWG.Wait()
	close(stop)
	wg.Wait()

	// Calm: Redis up, proxy healed, feed drained, loaders read the primary.
	p.setCut(false)
	if !cluster.RedisRunning() {
		if err := cluster.StartRedis(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(feedStop)
	feedWG.Wait()
	d.noLag.Store(true)
	if n := feedPending.Load(); n != 0 {
		t.Fatalf("feed left %d invalidations", n)
	}
	for _, key := range keys {
		want := d.at(key, d.current())
		for i, in := range insts {
			eventually(t, "instance back on Redis", func() bool {
				_, _, _ = in.Get(ctx, "probe", 0, d.loader("probe", 0, rand.New(rand.NewPCG(7, 7))))
				s := statsOf(in)
				return !s.EpochDirty && (i == 2 || s.L1Trusted)
			})
			for range 3 { // loader, then a cache tier
				v, info, err := in.Get(ctx, key, 0, d.loader(key, 0, rand.New(rand.NewPCG(7, 7))))
				found := want.pos != 0 && !want.gone
				if err != nil || info.Found != found || (found && v != want.value) {
					t.Errorf("converged Get(%s) on instance %d = %q found=%v from %v (err %v); want %q found=%v",
						key, i, v, info.Found, info.Source, err, want.value, found)
				}
			}
		}
	}
	t.Logf("reads=%d writes=%d redis kills=%d proxy cuts=%d sources loader/l1/redis=%d/%d/%d",
		reads.Load(), writes.Load(), kills.Load(), cuts.Load(), sources[0].Load(), sources[1].Load(), sources[2].Load())
	for i, s := range caches() {
		t.Logf("instance %d: %s", i, fmtStats(s))
	}
	if sources[cache.SourceRedis].Load() == 0 || sources[cache.SourceL1].Load() == 0 {
		t.Errorf("the run never hit a cache tier; it tested nothing")
	}
}

func statsOf(e *cache.Entity[string]) cache.Stats { return e.Cache().Stats() }

func fmtStats(s cache.Stats) string {
	return fmt.Sprintf("l1Hits=%d redisHits=%d misses=%d fills=%d stale=%d epoch=%d young=%d superseded=%d skipped=%d fillErr=%d inv=%d invErr=%d bumps=%d l1Flushes=%d",
		s.L1Hits, s.RedisHits, s.Misses, s.Fills, s.FillsRejectedStale, s.FillsRejectedEpoch, s.FillsYoungEpoch,
		s.FillsSuperseded, s.FillsSkipped, s.FillErrors, s.Invalidations, s.InvalidationErrors, s.EpochBumps, s.L1Flushes)
}
