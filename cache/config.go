package cache

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// Defaults applied by New to zero fields of Config.
const (
	DefaultPrefix         = "hsdal:c"
	DefaultShards         = 16
	DefaultTTL            = 5 * time.Minute
	DefaultJitter         = 0.1
	DefaultNegativeTTL    = 10 * time.Second
	DefaultMarkerTTL      = 10 * time.Minute
	DefaultMaxSourceLag   = 5 * time.Second
	DefaultMaxValueBytes  = 64 << 10
	DefaultOpTimeout      = 250 * time.Millisecond
	DefaultL1TTL          = 2 * time.Second
	DefaultL1MaxEntries   = 10000
	DefaultL1MaxBytes     = 32 << 20
	DefaultHealthInterval = time.Second
	DefaultBreakerTimeout = 2 * time.Second
	DefaultBreakerTrip    = 5
)

// l1InsertWindow bounds how long after the Redis operation that validated a
// value the value may still be put into the L1: an older insert is dropped
// instead, so the L1's per-key invalidation markers only need to be kept for
// this long.
const l1InsertWindow = 10 * time.Second

// Config configures a Cache. The zero value is usable: every zero field means
// the default documented on it.
type Config struct {
	// Prefix starts every Redis key and the pub/sub channel of this cache, so
	// several deployments can share one Redis. Default DefaultPrefix. It must
	// not contain '{' or '}' (they are Redis Cluster hash-tag delimiters).
	Prefix string

	// Shards is the number of epoch domains keys are spread over. Every key
	// of a shard carries the same Redis Cluster hash tag, so its entry, its
	// invalidation marker and its shard's epoch live on one node and are
	// checked together by one Lua script. More shards spread a Cluster's load
	// over more nodes; on a single node the number does not matter.
	// Default DefaultShards; at most 16384.
	Shards int

	// TTL is how long an entry for a present row lives in Redis. Each fill
	// picks a TTL uniformly in [TTL*(1-Jitter), TTL] so that entries filled
	// together do not expire together. Default DefaultTTL; clamped to
	// MarkerTTL (an entry must never outlive the markers that guard it).
	TTL time.Duration
	// Jitter is the fraction of TTL (and NegativeTTL) that is randomized,
	// in [0, 1). Zero means DefaultJitter; negative means no jitter.
	Jitter float64
	// NegativeTTL is how long "this row does not exist" is cached. Negative
	// entries are invalidated like any other. Default DefaultNegativeTTL.
	NegativeTTL time.Duration

	// MarkerTTL is how long the invalidation marker of a key (the position of
	// the last write that invalidated it) is kept in Redis. It bounds how old
	// an in-flight fill may be: a fill whose load began more than MarkerTTL/2
	// ago is refused, so a marker always outlives every fill it must stop
	// (the other half is margin for the fill to travel to Redis). A loader's
	// data source must also never lag more than MarkerTTL/2 behind writes
	// that were already invalidated; the router's bounded-staleness reads
	// satisfy this by orders of magnitude. Default DefaultMarkerTTL; at
	// least 4*MaxSourceLag.
	MarkerTTL time.Duration

	// MaxSourceLag is the most any loader's source may lag behind the
	// primary (for loaders reading hot standbys through the router: the
	// bounded staleness they use, plus clock skew between instances). It is
	// the grace period of a new epoch: after Redis lost its data (and with it
	// the markers of recent writes) or after an epoch bump for dropped
	// invalidations, only loads begun when the epoch was at least
	// MaxSourceLag old (by the Redis server's clock) may fill it, so a
	// lagging source cannot put back data from before a write whose marker
	// is gone. Gets are served by their loaders meanwhile. Default
	// DefaultMaxSourceLag; negative means no grace (only correct when every
	// loader reads the primary).
	MaxSourceLag time.Duration

	// MaxValueBytes is the largest encoded value that is cached. A larger
	// value is returned to the caller but not stored (in Redis or L1), and
	// counted as a fill refused as too large; for a 50 000-member room the
	// member list is simply not cached. Default DefaultMaxValueBytes.
	MaxValueBytes int

	// OpTimeout bounds every Redis operation on the read path and of
	// Invalidate, so that a slow Redis trips the breaker instead of slowing
	// reads. Default DefaultOpTimeout.
	OpTimeout time.Duration

	// Breaker configures the circuit breaker around Redis.
	Breaker BreakerConfig

	// L1 configures the optional in-process tier.
	L1 L1Config

	// Now is the clock used for L1 expiry and the age limit of fills.
	// Default time.Now.
	Now func() time.Time
	// MeterProvider receives the cache metrics. Default: the otel global.
	MeterProvider metric.MeterProvider
	// Logger receives breaker, subscription and epoch events. Default
	// slog.Default(). Keys and values are never logged.
	Logger *slog.Logger
}

