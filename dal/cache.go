package dal

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/router"
)

// openCache creates the cache when cfg names a Redis.
func (d *DAL) openCache(cfg Config, rc router.Config) error {
	client := cfg.Redis
	if client == nil && cfg.RedisAddr != "" {
		client = redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
		d.ownsRedis = true
	}
	if client == nil {
		return nil
	}
	cc := cfg.Cache
	if cc.MeterProvider == nil {
		cc.MeterProvider = rc.MeterProvider
	}
	if cc.Logger == nil {
		cc.Logger = rc.Logger
	}
	if cc.MaxSourceLag == 0 {
		cc.MaxSourceLag = maxSourceLag(rc.DefaultMaxStaleness)
	}
	if need := sourceLagBound(rc); cc.MaxSourceLag < need && len(rc.ReplicaDSNs) > 0 {
		if d.ownsRedis {
			_ = client.Close()
		}
		return fmt.Errorf("%w: Cache.MaxSourceLag %v is below what a replica read may lag (%v: the router's "+
			"DefaultMaxStaleness plus two probe intervals); leave it 0 for the default", ErrConfig, cc.MaxSourceLag, need)
	}
	c, err := cache.New(client, cc)
	if err != nil {
		if d.ownsRedis {
			_ = client.Close()
		}
		return fmt.Errorf("%w: cache: %v", ErrConfig, err)
	}
	d.cache, d.redis, d.sourceLag = c, client, cc.MaxSourceLag
	return nil
}

// maxSourceLag is the cache's grace period for new epochs: the most a
// loader's source (a replica within the router's staleness bound, as the
// router measures it, i.e. up to about two probe intervals more) may lag,
// plus a margin for clock skew between instances.
func maxSourceLag(staleness time.Duration) time.Duration {
	if staleness <= 0 {
		staleness = time.Second // the router's default bound
	}
	return max(staleness+time.Second, cache.DefaultMaxSourceLag)
}

// sourceLagBound is the most a cached read's source may lag behind the
// primary when there are replicas: the router's default staleness bound,
// which it enforces from probe samples up to two probe intervals old.
// (Explicit BoundedStaleness reads with larger bounds are the caller's
// choice of staleness.) Without replicas every read is on the primary and
// any grace, even none, is safe.
func sourceLagBound(rc router.Config) time.Duration {
	st, probe := rc.DefaultMaxStaleness, rc.ProbeInterval
	if st <= 0 {
		st = time.Second // router defaults
	}
	if probe <= 0 {
		probe = 100 * time.Millisecond
	}
	return st + 2*probe
}

func (d *DAL) closeCache() {
	if d.cache == nil {
		return
	}
	_ = d.cache.Close()
	if d.ownsRedis {
		_ = d.redis.Close()
	}
}

// cacheHealth holds the Health sources of the cache (nil without a cache).
type cacheHealth struct {
	redis health.Pinger
	relay health.RelayLagSource
}

func (d *DAL) cacheHealth() cacheHealth {
	if d.cache == nil {
		return cacheHealth{}
	}
	rc := d.redis
	return cacheHealth{
		redis: health.PingFunc(func(ctx context.Context) error { return rc.Ping(ctx).Err() }),
		relay: relayLagSource{d.router},
	}
}

// relayLagSource measures the relay's lag as the age of the oldest outbox
// row, by the primary's clock: what every instance can see, whichever one
// runs the relay (and a growing lag when none does, or when Redis is down
// and rows cannot be applied).
type relayLagSource struct{ rt *router.Router }

