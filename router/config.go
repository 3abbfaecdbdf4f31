package router

import (
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5"
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Router. The zero value of every field means the default
// documented on it; only PrimaryDSN (or ReplicaDSNs) must be set.
type Config struct {
	// PrimaryDSN is the initial primary. Its role is still discovered by
	// probing (pg_is_in_recovery()), never assumed. It may be a multi-host
	// DSN ("postgres://u:p@h1:5432,h2:5432,h3:5432/db"): every host becomes
	// a node.
	PrimaryDSN string
	// ReplicaDSNs are hot standbys. Each may also be multi-host. A node listed
	// twice (same host:port) is one node.
	ReplicaDSNs []string

	// Pool limits, applied to every node's pool.
	Pool PoolConfig

	// ProbeInterval is how often each node is probed for role, position and
	// timeline (wall-clock ticker; a node is also probed at once when a
	// request on it fails for connectivity, and every node when a write
	// finds the primary gone or read-only). Default 100ms.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe (connect included). Default 1s.
	ProbeTimeout time.Duration
	// LagHistory is how many primary WAL-position samples are kept to turn a
	// replica's replay position into a lag in seconds. A sample is added only
	// when the primary's position moved, so the default 1024 covers at least
	// 100s of continuous writes at the default interval; a replica further
	// behind than the history is "too stale" for any bound.
	LagHistory int

	// DefaultMaxStaleness is the bound used by BoundedStaleness reads that do
	// not give one (and by the zero Consistency). Default 1s. Staleness is
	// bounded from above using probe samples, so it carries up to about two
	// ProbeIntervals of uncertainty: bounds below that go to the primary
	// (or the StalePolicy) even when replicas are in fact current.
	DefaultMaxStaleness time.Duration
	// StalePolicy says where a bounded-staleness read goes when every
	// reachable replica is past its bound. Default FallbackPrimary.
	StalePolicy Fallback
	// ReplicasDownPolicy says where a non-strong read goes when no replica
	// is usable at all (all down, breakers open, none configured). Default
	// FallbackPrimary; FallbackLeastLagged is treated as FallbackPrimary.
	ReplicasDownPolicy Fallback
	// ReplicaWait is how long a read-your-writes read may wait (wall clock,
	// polling the replica's replay position on the read's connection) for
	// the chosen replica to replay the token before going to the primary.
	// Default 0: go to the primary at once.
	ReplicaWait time.Duration

	// Breaker configures the per-node circuit breakers.
	Breaker BreakerConfig

	// RetryRatio caps read retries at this fraction of reads (plus
	// MinRetriesPerSecond), so retries cannot become a storm. Default 0.1.
	// Negative disables retries.
	RetryRatio float64
	// MinRetriesPerSecond is the retry allowance independent of traffic
	// (so a quiet process can still retry). Default 10.
	MinRetriesPerSecond float64

	// Now is the clock used for lag and staleness. Default time.Now.
	Now func() time.Time
	// Logger receives state changes (roles, failover, split brain, breakers).
	// Passwords are never logged. Default slog.Default().
	Logger *slog.Logger
	// QueryTracer, when set, traces every statement on every node's pooled
	// connections (e.g. a slow-query recorder). It must be safe for
	// concurrent use. Probe connections are not traced. Default none.
	QueryTracer pgx.QueryTracer
	// MeterProvider and TracerProvider default to the otel global providers.
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
}

// PoolConfig sets per-node pgxpool limits. The zero value of each field
// means the default documented on it. Defaults are deliberately smaller than
// the 100/5/30s/1800s/600s of the maintenance plan (seed 000, 3.5): a
// homeserver runs several processes against a primary plus replicas, each
// process opening a pool per node, and PostgreSQL's default max_connections
// is 100; OLTP throughput stops growing past a few connections per database
// core, so large pools only add contention and memory on the server.
type PoolConfig struct {
	// MaxConns per node. Default 16.
	MaxConns int32
	// MinConns kept open per node, so a failover to replicas or back does not
	// pay connection setup. Default 2.
	MinConns int32
	// AcquireTimeout bounds waiting for a pooled connection (the seed's 30s
	// hides overload; fail fast and let the breaker and fallbacks act).
	// Default 5s. A timeout counts against the node's breaker.
	AcquireTimeout time.Duration
	// ConnectTimeout bounds dialling a node when the DSN sets no
	// connect_timeout. Default 2s.
	ConnectTimeout time.Duration
	// MaxConnLifetime recycles connections (memory bloat, DNS changes).
	// Default 30m, with 1m jitter.
	MaxConnLifetime time.Duration
	// MaxConnIdleTime closes idle connections above MinConns. Default 5m.
	MaxConnIdleTime time.Duration
}

// BreakerConfig configures the per-node gobreaker. Only connectivity and
// server-unavailable errors count as failures; SQL errors and context
// cancellation are ignored.
type BreakerConfig struct {
	// Failures is how many consecutive failures open the breaker. Default 3.
	Failures uint32
	// OpenTimeout is how long an open breaker rejects before letting trial
	// requests through (half-open). Default 2s.
	OpenTimeout time.Duration
	// HalfOpenRequests is how many trial requests a half-open breaker lets
	// through. Default 1.
	HalfOpenRequests uint32
}

// Fallback names a routing policy for reads that no replica can serve.
type Fallback uint8

const (
	// FallbackPrimary sends the read to the primary (the default). When the
	// primary is unavailable, a bounded-staleness read goes to the least
	// lagged replica instead.
	FallbackPrimary Fallback = iota
	// FallbackLeastLagged sends the read to the least-lagged usable replica.
	FallbackLeastLagged
	// FallbackError fails the read with ErrUnavailable.
	FallbackError
)

// String names the policy ("primary", "least-lagged", "error").
func (f Fallback) String() string {
	switch f {
	case FallbackPrimary:
		return "primary"
	case FallbackLeastLagged:
		return "least-lagged"
	case FallbackError:
		return "error"
	}
	return fmt.Sprintf("Fallback(%d)", uint8(f))
}

// maxNodes bounds the node count so node sets fit a uint64 bitmask.
const maxNodes = 64

var errConfig = errors.New("router: invalid config")

// withDefaults returns cfg with defaults filled in, or an error wrapping
// errConfig for values that cannot be right.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.PrimaryDSN == "" && len(cfg.ReplicaDSNs) == 0 {
		return cfg, fmt.Errorf("%w: no DSN", errConfig)
	}
	if cfg.ProbeInterval < 0 || cfg.ProbeTimeout < 0 || cfg.DefaultMaxStaleness < 0 ||
		cfg.ReplicaWait < 0 || cfg.Pool.AcquireTimeout < 0 || cfg.Pool.ConnectTimeout < 0 ||
		cfg.Pool.MaxConnLifetime < 0 || cfg.Pool.MaxConnIdleTime < 0 || cfg.Breaker.OpenTimeout < 0 {
		return cfg, fmt.Errorf("%w: negative duration", errConfig)
	}
	if cfg.Pool.MaxConns < 0 || cfg.Pool.MinConns < 0 || cfg.LagHistory < 0 {
		return cfg, fmt.Errorf("%w: negative size", errConfig)
	}
	if math.IsNaN(cfg.RetryRatio) || math.IsNaN(cfg.MinRetriesPerSecond) || cfg.MinRetriesPerSecond < 0 {
		return cfg, fmt.Errorf("%w: bad retry budget", errConfig)
	}
	if cfg.StalePolicy > FallbackError || cfg.ReplicasDownPolicy > FallbackError {
		return cfg, fmt.Errorf("%w: unknown fallback policy", errConfig)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.ProbeInterval, 100*time.Millisecond)
	def(&cfg.ProbeTimeout, time.Second)
	def(&cfg.DefaultMaxStaleness, time.Second)
	def(&cfg.Pool.AcquireTimeout, 5*time.Second)
	def(&cfg.Pool.ConnectTimeout, 2*time.Second)
	def(&cfg.Pool.MaxConnLifetime, 30*time.Minute)
	def(&cfg.Pool.MaxConnIdleTime, 5*time.Minute)
	def(&cfg.Breaker.OpenTimeout, 2*time.Second)
	if cfg.Pool.MaxConns == 0 {
		cfg.Pool.MaxConns = 16
	}
	if cfg.Pool.MinConns == 0 {
		cfg.Pool.MinConns = 2
	}
	if cfg.Pool.MinConns > cfg.Pool.MaxConns {
		cfg.Pool.MinConns = cfg.Pool.MaxConns
	}
	if cfg.LagHistory == 0 {
		cfg.LagHistory = 1024
	}
	if cfg.LagHistory < 2 {
		cfg.LagHistory = 2
	}
	if cfg.Breaker.Failures == 0 {
		cfg.Breaker.Failures = 3
	}
	if cfg.Breaker.HalfOpenRequests == 0 {
		cfg.Breaker.HalfOpenRequests = 1
	}
	if cfg.RetryRatio == 0 {
		cfg.RetryRatio = 0.1
	}
	if cfg.MinRetriesPerSecond == 0 {
		cfg.MinRetriesPerSecond = 10
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}
