package main

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	r := loadResult{}
	for i := 1; i <= 100; i++ {
		r.lat = append(r.lat, time.Duration(i)*time.Microsecond)
	}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{50, 50 * time.Microsecond}, {95, 95 * time.Microsecond}, {99, 99 * time.Microsecond}, {100, 100 * time.Microsecond}, {0.1, time.Microsecond}} {
		if got := r.percentile(tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := (loadResult{}).percentile(50); got != 0 {
		t.Errorf("empty p50 = %v", got)
	}
}

func TestRunLoadCountsOpsAndErrors(t *testing.T) {
	var calls atomic.Int64
	res := runLoad(context.Background(), 4, time.Minute, 1000, 1, func(ctx context.Context, w int, rng *rand.Rand) error {
		if calls.Add(1)%10 == 0 {
			return errors.New("boom")
		}
		return nil
	})
	if res.ops+res.errors != 1000 || res.errors != 100 {
		t.Fatalf("ops=%d errors=%d, want 900/100", res.ops, res.errors)
	}
	if res.firstErr == nil {
		t.Fatal("first error not kept")
	}
}

func TestZipfIsSkewedAndInRange(t *testing.T) {
	z := newZipf(1000, 1.1)
	rng := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, 1000)
	for range 100000 {
		k := z.next(rng)
		if k < 0 || k >= 1000 {
			t.Fatalf("key %d out of range", k)
		}
		counts[k]++
	}
	if counts[0] < 10*counts[500] {
		t.Fatalf("not skewed: hottest %d, middle %d", counts[0], counts[500])
	}
}

func TestReportFilesAreSelfContained(t *testing.T) {
	r := &report{Meta: runMeta{Machine: "test", Scale: "tiny", Started: time.Unix(0, 0)}}
	lat := loadResult{ops: 3, elapsed: time.Second, lat: []time.Duration{time.Microsecond, 2 * time.Microsecond, 3 * time.Microsecond}}
	r.Results = append(r.Results,
		newRow("hot-profile", "raw-primary", 1, lat),
		newRow("hot-profile", "hsdal", 1, loadResult{ops: 6, elapsed: time.Second, lat: lat.lat}),
		newRow("hot-profile", "hsdal", 4, loadResult{ops: 9, elapsed: time.Second, lat: lat.lat}),
	)
	d0 := newRow("paging-depth-0", "hsdal", 1, lat)
	d1 := newRow("paging-depth-1000", "hsdal", 1, lat)
	d1.Depth = 1000
	r.Results = append(r.Results, d0, d1)
	r.fillRatios()
	if got := r.Results[1].RatioVsRawPrimary; got != 2 {
		t.Fatalf("ratio = %v, want 2", got)
	}
	dir := t.TempDir()
	if err := r.writeFiles(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Results) != 5 {
		t.Fatalf("latest.json does not round-trip: %v", err)
	}
	html, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(html)
	if n := strings.Count(s, "<svg"); n < 3 {
		t.Errorf("want latency, concurrency and depth charts, got %d svg", n)
	}
	for _, bad := range []string{"<script", "src=\"http", "href=\"http"} {
		if strings.Contains(s, bad) {
			t.Errorf("report.html must open offline, found %q", bad)
		}
	}
}