// BreakerConfig configures the gobreaker circuit breaker around Redis.
// Cancellations by the caller never count as failures.
type BreakerConfig struct {
	// ConsecutiveFailures opens the breaker. Default DefaultBreakerTrip.
	ConsecutiveFailures uint32
	// OpenTimeout is how long the breaker stays open before it lets one
	// probe through. Default DefaultBreakerTimeout.
	OpenTimeout time.Duration
}

// L1Config configures the in-process tier in front of Redis. It is off
// unless Enabled. L1 entries obey the same position rules as Redis entries
// and are dropped across instances through Redis pub/sub; while the
// subscription is down (and until it is re-established and the L1 flushed)
// the L1 is neither read nor filled.
type L1Config struct {
	// Enabled turns the L1 on.
	Enabled bool
	// TTL is how long an L1 entry is served. Default DefaultL1TTL.
	TTL time.Duration
	// MaxEntries bounds the number of entries (least recently used are
	// evicted first). Default DefaultL1MaxEntries.
	MaxEntries int
	// MaxBytes bounds the encoded size of all entries plus their keys.
	// Default DefaultL1MaxBytes.
	MaxBytes int
	// HealthInterval is how often an idle subscription is pinged; a failed
	// ping counts as a lost subscription. Default DefaultHealthInterval.
	HealthInterval time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return c, fmt.Errorf("%w: Prefix %q contains a hash-tag brace", ErrInvalidConfig, c.Prefix)
	}
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.Shards < 0 || c.Shards > 16384 {
		return c, fmt.Errorf("%w: Shards %d out of [1, 16384]", ErrInvalidConfig, c.Shards)
	}
	if c.MarkerTTL == 0 {
		c.MarkerTTL = DefaultMarkerTTL
	}
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = DefaultNegativeTTL
	}
	if c.MarkerTTL < 0 || c.TTL < 0 || c.NegativeTTL < 0 {
		return c, fmt.Errorf("%w: negative TTL", ErrInvalidConfig)
	}
	switch {
	case c.MaxSourceLag == 0:
		c.MaxSourceLag = DefaultMaxSourceLag
	case c.MaxSourceLag < 0:
		c.MaxSourceLag = 0
	}
	if c.MarkerTTL < 2*time.Millisecond || c.MarkerTTL < 4*c.MaxSourceLag {
		return c, fmt.Errorf("%w: MarkerTTL %v too short (at least 2ms and 4*MaxSourceLag)", ErrInvalidConfig, c.MarkerTTL)
	}
	c.TTL = min(c.TTL, c.MarkerTTL)
	c.NegativeTTL = min(c.NegativeTTL, c.MarkerTTL)
	switch {
	case c.Jitter == 0:
		c.Jitter = DefaultJitter
	case c.Jitter < 0:
		c.Jitter = 0
	case c.Jitter >= 1:
		return c, fmt.Errorf("%w: Jitter %v not in [0, 1)", ErrInvalidConfig, c.Jitter)
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxValueBytes < 0 {
		return c, fmt.Errorf("%w: negative MaxValueBytes", ErrInvalidConfig)
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = DefaultOpTimeout
	}
	if c.Breaker.ConsecutiveFailures == 0 {
		c.Breaker.ConsecutiveFailures = DefaultBreakerTrip
	}
	if c.Breaker.OpenTimeout <= 0 {
		c.Breaker.OpenTimeout = DefaultBreakerTimeout
	}
	if c.L1.TTL <= 0 {
		c.L1.TTL = DefaultL1TTL
	}
	if c.L1.MaxEntries <= 0 {
		c.L1.MaxEntries = DefaultL1MaxEntries
	}
	if c.L1.MaxBytes <= 0 {
		c.L1.MaxBytes = DefaultL1MaxBytes
	}
	if c.L1.HealthInterval <= 0 {
		c.L1.HealthInterval = DefaultHealthInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}
