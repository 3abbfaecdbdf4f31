package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hsdal/hsdal/cache"
)

// Report is the outcome of one chaos run, written as JSON under
// integration/results/ and summarised by Summary.
type Report struct {
	Seed        uint64    `json:"seed"`
	Replication string    `json:"replication"` // "sync" (quorum) or "async"
	StartedAt   time.Time `json:"started_at"`
	DurationS   float64   `json:"duration_s"` // workload duration
	Users       int       `json:"users"`
	DALs        int       `json:"dals"`

	// Faults counts the injected faults by kind; FaultErrors the
	// injections or heals that failed; FaultLog lists them all.
	Faults      map[string]int `json:"faults"`
	FaultErrors int            `json:"fault_errors"`
	FaultLog    []FaultEvent   `json:"fault_log"`

	// Attempted is every operation (reads and writes). Acknowledged,
	// UnknownOutcome and FailedWrites split the writes.
	Attempted      int `json:"attempted"`
	Writes         int `json:"writes"`
	Acknowledged   int `json:"acknowledged"`
	UnknownOutcome int `json:"unknown_outcome"`
	FailedWrites   int `json:"failed_writes"`
	Reads          int `json:"reads"`
	ReadsOK        int `json:"reads_ok"`
	// Errors counts errors by "write.<kind>" / "read.<kind>".
	Errors map[string]int `json:"errors"`
	// ErrorSamples holds up to 3 distinct messages per error kind.
	ErrorSamples map[string][]string `json:"error_samples,omitempty"`
	OpsByKind    map[string]int      `json:"ops_by_kind"`
	OpsPerSec    float64             `json:"ops_per_s"`

	// Violations counts violations by kind (all must be 0);
	// ViolationSamples shows some with their history excerpts.
	Violations       map[string]int `json:"violations"`
	ViolationSamples []Violation    `json:"violation_samples,omitempty"`
	// Anomalies are counted behaviours the API does not promise against
	// (see Check).
	Anomalies map[string]int `json:"anomalies"`
	// LostAtFailover: acknowledged writes lost at each primary kill
	// (asynchronous replication only).
	LostAtFailover      []int `json:"lost_at_failover,omitempty"`
	ObservationsChecked int   `json:"observations_checked"`
	TokenErrors         int64 `json:"token_errors"`
	// SlowQueries counts the statements the DALs' slow-query tracer logged.
	SlowQueries int64 `json:"slow_queries_logged"`

	// WriteUnavailableMS: for each primary kill, the time from the moment
	// the old primary was dead (kill -9 completed) until the first write
	// that started after it was acknowledged (by the new primary); -1 if
	// none was.
	WriteUnavailableMS []int64 `json:"write_unavailable_ms"`
	// RouterNoPrimaryMS: per DAL, the total time its router knew no usable
	// primary (sampled every 50ms).
	RouterNoPrimaryMS []int64 `json:"router_no_primary_ms"`
	// ReadErrorsDuringFaults counts failed reads that overlapped a fault
	// (from its injection until 2s after its heal, the breakers' open
	// time); ReadErrorsOutsideFaults the others.
	ReadErrorsDuringFaults  int `json:"read_errors_during_faults"`
	ReadErrorsOutsideFaults int `json:"read_errors_outside_faults"`
	// ReadErrorsByFault counts failed reads by the kind of the fault(s)
	// they overlapped.
	ReadErrorsByFault map[string]int `json:"read_errors_by_fault"`
	// WriteUnavailableByFault counts writes that failed with ErrUnavailable
	// by the kind of the fault(s) they overlapped (same windows as reads).
	WriteUnavailableByFault map[string]int `json:"write_unavailable_by_fault"`
	// ReadErrorsByLevel counts failed reads by the consistency they asked
	// for (Strong reads cannot be served while the primary is down).
	ReadErrorsByLevel map[string]int `json:"read_errors_by_level"`

	// Cache says whether cache faults and checks ran.
	Cache CacheReport `json:"cache"`

	// History is the run's history (not serialised with the report; see
	// History.MarshalJSON).
	History *History `json:"-"`
}

// CacheReport says whether the cache part of the suite ran, and what the
// caches did.
type CacheReport struct {
	Enabled bool   `json:"enabled"`
	Note    string `json:"note,omitempty"`
	// Stats are the cache counters summed over every DAL of the run.
	Stats cache.Stats `json:"stats"`
	// RelayApplied: outbox rows applied by each DAL's relay.
	RelayApplied []uint64 `json:"relay_applied,omitempty"`
	// FinalCheckHits and FinalCheckMisses: how many reads of the
	// cache-equals-primary check the cache served, and how many it did not.
	FinalCheckHits   uint64 `json:"final_check_hits"`
	FinalCheckMisses uint64 `json:"final_check_misses"`
}

// ViolationTotal is the number of violations of every kind.
func (r *Report) ViolationTotal() int {
	n := 0
	for _, v := range r.Violations {
		n += v
	}
	return n
}

// WriteJSON writes the report, indented, to path (creating its directory).
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("integration: report: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("integration: report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("integration: report: %w", err)
	}
	return nil
}

