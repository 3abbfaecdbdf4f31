package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHarnessEndToEnd runs the whole harness at tiny scale on a local cluster
// it starts itself, as `go run ./bench` does, and checks that it wrote a
// complete, valid report. It asserts correctness (no errors, no
// read-your-writes violation for hsdal), never a timing.
func TestHarnessEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"-scale", "tiny", "-duration", "200ms", "-rounds", "1", "-concurrency", "4",
		"-sweep", "1,2", "-out", out}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("harness failed: %v\nstderr:\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("latest.json is not valid: %v", err)
	}
	if rep.Meta.PostgreSQL == "" || rep.Meta.Go == "" || rep.Meta.Scale == "" {
		t.Errorf("run metadata incomplete: %+v", rep.Meta)
	}
	seen := map[string]bool{}
	for _, row := range rep.Results {
		seen[row.Scenario+"/"+row.Variant] = true
		if row.Ops == 0 {
			t.Errorf("%s/%s measured nothing (%s)", row.Scenario, row.Variant, row.Note)
		}
		if row.Errors > 0 {
			t.Errorf("%s/%s: %d errors (%s)", row.Scenario, row.Variant, row.Errors, row.Note)
		}
		if strings.HasPrefix(row.Variant, "hsdal") && row.RYWViolations > 0 {
			t.Errorf("%s/%s: %d read-your-writes violations", row.Scenario, row.Variant, row.RYWViolations)
		}
		if (row.Variant == "hsdal-nocache" || row.Variant == "raw-primary") && row.RatioVsRawPrimary == 0 && row.Scenario != "routing-replica" {
			t.Errorf("%s/%s: no ratio to raw-primary", row.Scenario, row.Variant)
		}
	}
	for _, want := range []string{"hot-token/raw-primary", "hot-token/hsdal-nocache", "hot-members/hsdal-nocache",
		"paging-depth-0/offset", "paging-depth-1000/hsdal-nocache", "mix/hsdal-nocache", "routing/hsdal-nocache",
		"routing-replica/hsdal-nocache-1r"} {
		if !seen[want] {
			t.Errorf("report has no %s row", want)
		}
	}
	if !strings.Contains(stdout.String(), "targets:") || !strings.Contains(stdout.String(), "ops/s") {
		t.Errorf("stdout has no report table:\n%s", stdout.String())
	}
	html, err := os.ReadFile(filepath.Join(out, "report.html"))
	if err != nil || !bytes.Contains(html, []byte("<svg")) {
		t.Errorf("report.html missing or without charts: %v", err)
	}
}
