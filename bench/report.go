package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// resultRow is one scenario × variant measurement; its JSON form is the schema
// documented in the README (bench/results/latest.json).
type resultRow struct {
	Scenario      string  `json:"scenario"`
	Variant       string  `json:"variant"`
	Concurrency   int     `json:"concurrency"`
	Ops           int     `json:"ops"`
	Errors        int     `json:"errors"`
	OpsPerSec     float64 `json:"ops_per_sec"`
	P50us         float64 `json:"p50_us"`
	P95us         float64 `json:"p95_us"`
	P99us         float64 `json:"p99_us"`
	HitRate       float64 `json:"hit_rate"`
	ReplicaShare  float64 `json:"replica_share"`
	RYWViolations int     `json:"ryw_violations"`
	// RatioVsRawPrimary is ops_per_sec / raw-primary's ops_per_sec in the same
	// scenario (raw-replica's in routing-replica, which measures raw pgx on
	// the same replica); 0 when the scenario has no such run.
	RatioVsRawPrimary float64 `json:"ratio_vs_raw_primary"`
	// Depth is the paging depth (paging scenarios only).
	Depth int `json:"depth,omitempty"`
	// CDF samples the latency distribution: latency (µs) at each percentile
	// in cdfPercentiles, for the HTML report.
	CDF []float64 `json:"latency_cdf_us,omitempty"`
	// Note says why a number is missing or a target was missed.
	Note string `json:"note,omitempty"`
}

var cdfPercentiles = []float64{1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97, 99, 99.5, 99.9}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

// newRow fills the latency and throughput fields of a row from a load result.
func newRow(scenario, variant string, concurrency int, r loadResult) resultRow {
	row := resultRow{
		Scenario: scenario, Variant: variant, Concurrency: concurrency,
		Ops: r.ops, Errors: r.errors, OpsPerSec: r.opsPerSec(),
		P50us: us(r.percentile(50)), P95us: us(r.percentile(95)), P99us: us(r.percentile(99)),
	}
	if r.ops > 0 {
		for _, p := range cdfPercentiles {
			row.CDF = append(row.CDF, us(r.percentile(p)))
		}
	}
	if r.firstErr != nil {
		row.Note = "first error: " + r.firstErr.Error()
	}
	return row
}

// runMeta describes the run: what was measured, where and with what.
type runMeta struct {
	Started    time.Time `json:"started"`
	Machine    string    `json:"machine"`
	CPUs       int       `json:"cpus"`
	Go         string    `json:"go"`
	PostgreSQL string    `json:"postgresql"`
	Redis      string    `json:"redis"`
	Pgpool     string    `json:"pgpool,omitempty"`
	PgpoolMode string    `json:"pgpool_mode,omitempty"`
	Scale      string    `json:"scale"`
	Duration   string    `json:"duration_per_run"`
	Seed       uint64    `json:"seed"`
	Notes      []string  `json:"notes,omitempty"`
}

// report is the whole output of a run.
type report struct {
	Meta    runMeta     `json:"meta"`
	Results []resultRow `json:"results"`
	// Curves holds throughput-vs-concurrency series (scenario "concurrency").
	Targets []targetCheck `json:"targets"`
}

// targetCheck is one of the performance targets, evaluated.
type targetCheck struct {
	Name   string `json:"name"`
	Met    bool   `json:"met"`
	Detail string `json:"detail"`
}

// fillRatios sets RatioVsRawPrimary on every row from the raw-primary row of
// the same scenario (and depth/concurrency).
func (r *report) fillRatios() {
	type key struct {
		s    string
		d, c int
	}
	// The base is raw-primary, or raw pgx on the same replica where a
	// scenario measures replica reads (routing-replica).
	base := map[key]float64{}
	for _, row := range r.Results {
		if row.Variant == "raw-primary" || row.Variant == "raw-replica" {
			base[key{row.Scenario, row.Depth, row.Concurrency}] = row.OpsPerSec
		}
	}
	for i, row := range r.Results {
		if b := base[key{row.Scenario, row.Depth, row.Concurrency}]; b > 0 {
			r.Results[i].RatioVsRawPrimary = row.OpsPerSec / b
		}
	}
}

// writeTable prints the human report.
func (r *report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "hsdal benchmark — %s, %d CPUs, Go %s, PostgreSQL %s, Redis %s", r.Meta.Machine, r.Meta.CPUs, r.Meta.Go, r.Meta.PostgreSQL, r.Meta.Redis)
	if r.Meta.Pgpool != "" {
		fmt.Fprintf(w, ", pgpool-II %s (%s)", r.Meta.Pgpool, r.Meta.PgpoolMode)
	}
	fmt.Fprintf(w, "\nscale %s, %s per run, seed %d\n\n", r.Meta.Scale, r.Meta.Duration, r.Meta.Seed)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tvariant\tconc\tops/s\tp50 µs\tp95 µs\tp99 µs\thit%\treplica%\tRYW viol\t×raw\terrors\t")
	for _, row := range r.Results {
		ratio := "-"
		if row.RatioVsRawPrimary > 0 {
			ratio = fmt.Sprintf("%.2f", row.RatioVsRawPrimary)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%d\t%s\t%d\t\n",
			row.Scenario, row.Variant, row.Concurrency, row.OpsPerSec, row.P50us, row.P95us, row.P99us,
			100*row.HitRate, 100*row.ReplicaShare, row.RYWViolations, ratio, row.Errors)
	}
	tw.Flush()
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "\ntargets:")
		for _, t := range r.Targets {
			mark := "MET   "
			if !t.Met {
				mark = "MISSED"
			}
			fmt.Fprintf(w, "  %s %s — %s\n", mark, t.Name, t.Detail)
		}
	}
	for _, n := range r.Meta.Notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, row := range r.Results {
		if row.Note != "" {
			fmt.Fprintf(w, "note: %s/%s: %s\n", row.Scenario, row.Variant, row.Note)
		}
	}
}

// writeFiles writes latest.json and report.html into dir.
func (r *report) writeFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: results dir: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: write results: %w", err)
	}
	var sb strings.Builder
	if err := r.writeHTML(&sb); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.html"), []byte(sb.String()), 0o644); err != nil {
		return fmt.Errorf("bench: write html: %w", err)
	}
	return nil
}

// scenarios lists the distinct scenarios in report order.
func (r *report) scenarios() []string {
	var out []string
	for _, row := range r.Results {
		if !slices.Contains(out, row.Scenario) {
			out = append(out, row.Scenario)
		}
	}
	return out
}