func sortedKV(m map[string]int, skipZero bool) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 || !skipZero {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// Summary is a few lines of the numbers that matter, for stdout.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "chaos seed=%d replication=%s duration=%.0fs users=%d dals=%d\n", r.Seed, r.Replication, r.DurationS, r.Users, r.DALs)
	fmt.Fprintf(&b, "  faults: %s (failed %d)\n", sortedKV(r.Faults, false), r.FaultErrors)
	fmt.Fprintf(&b, "  ops: attempted=%d (%.0f/s) writes=%d acknowledged=%d unknown_outcome=%d failed=%d reads=%d ok=%d\n",
		r.Attempted, r.OpsPerSec, r.Writes, r.Acknowledged, r.UnknownOutcome, r.FailedWrites, r.Reads, r.ReadsOK)
	fmt.Fprintf(&b, "  errors: %s\n", sortedKV(r.Errors, true))
	fmt.Fprintf(&b, "  write unavailable after primary kill (ms): %v; router without primary (ms per DAL): %v; unavailable writes by fault: %s\n",
		r.WriteUnavailableMS, r.RouterNoPrimaryMS, sortedKV(r.WriteUnavailableByFault, true))
	fmt.Fprintf(&b, "  read errors: during faults=%d (%s) outside=%d; by level: %s\n", r.ReadErrorsDuringFaults,
		sortedKV(r.ReadErrorsByFault, true), r.ReadErrorsOutsideFaults, sortedKV(r.ReadErrorsByLevel, true))
	fmt.Fprintf(&b, "  checked %d observations: violations %d (%s); anomalies: %s",
		r.ObservationsChecked, r.ViolationTotal(), sortedKV(r.Violations, true), sortedKV(r.Anomalies, false))
	if len(r.LostAtFailover) > 0 {
		fmt.Fprintf(&b, "; lost at each failover: %v", r.LostAtFailover)
	}
	fmt.Fprintf(&b, "\n  cache: enabled=%v %s", r.Cache.Enabled, r.Cache.Note)
	if r.Cache.Enabled {
		st := r.Cache.Stats
		fmt.Fprintf(&b, "hits redis=%d l1=%d misses=%d fills=%d rejected(stale=%d epoch=%d too_old=%d) invalidations=%d (errors %d) epoch_bumps=%d l1_flushes=%d; relay applied %v; final check served %d of %d reads from the cache",
			st.RedisHits, st.L1Hits, st.Misses, st.Fills, st.FillsRejectedStale, st.FillsRejectedEpoch, st.FillsTooOld,
			st.Invalidations, st.InvalidationErrors, st.EpochBumps, st.L1Flushes, r.Cache.RelayApplied,
			r.Cache.FinalCheckHits, r.Cache.FinalCheckHits+r.Cache.FinalCheckMisses)
	}
	return b.String()
}

// fill computes the op and fault statistics of r from h and the fault log.
func (r *Report) fill(h *History, faults []FaultEvent, settle time.Duration) {
	r.Errors = map[string]int{}
	r.ErrorSamples = map[string][]string{}
	sample := func(kind, msg string) {
		r.Errors[kind]++
		if s := r.ErrorSamples[kind]; len(s) < 3 && !slices.Contains(s, msg) {
			r.ErrorSamples[kind] = append(s, msg)
		}
	}
	r.OpsByKind = map[string]int{}
	r.ReadErrorsByFault = map[string]int{}
	r.ReadErrorsByLevel = map[string]int{}
	r.WriteUnavailableByFault = map[string]int{}
	overlapping := func(op *Op, f func(kind string)) bool {
		during := false
		for _, fe := range faults {
			end := fe.Healed
			if end == 0 {
				end = 1<<62 - 1
			}
			if op.End >= fe.Start && op.Start <= end+settle {
				during = true
				f(fe.Kind)
			}
		}
		return during
	}
	ops := h.Ops()
	for _, op := range ops {
		if op.Level == LevelFinal || strings.HasPrefix(op.Kind, "setup") {
			continue
		}
		r.Attempted++
		r.OpsByKind[op.Kind]++
		if op.IsWrite() {
			r.Writes++
			switch op.Outcome {
			case Acked:
				r.Acknowledged++
			case Unknown:
				r.UnknownOutcome++
			case Failed:
				r.FailedWrites++
			}
			if op.ErrKind != "" {
				sample("write."+op.ErrKind, op.Err)
			}
			if op.ErrKind == "unavailable" {
				overlapping(op, func(kind string) { r.WriteUnavailableByFault[kind]++ })
			}
			continue
		}
		r.Reads++
		if op.Outcome == Acked {
			r.ReadsOK++
			continue
		}
		sample("read."+op.ErrKind, op.Err)
		r.ReadErrorsByLevel[string(op.Level)]++
		if overlapping(op, func(kind string) { r.ReadErrorsByFault[kind]++ }) {
			r.ReadErrorsDuringFaults++
		} else {
			r.ReadErrorsOutsideFaults++
		}
	}
	for _, f := range faults {
		if f.Kind != FaultPrimaryFailover || f.Killed == 0 {
			continue
		}
		best := int64(-1)
		for _, op := range ops {
			if op.IsWrite() && op.Outcome == Acked && op.Start > f.Killed {
				if ms := (op.End - f.Killed).Milliseconds(); best < 0 || ms < best {
					best = ms
				}
			}
		}
		r.WriteUnavailableMS = append(r.WriteUnavailableMS, best)
	}
	if r.WriteUnavailableMS == nil {
		r.WriteUnavailableMS = []int64{}
	}
}
