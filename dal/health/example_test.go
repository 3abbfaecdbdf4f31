package health_test

import (
	"fmt"
	"time"

	"github.com/hsdal/hsdal/dal/health"
)

// Evaluate is pure: feed it a snapshot (from a Checker, the router, or a
// test) and thresholds (zero fields mean the maintenance plan's defaults).
func ExampleEvaluate() {
	snap := health.Snapshot{
		Nodes: []health.NodeState{
			{Name: "pg0", Reachable: true, Role: health.RolePrimary},
			{Name: "pg1", Reachable: true, Role: health.RoleStandby, Lag: 3 * time.Second, LagBytes: 4096},
		},
		Pools:   []health.PoolState{{Name: "pg0", Acquired: 19, Max: 20}},
		Queries: &health.QueryState{Count: 1200, Mean: 20 * time.Millisecond, Slow: 3, Window: time.Minute},
	}
	r := health.Evaluate(snap, health.Thresholds{})
	fmt.Println(r.Status)
	for _, c := range r.Problems() {
		fmt.Printf("%s %s: %s\n", c.Status, c.Name, c.Reason)
	}
	// Output:
	// CRITICAL
	// CRITICAL pool pg0 utilisation: 19 of 20 connections in use (95%; critical above 90%)
	// WARN node pg1 lag: replay lag 3s (warn above 1s)
}
