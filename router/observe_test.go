package router_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/hsdal/hsdal/router"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

func TestMetricsAndTraces(t *testing.T) {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)

	cfg := configFor(t, cluster)
	cfg.MeterProvider, cfg.TracerProvider = mp, tp
	r := mustRouter(t, cfg)
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS obs (k int PRIMARY KEY, v bigint NOT NULL)")
	tok, err := setValue(ctx, r, "obs", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, r)
	if _, _, err := readValue(ctx, r, router.ReadYourWrites(tok), "obs", 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readValue(ctx, r, router.Strong(), "obs", 1); err != nil {
		t.Fatal(err)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	for _, name := range []string{
		"hsdal.router.queries", "hsdal.router.query.duration", "hsdal.router.pool.acquire.duration",
		"hsdal.router.pool.connections", "hsdal.router.replica.lag.bytes", "hsdal.router.replica.lag.seconds",
		"hsdal.router.breaker.state", "hsdal.router.node.role",
	} {
		if _, ok := got[name]; !ok {
			t.Errorf("metric %s not reported (have %v)", name, keys(got))
		}
	}
	// Queries are broken down by node, role, op and outcome.
	if sum, ok := got["hsdal.router.queries"].(metricdata.Sum[int64]); ok {
		seen := map[string]bool{}
		for _, dp := range sum.DataPoints {
			role, _ := dp.Attributes.Value(attribute.Key("role"))
			op, _ := dp.Attributes.Value(attribute.Key("op"))
			outcome, _ := dp.Attributes.Value(attribute.Key("outcome"))
			if _, ok := dp.Attributes.Value(attribute.Key("node")); !ok {
				t.Errorf("query data point without node: %v", dp.Attributes)
			}
			seen[fmt.Sprintf("%s/%s/%s", op.AsString(), role.AsString(), outcome.AsString())] = true
		}
		for _, want := range []string{"write/primary/ok", "read/primary/ok", "read/replica/ok"} {
			if !seen[want] {
				t.Errorf("no %s queries counted (have %v)", want, seen)
			}
		}
	} else {
		t.Errorf("hsdal.router.queries is %T", got["hsdal.router.queries"])
	}

	// Spans say which node was chosen and why.
	reasons := map[string]bool{}
	for _, s := range spans.Ended() {
		attrs := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes() {
			attrs[kv.Key] = kv.Value
		}
		switch s.Name() {
		case "router.read":
			if attrs["hsdal.node"].AsString() == "" {
				t.Errorf("read span without node: %v", s.Attributes())
			}
			reasons[attrs["hsdal.route_reason"].AsString()] = true
		case "router.write":
			if attrs["hsdal.token"].AsString() == "" {
				t.Errorf("write span without token position: %v", s.Attributes())
			}
		}
	}
	if !reasons["strong"] || !(reasons["fresh_replica"] || reasons["replica_rechecked"]) {
		t.Errorf("route reasons on spans: %v", reasons)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestReplicaWaitServesFromTheReplica(t *testing.T) {
	ctx := context.Background()
	cfg := configFor(t, cluster)
	cfg.ReplicaWait = 20 * time.Second
	r := mustRouter(t, cfg)
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS waitr (k int PRIMARY KEY, v bigint NOT NULL)")
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	names := standbyNames(cluster)
	pauseReplay(t, cluster, names...)
	tok, err := setValue(ctx, r, "waitr", 1, 99)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		v    int64
		info router.ReadInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		v, info, err := readValue(ctx, r, router.ReadYourWrites(tok), "waitr", 1)
		done <- result{v, info, err}
	}()
	// Once the read is waiting on a replica, let the replicas catch up.
	waitFor(t, 20*time.Second, "read waiting on a replica", func() bool {
		for _, n := range r.Status().Nodes {
			if n.Standby && n.InFlight > 0 {
				return true
			}
		}
		return false
	})
	for _, name := range names {
		if err := cluster.ResumeReplay(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	res := <-done
	if res.err != nil || res.v != 99 {
		t.Fatalf("read = %d, %v", res.v, res.err)
	}
	if res.info.Primary || !res.info.Covers(tok) {
		t.Fatalf("read served by %+v; want the replica it waited for", res.info)
	}
}

func TestMultiHostDSN(t *testing.T) {
	hosts := ""
	for i, n := range cluster.Nodes() {
		if i > 0 {
			hosts += ","
		}
		hosts += "127.0.0.1:" + strconv.Itoa(n.Port)
	}
	r := mustRouter(t, router.Config{
		PrimaryDSN: "postgres://hsdal:hsdal@" + hosts + "/hsdal?sslmode=disable&target_session_attrs=read-write",
		Logger:     quietLogger(t),
	})
	st := r.Status()
	if len(st.Nodes) != len(cluster.Nodes()) {
		t.Fatalf("%d nodes from a %d-host DSN", len(st.Nodes), len(cluster.Nodes()))
	}
	if st.Primary != nodeAddr(cluster.Primary()) {
		t.Fatalf("primary %q, want %q (discovered, whatever the host order)", st.Primary, nodeAddr(cluster.Primary()))
	}
	waitFor(t, 10*time.Second, "standbys in the read set", func() bool {
		serving := 0
		for _, n := range r.Status().Nodes {
			if n.Serving {
				serving++
			}
		}
		return serving == len(cluster.Nodes())-1
	})
}
