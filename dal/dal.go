package dal

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/dal/health"
	"github.com/hsdal/hsdal/internal/slowquery"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// ErrConfig reports a configuration that cannot work (no primary DSN, a bad
// cursor key). Errors from Open and ConfigFromEnv wrap it.
var ErrConfig = errors.New("dal: invalid config")

// Config configures a DAL. Only PrimaryDSN is required; every other field's
// zero value means the default documented on it.
type Config struct {
	// PrimaryDSN is the PostgreSQL primary (a URL or key=value DSN, possibly
	// multi-host). Its role is still discovered by probing.
	PrimaryDSN string
	// ReplicaDSNs are hot standbys to serve reads. Default none: every read
	// goes to the primary.
	ReplicaDSNs []string
	// CursorKey signs pagination cursors; every instance of a deployment
	// must share it (at least 16 bytes). Default: a random per-process key,
	// which is only right for a single instance.
	CursorKey []byte

	// Router tunes routing (pools, probing, staleness, breakers, retries).
	// Its PrimaryDSN and ReplicaDSNs are taken from the fields above.
	Router router.Config
	// Repos tunes the repositories (page sizes, clock, tracing). Its
	// CursorKey is taken from the field above when that is set.
	Repos repos.Config

	// SlowQuery configures the statement tracer installed on every node's
	// connections: statements over its Threshold (default 100ms) are logged
	// and counted without parameter values, and all statements feed the mean
	// query time Health reports. Its MeterProvider defaults to
	// Router.MeterProvider.
	SlowQuery slowquery.Config
	// DisableQueryTracer removes that tracer (Health then reports no query
	// times). Default false.
	DisableQueryTracer bool
	// HealthThresholds are Health's alert bounds; zero fields mean the
	// maintenance plan's defaults (health.DefaultThresholds).
	HealthThresholds health.Thresholds

	// Redis, when set, turns on the hot-entity cache (see package cache):
	// access-token lookups, user profiles, device lists, room metadata,
	// joined-member lists and IsJoined are served from Redis when the read's
	// consistency allows, with durable invalidation by the relay. Any
	// go-redis UniversalClient works (single node, Sentinel, Cluster). The
	// DAL never closes it. Default nil: no cache unless RedisAddr is set.
	Redis redis.UniversalClient
	// RedisAddr ("host:port") is the simple alternative to Redis: the DAL
	// opens a single-node client to it and closes it on Close. Ignored when
	// Redis is set. Default "": no cache.
	RedisAddr string
	// Cache tunes the cache when Redis or RedisAddr is set: key prefix,
	// TTLs, breaker, and the optional in-process tier (Cache.L1.Enabled).
	// Zero fields mean the cache package's defaults, except MeterProvider
	// (default Router.MeterProvider), Logger (default Router.Logger) and
	// MaxSourceLag (default: the router's DefaultMaxStaleness plus 1s, at
	// least cache.DefaultMaxSourceLag; with replicas, a value smaller than
	// the staleness bound plus two probe intervals is refused with
	// ErrConfig: the epoch grace must outlast the lag of any replica a
	// cached read may load from). Every
	// instance sharing a database must use the same Prefix: one relay
	// invalidates one key space.
	Cache cache.Config
	// Relay tunes the durable invalidation relay (used only with a cache).
	Relay RelayConfig
	// Warmup loads the hottest entities into the cache in the background
	// after Open (used only with a cache). Default off.
	Warmup WarmupConfig
}

// Environment variables read by ConfigFromEnv.
const (
	EnvPrimaryDSN  = "HSDAL_PRIMARY_DSN"
	EnvReplicaDSNs = "HSDAL_REPLICA_DSNS" // comma-separated
	EnvRedisAddr   = "HSDAL_REDIS_ADDR"
	EnvCursorKey   = "HSDAL_CURSOR_KEY" // hex or base64
)

// ConfigFromEnv builds a Config from HSDAL_PRIMARY_DSN, HSDAL_REPLICA_DSNS
// (comma-separated), HSDAL_REDIS_ADDR (RedisAddr; unset means no cache) and
// HSDAL_CURSOR_KEY (hex or base64, at least 16 bytes), the variables `make
// up` writes to .cluster.env. Errors wrap ErrConfig and never include a
// DSN's password.
func ConfigFromEnv() (Config, error) {
	cfg := Config{PrimaryDSN: strings.TrimSpace(os.Getenv(EnvPrimaryDSN))}
	if cfg.PrimaryDSN == "" {
		return Config{}, fmt.Errorf("%w: %s is not set", ErrConfig, EnvPrimaryDSN)
	}
	for _, d := range strings.Split(os.Getenv(EnvReplicaDSNs), ",") {
		if d = strings.TrimSpace(d); d != "" {
			cfg.ReplicaDSNs = append(cfg.ReplicaDSNs, d)
		}
	}
	cfg.RedisAddr = strings.TrimSpace(os.Getenv(EnvRedisAddr))
	if k := strings.TrimSpace(os.Getenv(EnvCursorKey)); k != "" {
		key, err := decodeKey(k)
		if err != nil {
			return Config{}, fmt.Errorf("%w: %s: %v", ErrConfig, EnvCursorKey, err)
		}
		cfg.CursorKey = key
	}
	return cfg, nil
}