func (s relayLagSource) RelayLag(ctx context.Context) (time.Duration, error) {
	var ms int64
	_, err := s.rt.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
		return q.QueryRow(ctx, sqlRelayLag).Scan(&ms)
	})
	if err != nil {
		return 0, err
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// timelineInterval is how often the timeline watch looks at the router's
// view (which the prober refreshes every ProbeInterval).
const timelineInterval = 100 * time.Millisecond

// startBackground starts what runs behind the DAL: with a cache, the relay
// candidate, the timeline watch and the warm-up; without one, the outbox
// pruner.
func (d *DAL) startBackground(cfg Config, rc router.Config) error {
	ctx, cancel := context.WithCancel(context.Background())
	d.bgStop = cancel
	log := rc.Logger
	if log == nil {
		log = slog.Default()
	}
	relayCfg := cfg.Relay.withDefaults()
	if d.cache == nil {
		d.bg.Go(func() { pruneOutbox(ctx, d.router, relayCfg.Retention) })
		return nil
	}
	if !relayCfg.Disabled {
		nodes, err := nodeConnConfigs(cfg)
		if err != nil {
			return err
		}
		r, err := newRelay(relayCfg, d.router, d.Repos, d.cache, nodes, rc.MeterProvider, log)
		if err != nil {
			return fmt.Errorf("dal: open: relay: %w", err)
		}
		d.relay = r
		r.start()
	}
	d.bg.Go(func() {
		watchTimeline(ctx, timelineInterval, func() uint32 { return d.router.Status().Timeline }, d.cache.BumpEpoch, log)
	})
	if w := cfg.Warmup.withDefaults(); w.Users > 0 {
		d.bg.Go(func() { d.warmup(ctx, w, log) })
	}
	return nil
}

func (d *DAL) stopBackground() {
	if d.bgStop != nil {
		d.bgStop()
	}
	d.bg.Wait()
	if d.relay != nil {
		d.relay.close()
	}
}

// watchTimeline gives the cache a new epoch whenever the primary's timeline
// changes (a failover): writes acknowledged on the old timeline may be lost
// (asynchronous replication), so entries read there may hold data that no
// longer exists, and positions of the two timelines do not compare. timeline
// reports the router's current view (0: unknown); a failed bump is retried
// every interval until it succeeds.
func watchTimeline(ctx context.Context, interval time.Duration, timeline func() uint32, bump func(context.Context) error, log *slog.Logger) {
	last := timeline()
	pending := false
	for {
		sleep(ctx, interval)
		if ctx.Err() != nil {
			return
		}
		tl := timeline()
		if tl != 0 && last != 0 && tl != last {
			log.Warn("primary timeline changed; cache epoch bumped", "from", last, "to", tl)
			pending = true
		}
		if tl != 0 {
			last = tl
		}
		if pending {
			bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			pending = bump(bctx) != nil
			cancel()
		}
	}
}

// pruneOutbox keeps the outbox small where no relay runs (a DAL without
// cache): rows older than retention go, leaving a flush row for any relay
// that starts later.
func pruneOutbox(ctx context.Context, rt *router.Router, retention time.Duration) {
	for {
		sleep(ctx, retention/2)
		if ctx.Err() != nil {
			return
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _ = rt.Write(wctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, sqlOutboxPrune, retention.Milliseconds())
			return err
		})
		cancel()
	}
}

// nodeConnConfigs maps each node, named as the router names it, to a
// connection config from the DSNs (a multi-host DSN gives one per host).
func nodeConnConfigs(cfg Config) (map[string]*pgx.ConnConfig, error) {
	out := map[string]*pgx.ConnConfig{}
	for i, dsn := range append([]string{cfg.PrimaryDSN}, cfg.ReplicaDSNs...) {
		base, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("%w: DSN #%d: %v", ErrConfig, i, err)
		}
		hosts := []*pgconn.FallbackConfig{{Host: base.Host, Port: base.Port, TLSConfig: base.TLSConfig}}
		hosts = append(hosts, base.Fallbacks...)
		for _, h := range hosts {
			name := net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port)))
			if strings.HasPrefix(h.Host, "/") {
				name = h.Host + ":" + strconv.Itoa(int(h.Port))
			}
			if _, dup := out[name]; dup {
				continue
			}
			c := base.Copy()
			c.Host, c.Port, c.TLSConfig, c.Fallbacks = h.Host, h.Port, h.TLSConfig, nil
			c.ValidateConnect = nil
			out[name] = c
		}
	}
	return out, nil
}

// CacheStats returns the cache's counters (hits, misses, fills and why they
// were refused, invalidations, breaker state, L1 size and hit rate), and
// false when the DAL has no cache. Safe for concurrent use.
func (d *DAL) CacheStats() (cache.Stats, bool) {
	if d.cache == nil {
		return cache.Stats{}, false
	}
	return d.cache.Stats(), true
}

// RelayStatus describes this instance's invalidation relay.
type RelayStatus struct {
	// Candidate is true when this instance runs a relay candidate (it has a
	// cache and Relay.Disabled is false).
	Candidate bool
	// Active is true while this instance's relay holds the leadership lock.
	Active bool
	// Applied counts outbox rows this instance's relay applied.
	Applied uint64
	// Watermark is the last cache watermark this relay set (0: none).
	Watermark router.LSN
	// BackendPID is the PostgreSQL backend PID of the relay's session
	// (0 when not connected), e.g. for pg_terminate_backend in a drill.
	BackendPID uint32
}

// RelayStatus reports this instance's relay. Safe for concurrent use.
func (d *DAL) RelayStatus() RelayStatus {
	r := d.relay
	if r == nil {
		return RelayStatus{}
	}
	return RelayStatus{Candidate: true, Active: r.leader.Load(), Applied: r.applied.Load(),
		Watermark: router.LSN(r.wm.Load()), BackendPID: r.pid.Load()}
}
