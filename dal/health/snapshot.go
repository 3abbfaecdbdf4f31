package health

import (
	"fmt"
	"strings"
	"time"
)

// Status is a health verdict. Statuses are ordered: OK < Warn < Critical, so
// the worst of several is their maximum.
type Status int

const (
	// OK means nothing needs attention.
	OK Status = iota
	// Warn means the system works but is degraded or trending towards trouble.
	Warn
	// Critical means users are or will shortly be affected.
	Critical
)

// String returns "OK", "WARN" or "CRITICAL".
func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warn:
		return "WARN"
	case Critical:
		return "CRITICAL"
	default:
		return fmt.Sprintf("Status(%d)", int(s))
	}
}

// MarshalText encodes s as its String form, so JSON shows "WARN", not 1.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses the String form (case-insensitive).
func (s *Status) UnmarshalText(b []byte) error {
	switch strings.ToUpper(string(b)) {
	case "OK":
		*s = OK
	case "WARN", "WARNING":
		*s = Warn
	case "CRITICAL":
		*s = Critical
	default:
		return fmt.Errorf("health: unknown status %q", b)
	}
	return nil
}

// Role is what a PostgreSQL node currently is.
type Role string

const (
	// RoleUnknown means the node could not be asked.
	RoleUnknown Role = ""
	// RolePrimary is a node that is not in recovery and accepts writes.
	RolePrimary Role = "primary"
	// RoleStandby is a hot standby in recovery.
	RoleStandby Role = "standby"
)

// NodeState is what a probe learned about one PostgreSQL node.
type NodeState struct {
	// Name identifies the node (e.g. "primary", "replica1", or host:port).
	// It never contains a password.
	Name string `json:"name"`
	// Reachable is false when the node did not answer the probe.
	Reachable bool `json:"reachable"`
	// Error says why the node is unreachable (empty when reachable).
	Error string `json:"error,omitempty"`
	// Role is the node's role as reported by pg_is_in_recovery().
	Role Role `json:"role,omitempty"`
	// LagBytes is how much WAL the primary has written that this standby has
	// not replayed yet (0 on the primary, and when caught up).
	LagBytes int64 `json:"lag_bytes"`
	// Lag is how long ago the primary was at a position this standby has not
	// replayed yet (0 on the primary and when caught up). When LagLowerBound is
	// set, the true lag is at least this much.
	Lag time.Duration `json:"lag_ns"`
	// LagLowerBound reports that Lag is only a lower bound: the probe's sample
	// history did not reach back far enough to see when the primary passed the
	// standby's replay position.
	LagLowerBound bool `json:"lag_lower_bound,omitempty"`
	// ReplayPaused reports that WAL replay on this standby is paused
	// (pg_is_wal_replay_paused()).
	ReplayPaused bool `json:"replay_paused,omitempty"`
}

// PoolState is a connection pool's utilisation over the last sampling window.
type PoolState struct {
	// Name identifies the pool (usually the node it connects to).
	Name string `json:"name"`
	// Acquired is the number of connections currently checked out.
	Acquired int32 `json:"acquired"`
	// Max is the pool's connection limit.
	Max int32 `json:"max"`
	// Acquires is how many acquires completed in the window.
	Acquires int64 `json:"acquires"`
	// MeanAcquireWait is the mean time an acquire took in the window
	// (0 when Acquires is 0).
	MeanAcquireWait time.Duration `json:"mean_acquire_wait_ns"`
	// FailedAcquires counts acquires abandoned in the window because their
	// context ended while waiting for a connection.
	FailedAcquires int64 `json:"failed_acquires"`
	// Window is the length of the sampling window (0 on the first sample,
	// which covers the pool's whole life).
	Window time.Duration `json:"window_ns"`
}

// Utilisation returns Acquired/Max in [0,1], or 0 when Max is 0.
func (p PoolState) Utilisation() float64 {
	if p.Max <= 0 {
		return 0
	}
	return float64(p.Acquired) / float64(p.Max)
}

// QueryState is query timing over the last sampling window.
type QueryState struct {
	// Count is how many statements finished in the window.
	Count int64 `json:"count"`
	// Mean is their mean duration (0 when Count is 0).
	Mean time.Duration `json:"mean_ns"`
	// Slow is how many of them exceeded the slow-query threshold.
	Slow int64 `json:"slow"`
	// Window is the length of the sampling window.
	Window time.Duration `json:"window_ns"`
}

