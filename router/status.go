package router

import (
	"time"
)

// NodeStatus is one node as the router last saw it.
type NodeStatus struct {
	Name      string    // host:port
	Reachable bool      // the last probe (or the one before) answered
	Primary   bool      // this node is the primary the router writes to
	Standby   bool      // the node reported pg_is_in_recovery() = true
	LSN       LSN       // replay position (standby) or WAL insert position (primary)
	Timeline  uint32    // the node's timeline
	ProbedAt  time.Time // last probe attempt
	Err       string    // last probe error, if the last probe failed
	// LagBytes and Lag are the standby's lag behind the primary at its last
	// probe: bytes of WAL, and how long ago the primary was at the replay
	// position (0 when caught up). LagKnown is false when the replica is
	// behind the whole sample history (Lag is then a lower bound) or no
	// primary has been seen.
	LagBytes uint64
	Lag      time.Duration
	LagKnown bool
	// Serving is true when the node is in the read set: a reachable standby
	// on the primary's timeline.
	Serving  bool
	Breaker  string // "closed", "half-open" or "open"
	InFlight int64  // requests running on the node now
	// Pool is the node's connection pool at the time of the snapshot.
	Pool PoolStats
}

// PoolStats are a node pool's gauges and cumulative counters, as pgxpool
// reports them.
type PoolStats struct {
	Max, Acquired, Idle, Constructing int32
	// AcquireCount and AcquireDuration are the cumulative successful
	// acquires and the time they waited in all; CanceledAcquireCount counts
	// acquires whose context ended first (e.g. AcquireTimeout).
	AcquireCount         int64
	AcquireDuration      time.Duration
	CanceledAcquireCount int64
}

// Status is a snapshot of the cluster as the router sees it.
type Status struct {
	// Primary is the name of the node writes go to; "" when there is none
	// (unreachable, or split brain).
	Primary string
	// SplitBrain is true while more than one node claims to be primary:
	// writes fail with ErrUnavailable until one is demoted.
	SplitBrain bool
	// Timeline is the primary's timeline (the last known one if the primary
	// is gone).
	Timeline uint32
	// Replication is the replication mode the primary reports.
	Replication ReplicationMode
	// Nodes lists every configured node, in configuration order.
	Nodes []NodeStatus
}

// Status returns the router's current view of the cluster, with each node's
// pool statistics. It does no I/O;
// safe for concurrent use.
func (r *Router) Status() Status {
	t := r.topo.Load()
	s := Status{SplitBrain: t.splitBrain, Timeline: t.timeline}
	if t.primary != nil {
		s.Primary = t.primary.name
		s.Replication = t.primary.state.Load().mode
	}
	serving := map[*node]bool{}
	for _, n := range t.replicas {
		serving[n] = true
	}
	for _, n := range r.nodes {
		st := n.state.Load()
		ns := NodeStatus{
			Name:      n.name,
			Reachable: st.reachable,
			Primary:   n == t.primary,
			Standby:   st.standby,
			LSN:       st.lsn,
			Timeline:  st.timeline,
			ProbedAt:  st.probedAt,
			Serving:   serving[n],
			Breaker:   n.breaker.State().String(),
			InFlight:  n.inflight.Load(),
		}
		if n.pool != nil {
			ps := n.pool.Stat()
			ns.Pool = PoolStats{Max: ps.MaxConns(), Acquired: ps.AcquiredConns(), Idle: ps.IdleConns(),
				Constructing: ps.ConstructingConns(), AcquireCount: ps.AcquireCount(),
				AcquireDuration: ps.AcquireDuration(), CanceledAcquireCount: ps.CanceledAcquireCount()}
		}
		if st.failures > 0 {
			ns.Err = st.err
		}
		if st.standby {
			ns.LagBytes, ns.Lag, ns.LagKnown = st.lag.bytes, st.lag.seconds, st.lag.known
		}
		s.Nodes = append(s.Nodes, ns)
	}
	return s
}
