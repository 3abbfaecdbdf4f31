package health

import (
	"fmt"
	"time"
)

// Thresholds are the alert bounds Evaluate applies. A value passes a bound
// when it is strictly greater than it. The zero value of every field means the
// documented default; a negative value disables that rule.
//
// Defaults for pool, acquire wait, query time and slow-query rate are the
// maintenance plan's alert table; the others are this package's choices,
// explained per field.
type Thresholds struct {
	// PoolUtilWarn / PoolUtilCritical bound acquired/max connections of a
	// pool, as a fraction. Defaults 0.8 and 0.9.
	PoolUtilWarn, PoolUtilCritical float64
	// AcquireWaitWarn / AcquireWaitCritical bound a pool's mean acquire wait
	// in the sampling window. Defaults 5s and 30s.
	AcquireWaitWarn, AcquireWaitCritical time.Duration
	// FailedAcquiresCritical is how many failed acquires in the window are
	// tolerated before CRITICAL. Default 0: any failure is critical (a
	// negative value disables the rule).
	FailedAcquiresCritical int64
	// MeanQueryWarn / MeanQueryCritical bound the mean statement duration in
	// the window. Defaults 100ms and 500ms.
	MeanQueryWarn, MeanQueryCritical time.Duration
	// SlowPerMinuteWarn / SlowPerMinuteCritical bound the slow-statement rate.
	// Defaults 10 and 50 per minute.
	SlowPerMinuteWarn, SlowPerMinuteCritical float64
	// ReplicaLagWarn / ReplicaLagCritical bound a standby's replication lag in
	// time. Defaults 1s (past it, reads with the default bounded staleness stop
	// using the standby) and 30s.
	ReplicaLagWarn, ReplicaLagCritical time.Duration
	// ReplicaLagBytesWarn / ReplicaLagBytesCritical bound a standby's lag in
	// un-replayed WAL bytes. Defaults 64 MiB (four WAL segments) and 1 GiB.
	ReplicaLagBytesWarn, ReplicaLagBytesCritical int64
	// RelayLagWarn / RelayLagCritical bound the invalidation relay's lag.
	// Defaults 5s and 30s (cache entries may be stale for that long when the
	// write path's fast invalidation also failed).
	RelayLagWarn, RelayLagCritical time.Duration
	// XIDAgeWarn / XIDAgeCritical bound age(datfrozenxid). Defaults 500
	// million (2.5× autovacuum_freeze_max_age's default: anti-wraparound
	// autovacuum is not keeping up) and 1.5 billion (about 650 million
	// transactions before PostgreSQL stops accepting commands).
	XIDAgeWarn, XIDAgeCritical int64
	// SlotRetainedWarn / SlotRetainedCritical bound the WAL a replication
	// slot holds back. Defaults 1 GiB and 8 GiB. An inactive slot retaining
	// WAL above the warn bound is reported with its state.
	SlotRetainedWarn, SlotRetainedCritical int64
}

// DefaultThresholds returns the thresholds the zero value stands for.
func DefaultThresholds() Thresholds { return Thresholds{}.withDefaults() }

