package dal

import "time"

// Defaults of RelayConfig and WarmupConfig.
const (
	DefaultRelayBatchSize    = 500
	DefaultRelayPollInterval = 100 * time.Millisecond
	DefaultRelayLockWait     = 2 * time.Second
	DefaultRelayRetryBackoff = 200 * time.Millisecond
	DefaultRelayRetention    = 10 * time.Minute
	DefaultWarmupTimeout     = 10 * time.Second
)

// RelayConfig tunes the durable invalidation relay: the process that reads
// the change-feed outbox (filled by triggers in the same transaction as every
// write to a cached table, whoever makes it) and invalidates the cache. Every
// DAL with a cache runs a relay candidate; a PostgreSQL advisory lock held on
// a dedicated primary session makes exactly one of them active per database,
// and the others stand by, blocked on that lock, until its session ends. The
// zero value is usable.
type RelayConfig struct {
	// Disabled keeps this instance out of relay duty. Some instance sharing
	// the database and Redis must run the relay, or writes made outside
	// hsdal (and fast-path invalidations lost while Redis was unreachable)
	// are seen by the cache only when entries expire. Default false.
	Disabled bool
	// BatchSize is how many outbox rows one relay step reads. Default
	// DefaultRelayBatchSize.
	BatchSize int
	// PollInterval is how often the active relay reads the outbox when no
	// notification arrives, which also advances the cache watermark while
	// nothing is written. Default DefaultRelayPollInterval.
	PollInterval time.Duration
	// LockWait bounds each wait of a standby for the leadership lock before
	// it re-checks which node is the primary. Default DefaultRelayLockWait.
	LockWait time.Duration
	// RetryBackoff is the pause after a failed relay step (PostgreSQL or
	// Redis unreachable) before the next try; failed rows are kept and
	// retried. Default DefaultRelayRetryBackoff.
	RetryBackoff time.Duration
	// Retention is how long an outbox row may wait for a relay. Older rows
	// are deleted (by the relay, or by a DAL without cache so the table
	// stays small where no instance runs a cache), leaving a flush row
	// behind: the next relay to apply it gives the whole cache a new epoch,
	// so the dropped invalidations cannot leave stale entries. Default
	// DefaultRelayRetention.
	Retention time.Duration
}

// WarmupConfig tunes the background cache warm-up run after Open: the
// profiles, device lists and access tokens of the most recently active users
// (by device last-seen time) are read through the cache, so the first
// requests after a deploy find them there. It never delays Open, stops at
// Timeout or Close, and its errors are only logged. The zero value means
// off.
type WarmupConfig struct {
	// Users is how many recently active users to load. Default 0: off.
	Users int
	// Timeout bounds the whole warm-up. Default DefaultWarmupTimeout.
	Timeout time.Duration
}

func (c RelayConfig) withDefaults() RelayConfig {
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultRelayBatchSize
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultRelayPollInterval
	}
	if c.LockWait <= 0 {
		c.LockWait = DefaultRelayLockWait
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = DefaultRelayRetryBackoff
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRelayRetention
	}
	return c
}

func (c WarmupConfig) withDefaults() WarmupConfig {
	if c.Timeout <= 0 {
		c.Timeout = DefaultWarmupTimeout
	}
	return c
}
