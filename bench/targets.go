package main

import (
	"fmt"
	"strings"
)

// evaluateTargets checks the measured rows against the bench issue's
// targets. A target whose variants did not run is reported as missed with
// the reason, never as met.
func evaluateTargets(r *report) []targetCheck {
	find := func(scenario, variant string) *resultRow {
		var best *resultRow
		for i := range r.Results {
			row := &r.Results[i]
			if row.Scenario == scenario && row.Variant == variant && row.Ops > 0 {
				if best == nil || row.Concurrency > best.Concurrency {
					best = row
				}
			}
		}
		return best
	}
	var out []targetCheck
	ratio := func(name, scenario, variant string, min float64) {
		row := find(scenario, variant)
		if row == nil || row.RatioVsRawPrimary == 0 {
			out = append(out, targetCheck{Name: name, Detail: "not measured: " + variant + " did not run in " + scenario})
			return
		}
		out = append(out, targetCheck{Name: name, Met: row.RatioVsRawPrimary >= min,
			Detail: fmt.Sprintf("%s/%s = %.2f× raw-primary (target ≥ %.2f×)", scenario, variant, row.RatioVsRawPrimary, min)})
	}
	for _, s := range []string{"hot-token", "hot-profile", "hot-devices", "hot-members", "hot-isjoined"} {
		ratio("in-process tier ≥ 20× raw-primary on "+s, s, "hsdal-l1", 20)
	}
	for _, s := range []string{"hot-token", "hot-devices", "hot-members"} {
		ratio("Redis-cached multi-row entity ≥ 3× raw-primary on "+s, s, "hsdal", 3)
	}
	for _, s := range []string{"hot-profile", "hot-isjoined"} {
		ratio("Redis-cached single row ≥ 1× raw-primary on "+s, s, "hsdal", 1)
	}
	ratio("routing overhead within 5% on the primary", "routing", "hsdal-nocache", 0.95)
	ratio("routing overhead within 5% on a replica", "routing-replica", "hsdal-nocache-1r", 0.95)
	// hsdal ≥ 1.5× pgpool with lower p99, in every scenario both ran.
	for _, s := range r.scenarios() {
		pp := find(s, "pgpool")
		if pp == nil {
			continue
		}
		for _, v := range []string{"hsdal", "hsdal-nocache"} {
			row := find(s, v)
			if row == nil || pp.OpsPerSec == 0 {
				continue
			}
			x := row.OpsPerSec / pp.OpsPerSec
			out = append(out, targetCheck{Name: fmt.Sprintf("%s ≥ 1.5× pgpool with lower p99 on %s", v, s),
				Met:    x >= 1.5 && row.P99us < pp.P99us,
				Detail: fmt.Sprintf("%.2f× pgpool throughput, p99 %.0f µs vs %.0f µs", x, row.P99us, pp.P99us)})
			break
		}
	}
	// Keyset page latency flat in depth; OFFSET grows.
	var shallow, deep, offShallow, offDeep *resultRow
	for i := range r.Results {
		row := &r.Results[i]
		if !strings.HasPrefix(row.Scenario, "paging-depth-") || row.Ops == 0 {
			continue
		}
		switch row.Variant {
		case "hsdal-nocache":
			if shallow == nil || row.Depth < shallow.Depth {
				shallow = row
			}
			if deep == nil || row.Depth > deep.Depth {
				deep = row
			}
		case "offset":
			if offShallow == nil || row.Depth < offShallow.Depth {
				offShallow = row
			}
			if offDeep == nil || row.Depth > offDeep.Depth {
				offDeep = row
			}
		}
	}
	if shallow != nil && deep != nil && shallow != deep {
		x := deep.P50us / shallow.P50us
		t := targetCheck{Name: "keyset page at the deepest depth ≤ 1.5× depth 0", Met: x <= 1.5,
			Detail: fmt.Sprintf("p50 %.0f µs at depth %d vs %.0f µs at depth 0 (%.2f×)", deep.P50us, deep.Depth, shallow.P50us, x)}
		if offShallow != nil && offDeep != nil && offShallow != offDeep {
			t.Detail += fmt.Sprintf("; OFFSET %.0f µs → %.0f µs (%.1f×)", offShallow.P50us, offDeep.P50us, offDeep.P50us/offShallow.P50us)
		}
		out = append(out, t)
	} else {
		out = append(out, targetCheck{Name: "keyset page at the deepest depth ≤ 1.5× depth 0", Detail: "not measured"})
	}
	// Zero read-your-writes violations for every hsdal variant.
	viol, ran := 0, false
	for _, row := range r.Results {
		if strings.HasPrefix(row.Variant, "hsdal") && row.Scenario == "mix" {
			viol += row.RYWViolations
			ran = true
		}
	}
	if ran {
		out = append(out, targetCheck{Name: "zero read-your-writes violations for hsdal variants", Met: viol == 0,
			Detail: fmt.Sprintf("%d violations in the mix", viol)})
	}
	return out
}