func (t Thresholds) withDefaults() Thresholds {
	f := func(v *float64, d float64) {
		if *v == 0 {
			*v = d
		}
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	i := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	f(&t.PoolUtilWarn, 0.8)
	f(&t.PoolUtilCritical, 0.9)
	dur(&t.AcquireWaitWarn, 5*time.Second)
	dur(&t.AcquireWaitCritical, 30*time.Second)
	dur(&t.MeanQueryWarn, 100*time.Millisecond)
	dur(&t.MeanQueryCritical, 500*time.Millisecond)
	f(&t.SlowPerMinuteWarn, 10)
	f(&t.SlowPerMinuteCritical, 50)
	dur(&t.ReplicaLagWarn, time.Second)
	dur(&t.ReplicaLagCritical, 30*time.Second)
	i(&t.ReplicaLagBytesWarn, 64<<20)
	i(&t.ReplicaLagBytesCritical, 1<<30)
	dur(&t.RelayLagWarn, 5*time.Second)
	dur(&t.RelayLagCritical, 30*time.Second)
	i(&t.XIDAgeWarn, 500_000_000)
	i(&t.XIDAgeCritical, 1_500_000_000)
	i(&t.SlotRetainedWarn, 1<<30)
	i(&t.SlotRetainedCritical, 8<<30)
	// FailedAcquiresCritical: 0 is the default itself.
	return t
}

// level compares v with a warn and a critical bound; a negative bound is
// disabled. It returns the status and the bound that was passed (or the warn
// bound when none was).
func level[T int64 | float64 | time.Duration](v, warn, crit T) (Status, T) {
	switch {
	case crit >= 0 && v > crit:
		return Critical, crit
	case warn >= 0 && v > warn:
		return Warn, warn
	default:
		return OK, warn
	}
}

// Evaluate applies t to s and returns the verdict with one Check per rule
// that had data. It is pure: no I/O, no clock, safe for concurrent use.
//
// Rules:
//   - nodes: no reachable primary is CRITICAL (writes fail), more than one
//     is CRITICAL (split brain); each unreachable node is WARN on its own
//     (reads move elsewhere; if it was the primary, the primary rule above
//     is what turns CRITICAL); a standby with paused replay is WARN; standby
//     lag in time and in bytes against the ReplicaLag* bounds;
//   - pools: utilisation, mean acquire wait, failed acquires;
//   - queries: mean duration and slow-query rate;
//   - Redis down is WARN (reads fall back to PostgreSQL);
//   - relay lag against the RelayLag* bounds; a relay that cannot be
//     measured is WARN;
//   - XID age and replication-slot retention against their bounds.
func Evaluate(s Snapshot, t Thresholds) Report {
	t = t.withDefaults()
	var checks []Check
	add := func(name string, st Status, format string, args ...any) {
		checks = append(checks, Check{Name: name, Status: st, Reason: fmt.Sprintf(format, args...)})
	}

	if s.Nodes != nil {
		primaries := 0
		for _, n := range s.Nodes {
			if n.Reachable && n.Role == RolePrimary {
				primaries++
			}
		}
		switch {
		case primaries == 0:
			add("primary", Critical, "no reachable primary among %d node(s): writes fail", len(s.Nodes))
		case primaries > 1:
			add("primary", Critical, "%d nodes report themselves primary (split brain)", primaries)
		default:
			add("primary", OK, "one reachable primary")
		}
		for _, n := range s.Nodes {
			name := "node " + n.Name
			if !n.Reachable {
				add(name+" reachable", Warn, "unreachable: %s", orUnknown(n.Error))
				continue
			}
			if n.Role != RoleStandby {
				continue
			}
			if n.ReplayPaused {
				add(name+" replay", Warn, "WAL replay is paused")
			}
			st, b := level(n.Lag, t.ReplicaLagWarn, t.ReplicaLagCritical)
			bound := "at least " // only for lower bounds
			if !n.LagLowerBound {
				bound = ""
			}
			add(name+" lag", st, "replay lag %s%s (%s)", bound, n.Lag.Round(time.Millisecond), boundText(st, b))
			stb, bb := level(n.LagBytes, t.ReplicaLagBytesWarn, t.ReplicaLagBytesCritical)
			add(name+" lag bytes", stb, "%s of WAL not replayed (%s)", bytesText(n.LagBytes), boundTextBytes(stb, bb))
		}
	}

	for _, p := range s.Pools {
		name := "pool " + p.Name
		u := p.Utilisation()
		st, b := level(u, t.PoolUtilWarn, t.PoolUtilCritical)
		add(name+" utilisation", st, "%d of %d connections in use (%.0f%%; %s)",
			p.Acquired, p.Max, u*100, boundTextPct(st, b))
		if p.Acquires > 0 {
			st, b := level(p.MeanAcquireWait, t.AcquireWaitWarn, t.AcquireWaitCritical)
			add(name+" acquire wait", st, "mean acquire wait %s over %d acquires (%s)",
				p.MeanAcquireWait.Round(time.Microsecond), p.Acquires, boundText(st, b))
		}
		if t.FailedAcquiresCritical >= 0 {
			if p.FailedAcquires > t.FailedAcquiresCritical {
				add(name+" acquire failures", Critical, "%d acquire(s) gave up waiting for a connection", p.FailedAcquires)
			} else {
				add(name+" acquire failures", OK, "%d failed acquires", p.FailedAcquires)
			}
		}
	}

	if q := s.Queries; q != nil {
		if q.Count > 0 {
			st, b := level(q.Mean, t.MeanQueryWarn, t.MeanQueryCritical)
			add("query time", st, "mean query time %s over %d statements (%s)",
				q.Mean.Round(time.Microsecond), q.Count, boundText(st, b))
		}
		if q.Window > 0 {
			r := q.SlowPerMinute()
			st, b := level(r, t.SlowPerMinuteWarn, t.SlowPerMinuteCritical)
			add("slow queries", st, "%.1f slow statements per minute (%d in %s; %s)",
				r, q.Slow, q.Window.Round(time.Second), boundTextRate(st, b))
		}
	}

	if r := s.Redis; r != nil {
		if r.Up {
			add("redis", OK, "reachable")
		} else {
			add("redis", Warn, "unreachable, reads fall back to PostgreSQL: %s", orUnknown(r.Error))
		}
	}

	if r := s.Relay; r != nil {
		if r.Error != "" {
			add("relay", Warn, "relay lag unknown: %s", r.Error)
		} else {
			st, b := level(r.Lag, t.RelayLagWarn, t.RelayLagCritical)
			add("relay", st, "invalidation relay lag %s (%s)", r.Lag.Round(time.Millisecond), boundText(st, b))
		}
	}

	if x := s.XID; x != nil {
		st, b := level(x.Age, t.XIDAgeWarn, t.XIDAgeCritical)
		add("xid age", st, "database %q has unfrozen XIDs %d transactions old (%s)", x.Database, x.Age, boundTextCount(st, b))
	}

	for _, sl := range s.Slots {
		st, b := level(sl.RetainedBytes, t.SlotRetainedWarn, t.SlotRetainedCritical)
		state := "active"
		if !sl.Active {
			state = "inactive"
		}
		add("slot "+sl.Name, st, "%s slot retains %s of WAL (%s)", state, bytesText(sl.RetainedBytes), boundTextBytes(st, b))
	}

	r := Report{Status: OK, Checks: checks, Snapshot: s}
	for _, c := range checks {
		if c.Status > r.Status {
			r.Status = c.Status
		}
	}
	return r
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown error"
	}
	return s
}

func boundWord(st Status) string {
	switch st {
	case Critical:
		return "critical above "
	case Warn:
		return "warn above "
	default:
		return "warn above "
	}
}

func boundText(st Status, b time.Duration) string {
	if b < 0 {
		return "rule disabled"
	}
	return boundWord(st) + b.String()
}

func boundTextBytes(st Status, b int64) string {
	if b < 0 {
		return "rule disabled"
	}
	return boundWord(st) + bytesText(b)
}

func boundTextPct(st Status, b float64) string {
	if b < 0 {
		return "rule disabled"
	}
	return fmt.Sprintf("%s%.0f%%", boundWord(st), b*100)
}

func boundTextRate(st Status, b float64) string {
	if b < 0 {
		return "rule disabled"
	}
	return fmt.Sprintf("%s%g/min", boundWord(st), b)
}

func boundTextCount(st Status, b int64) string {
	if b < 0 {
		return "rule disabled"
	}
	return fmt.Sprintf("%s%d", boundWord(st), b)
}

// bytesText formats n with a binary unit.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit || m <= -unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