// SlowPerMinute returns the slow-query rate in the window, or 0 when the
// window is empty.
func (q QueryState) SlowPerMinute() float64 {
	if q.Window <= 0 {
		return 0
	}
	return float64(q.Slow) / q.Window.Minutes()
}

// RedisState is the result of pinging Redis.
type RedisState struct {
	// Up is true when the ping succeeded.
	Up bool `json:"up"`
	// Error says why the ping failed.
	Error string `json:"error,omitempty"`
}

// RelayState is the lag of the durable invalidation relay (the change feed
// that turns committed writes into cache invalidations).
type RelayState struct {
	// Lag is how far behind the newest committed change the relay is.
	Lag time.Duration `json:"lag_ns"`
	// Error is set when the lag could not be measured.
	Error string `json:"error,omitempty"`
}

// XIDState is the transaction-ID age of the oldest unfrozen XID in any
// database of the primary's cluster (age(datfrozenxid)).
type XIDState struct {
	// Database is the database holding the oldest XID.
	Database string `json:"database"`
	// Age is age(datfrozenxid) of that database, in transactions.
	Age int64 `json:"age"`
}

// SlotState is one replication slot on the primary.
type SlotState struct {
	// Name is the slot's name.
	Name string `json:"name"`
	// Active reports whether a receiver is attached.
	Active bool `json:"active"`
	// RetainedBytes is the WAL the slot holds back
	// (pg_current_wal_lsn() - restart_lsn).
	RetainedBytes int64 `json:"retained_bytes"`
}

// Snapshot is everything Evaluate looks at. Sections that were not measured
// are left nil/empty and produce no checks; a Snapshot is a plain value, safe
// to copy and to marshal as JSON.
type Snapshot struct {
	// At is when the snapshot was taken.
	At time.Time `json:"at"`
	// Nodes are the PostgreSQL nodes (nil: not probed).
	Nodes []NodeState `json:"nodes,omitempty"`
	// Pools are the connection pools (nil: not sampled).
	Pools []PoolState `json:"pools,omitempty"`
	// Queries is query timing (nil: not measured).
	Queries *QueryState `json:"queries,omitempty"`
	// Redis is the cache's state (nil: no Redis configured).
	Redis *RedisState `json:"redis,omitempty"`
	// Relay is the invalidation relay (nil: not measured).
	Relay *RelayState `json:"relay,omitempty"`
	// XID is the oldest transaction-ID age (nil: not measured).
	XID *XIDState `json:"xid,omitempty"`
	// Slots are replication slots on the primary (nil: not measured).
	Slots []SlotState `json:"slots,omitempty"`
}

// Check is one evaluated rule.
type Check struct {
	// Name says what was checked, e.g. "node replica1 lag" or "pool primary utilisation".
	Name string `json:"name"`
	// Status is the verdict of this rule.
	Status Status `json:"status"`
	// Reason is a human sentence with the measured value and the bound it
	// was compared with.
	Reason string `json:"reason"`
}

// Report is the evaluation of a Snapshot.
type Report struct {
	// Status is the worst Status of all Checks (OK when there are none).
	Status Status `json:"status"`
	// Checks lists every evaluated rule, OK ones included, in a stable order.
	Checks []Check `json:"checks"`
	// Snapshot is what was evaluated.
	Snapshot Snapshot `json:"snapshot"`
}

// Problems returns the checks that are not OK, worst first (stable within a
// status).
func (r Report) Problems() []Check {
	var out []Check
	for _, want := range []Status{Critical, Warn} {
		for _, c := range r.Checks {
			if c.Status == want {
				out = append(out, c)
			}
		}
	}
	return out
}

// String is a one-line summary: the status and the reasons of the problems.
func (r Report) String() string {
	p := r.Problems()
	if len(p) == 0 {
		return r.Status.String()
	}
	parts := make([]string, len(p))
	for i, c := range p {
		parts[i] = c.Status.String() + " " + c.Name + ": " + c.Reason
	}
	return r.Status.String() + " (" + strings.Join(parts, "; ") + ")"
}
