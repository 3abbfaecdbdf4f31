package slowquery_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hsdal/hsdal/internal/slowquery"
	"github.com/hsdal/hsdal/internal/testcluster"
)

var cluster *testcluster.Cluster

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: -1, NoRedis: true})
	if err != nil {
		fmt.Fprintf(os.Stderr, "slowquery tests need local PostgreSQL 15+ server binaries "+
			"(apt-get install postgresql-15): %v\n", err)
		return 1
	}
	defer func() { _ = c.Stop() }()
	cluster = c
	return m.Run()
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logLines) records(t *testing.T) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestTracerCountsAndRecordsSlowWithoutArgs(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	logs := &logLines{}
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tr, err := slowquery.New(slowquery.Config{
		Threshold:     100 * time.Millisecond,
		Logger:        slog.New(slog.NewJSONHandler(logs, nil)),
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		Now:           clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := tp.Tracer("test").Start(context.Background(), "request")

	run := func(sql string, args []any, d time.Duration, err error) {
		qctx := tr.TraceQueryStart(ctx, nil, pgx.TraceQueryStartData{SQL: sql, Args: args})
		clk.Advance(d)
		tr.TraceQueryEnd(qctx, nil, pgx.TraceQueryEndData{CommandTag: pgconn.NewCommandTag("SELECT 1"), Err: err})
	}
	run("SELECT * FROM users WHERE user_id = $1", []any{"@secret-arg:hs"}, 10*time.Millisecond, nil)
	run("SELECT * FROM users WHERE user_id = $1", []any{"@secret-arg:hs"}, 100*time.Millisecond, nil) // at the bound: not slow
	run("SELECT * FROM users WHERE displayname = 'Inline Secret' AND user_id = $1", []any{"@secret-arg:hs"}, 250*time.Millisecond, nil)
	run("INSERT INTO t VALUES ($1)", []any{"hunter2"}, 600*time.Millisecond,
		&pgconn.PgError{Code: "23505", Message: "duplicate", Detail: "Key (x)=(hunter2) already exists", ConstraintName: "t_pkey"})
	span.End()

	st := tr.Stats()
	if st.Count != 4 || st.Slow != 2 || st.Errors != 1 || st.Total != 960*time.Millisecond {
		t.Errorf("stats = %+v", st)
	}

	recs := logs.records(t)
	if len(recs) != 2 {
		t.Fatalf("%d log records, want 2 (slow only): %v", len(recs), recs)
	}
	if recs[0]["sql"] != "SELECT * FROM users WHERE displayname = ? AND user_id = $1" || recs[0]["level"] != "WARN" {
		t.Errorf("first slow record = %v", recs[0])
	}
	if recs[1]["error"] != "SQLSTATE 23505 (constraint t_pkey)" || recs[1]["operation"] != "INSERT" {
		t.Errorf("second slow record = %v", recs[1])
	}
	all := logs.buf.String()
	for _, leak := range []string{"secret-arg", "Inline Secret", "hunter2"} {
		if strings.Contains(all, leak) {
			t.Errorf("log leaks %q: %s", leak, all)
		}
	}

	ended := spans.Ended()
	if len(ended) != 1 || len(ended[0].Events()) != 2 || ended[0].Events()[0].Name != "db.slow_query" {
		t.Fatalf("span events = %+v", ended)
	}
	for _, ev := range ended[0].Events() {
		for _, a := range ev.Attributes {
			if strings.Contains(a.Value.Emit(), "hunter2") || strings.Contains(a.Value.Emit(), "secret") {
				t.Errorf("span event leaks a value: %v", a)
			}
		}
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var slow, hist int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "hsdal.db.query.slow" {
					for _, dp := range d.DataPoints {
						slow += dp.Value
					}
				}
			case metricdata.Histogram[float64]:
				if m.Name == "hsdal.db.query.duration" {
					for _, dp := range d.DataPoints {
						hist += int64(dp.Count)
					}
				}
			}
		}
	}
	if slow != 2 || hist != 4 {
		t.Errorf("metrics: slow %d (want 2), duration count %d (want 4)", slow, hist)
	}
}

func TestTracerWithRealPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logs := &logLines{}
	tr, err := slowquery.New(slowquery.Config{Threshold: 20 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(cluster.PrimaryDSN())
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	if _, err := pool.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	// pg_sleep(0.1) always takes longer than the 20ms threshold.
	var s string
	if err := pool.QueryRow(ctx, "SELECT $1::text FROM pg_sleep(0.1) WHERE 'literal-secret' <> ''", "arg-secret").Scan(&s); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue("SELECT pg_sleep(0.1)")
	b.Queue("SELECT 2")
	if err := pool.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, "SELECT 1/0")
	if err == nil {
		t.Fatal("division by zero succeeded")
	}

	st := tr.Stats()
	if st.Slow != 2 || st.Count < 5 || st.Errors != 1 {
		t.Errorf("stats = %+v, want 2 slow of >= 5, 1 error", st)
	}
	recs := logs.records(t)
	if len(recs) != 2 {
		t.Fatalf("slow records = %v", recs)
	}
	if recs[0]["sql"] != "SELECT $1::text FROM pg_sleep(?) WHERE ? <> ?" {
		t.Errorf("sql = %v", recs[0]["sql"])
	}
	if node, _ := recs[0]["node"].(string); !strings.HasPrefix(node, "127.0.0.1:") {
		t.Errorf("node = %v", recs[0]["node"])
	}
	if strings.Contains(logs.buf.String(), "secret") || strings.Contains(logs.buf.String(), "hsdal:hsdal") {
		t.Errorf("log leaks: %s", logs.buf.String())
	}
}