func decodeKey(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("neither hex nor base64")
}

// DAL is an open data-access layer: the typed repositories (d.Users,
// d.Devices, d.AccessTokens, d.Rooms, d.Memberships, d.Events,
// d.PrivateMessages) over a router that sends writes to the primary and reads
// to replicas whenever the requested consistency allows. Safe for concurrent
// use; Close it when done.
type DAL struct {
	*repos.Repos
	router *router.Router
	health *health.Checker

	cache     *cache.Cache          // nil without Redis
	redis     redis.UniversalClient // the cache's client
	ownsRedis bool                  // opened from RedisAddr: closed by Close
	sourceLag time.Duration         // the cache's MaxSourceLag (its epochs' grace period)
	relay     *relay                // nil without a cache or with Relay.Disabled
	bgStop    context.CancelFunc    // stops the background goroutines below
	bg        sync.WaitGroup        // timeline watch, warm-up, outbox pruner
}

// Open connects to the cluster, checks that the database schema is the one
// this build was written for, and returns a ready DAL.
//
// Errors: ErrConfig for an unusable config; ErrSchemaMismatch (a
// *SchemaVersionError saying whether to migrate or to upgrade) when the
// schema differs; router errors (router.ErrUnavailable) when no node can be
// reached.
func Open(ctx context.Context, cfg Config) (*DAL, error) {
	if cfg.PrimaryDSN == "" {
		return nil, fmt.Errorf("%w: PrimaryDSN is required", ErrConfig)
	}
	rc := cfg.Router
	rc.PrimaryDSN, rc.ReplicaDSNs = cfg.PrimaryDSN, cfg.ReplicaDSNs
	queries := func() health.QueryCounters { return health.QueryCounters{} }
	if !cfg.DisableQueryTracer && rc.QueryTracer == nil {
		sq := cfg.SlowQuery
		if sq.MeterProvider == nil {
			sq.MeterProvider = rc.MeterProvider
		}
		tr, err := slowquery.New(sq)
		if err != nil {
			return nil, fmt.Errorf("dal: open: %w", err)
		}
		rc.QueryTracer = tr
		queries = func() health.QueryCounters {
			s := tr.Stats()
			return health.QueryCounters{Count: s.Count, Total: s.Total, Slow: s.Slow}
		}
	}
	rt, err := router.New(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("dal: open: %w", err)
	}
	if err := checkSchemaVia(ctx, rt); err != nil {
		rt.Close()
		return nil, err
	}
	d := &DAL{router: rt}
	if err := d.openCache(cfg, rc); err != nil {
		rt.Close()
		return nil, err
	}
	pc := cfg.Repos
	if cfg.CursorKey != nil {
		pc.CursorKey = cfg.CursorKey
	}
	if d.cache != nil && pc.Cache == nil {
		pc.Cache = d.cache
	}
	rp, err := repos.New(rt, pc)
	if err != nil {
		d.closeCache()
		rt.Close()
		if errors.Is(err, repos.ErrInvalidArgument) {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		return nil, fmt.Errorf("dal: open: %w", err)
	}
	d.Repos = rp
	hc, err := newHealthChecker(rt, cfg, queries, d.cacheHealth())
	if err != nil {
		d.closeCache()
		rt.Close()
		return nil, fmt.Errorf("dal: open: %w", err)
	}
	d.health = hc
	if err := d.startBackground(cfg, rc); err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// checkSchemaVia reads the schema version on the primary, or on a replica
// when the primary is unavailable (a replica has the same schema as the
// primary it replays).
func checkSchemaVia(ctx context.Context, rt *router.Router) error {
	check := func(ctx context.Context, q router.Querier) error { return CheckSchema(ctx, q) }
	_, err := rt.Read(ctx, router.Strong(), check)
	if errors.Is(err, router.ErrUnavailable) {
		_, err = rt.Read(ctx, router.BoundedStaleness(0), check)
	}
	if err != nil && !errors.Is(err, ErrSchemaMismatch) {
		return fmt.Errorf("dal: open: %w", err)
	}
	return err
}

// Router is the DAL's router, for routing status (Status), sessions and
// custom queries through the same consistency rules.
func (d *DAL) Router() *router.Router { return d.router }

// Close releases every connection. The DAL must not be used afterwards.
func (d *DAL) Close() {
	d.stopBackground()
	d.health.Close()
	d.closeCache()
	d.router.Close()
}
