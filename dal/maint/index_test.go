package maint_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal/maint"
)

// waitDeadTuples polls the statistics until table shows at least n dead
// tuples (statistics are flushed asynchronously).
func waitDeadTuples(t *testing.T, ctx context.Context, table string, n int64) {
	t.Helper()
	app := mustConn(t, cluster.PrimaryDSN())
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var dead int64
		if err := app.QueryRow(ctx, `SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables
			WHERE relname = $1 AND schemaname = current_schema()`, table).Scan(&dead); err != nil {
			t.Fatal(err)
		}
		if dead >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("statistics show %d dead tuples in %s, want >= %d", dead, table, n)
		}
		<-tick.C
	}
}

func indexStats(t *testing.T, r *maint.Report, name string) maint.IndexStats {
	t.Helper()
	for _, s := range r.Indexes {
		if s.Index == name {
			return s
		}
	}
	t.Fatalf("index %s not in report", name)
	return maint.IndexStats{}
}

// TestVacuumAndReindexBloatedIndex deletes 90% of a table's rows, scattered,
// so every index page keeps a few entries: VACUUM cannot give the pages
// back, and the indexes are ~90% empty. The vacuum job must pick the table
// by its dead-tuple ratio, the report must see the bloat with the
// statistics estimate, and the reindex job must rebuild the indexes
// concurrently (measured with pgstattuple) while a reader keeps querying
// them without a single error.
func TestVacuumAndReindexBloatedIndex(t *testing.T) {
	ctx := testCtx(t)
	app := mustConn(t, cluster.PrimaryDSN())
	su := mustConn(t, cluster.Primary().SuperDSN())

	// Autovacuum would race the job for the dead tuples.
	mustExec(t, app, `ALTER TABLE room_events SET (autovacuum_enabled = false)`)
	t.Cleanup(func() {
		c := mustConn(t, cluster.PrimaryDSN())
		_, _ = c.Exec(context.Background(), `ALTER TABLE room_events RESET (autovacuum_enabled)`)
		_, _ = c.Exec(context.Background(), `DELETE FROM room_events WHERE room_id = '!bloat:hs'`)
		_, _ = c.Exec(context.Background(), `DELETE FROM rooms WHERE room_id = '!bloat:hs'`)
	})
	mustExec(t, app, `INSERT INTO rooms (room_id, creator) VALUES ('!bloat:hs', '@b:hs')`)
	mustExec(t, app, `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
		SELECT '$bloat-' || lpad(g::text, 6, '0'), '!bloat:hs', '@b:hs', 'm.room.message', '{}', g
		FROM generate_series(1, 30000) g`)
	mustExec(t, app, `ANALYZE room_events`)
	mustExec(t, app, `DELETE FROM room_events WHERE room_id = '!bloat:hs' AND origin_server_ts % 10 <> 0`)
	mustExec(t, app, `SELECT pg_stat_force_next_flush()`)
	waitDeadTuples(t, ctx, "room_events", 27000)

	pool := mustPool(t, cluster.PrimaryDSN(), 6)
	m := mustMaintainer(t, pool, maint.Config{Tables: []string{"room_events"}, ReindexMinSize: -1})

	res, err := m.Run(ctx, maint.JobVacuum)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Has(maint.ActionVacuumed, "room_events") {
		t.Fatalf("vacuum did not pick room_events: %+v", res.Actions)
	}
	if n := count(t, app, `SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'room_events'`); n > 1000 {
		t.Errorf("%d dead tuples left after VACUUM", n)
	}
	// Nothing left to vacuum: idempotent.
	if res, err = m.Run(ctx, maint.JobVacuum); err != nil || res.Has(maint.ActionVacuumed, "room_events") {
		t.Errorf("second vacuum run: %+v, %v", res.Actions, err)
	}

	rep, err := m.Report(ctx, maint.ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := indexStats(t, rep, "room_events_pkey")
	if before.Bloat == nil || before.BloatMethod != maint.BloatEstimate || *before.Bloat < 0.6 {
		t.Fatalf("estimate did not see the bloat of room_events_pkey: %+v", before)
	}

	// pgstattuple is a contrib extension only a superuser may create.
	mustExec(t, su, `CREATE EXTENSION IF NOT EXISTS pgstattuple`)
	exact, err := m.Report(ctx, maint.ReportOptions{ExactBloat: true})
	if err != nil {
		t.Fatal(err)
	}
	if s := indexStats(t, exact, "room_events_pkey"); s.BloatMethod != maint.BloatPgstattuple || *s.Bloat < 0.6 {
		t.Fatalf("pgstatindex did not see the bloat: %+v", s)
	}

	// A reader hammers the indexes being rebuilt.
	var (
		reads, readErrs atomic.Int64
		firstErr        atomic.Value
		stop            = make(chan struct{})
		wg              sync.WaitGroup
		started         = make(chan struct{})
	)
	wg.Go(func() {
		var once sync.Once
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			var n int64
			err := pool.QueryRow(ctx, `SELECT count(*) FROM room_events WHERE event_id = $1 OR
				(room_id = '!bloat:hs' AND type = 'm.room.message' AND stream_ordering > 0 AND origin_server_ts = $2)`,
				"$bloat-"+leftPad(i%30000+1), int64((i%3000+1)*10)).Scan(&n)
			if err != nil {
				readErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				reads.Add(1)
			}
			once.Do(func() { close(started) })
		}
	})
	<-started
	res, err = m.Run(ctx, maint.JobReindex)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for _, idx := range []string{"room_events_pkey", "room_events_room_type_stream_idx"} {
		if !res.Has(maint.ActionReindexed, idx) {
			t.Errorf("reindex did not rebuild %s: %+v", idx, res.Actions)
		}
	}
	if n := readErrs.Load(); n != 0 {
		t.Errorf("%d reads failed during REINDEX CONCURRENTLY (first: %v)", n, firstErr.Load())
	}
	if reads.Load() == 0 {
		t.Error("the reader never read")
	}
	t.Logf("%d reads, 0 errors, while REINDEX CONCURRENTLY ran %s: %+v", reads.Load(), res.Duration, res.Actions)
	after, err := m.Report(ctx, maint.ReportOptions{ExactBloat: true})
	if err != nil {
		t.Fatal(err)
	}
	s := indexStats(t, after, "room_events_pkey")
	if s.Bytes >= before.Bytes/2 || *s.Bloat > 0.4 || !s.Valid {
		t.Errorf("room_events_pkey after reindex: %d bytes (before %d), bloat %.2f, valid %v", s.Bytes, before.Bytes, *s.Bloat, s.Valid)
	}
	if n := count(t, app, `SELECT count(*) FROM pg_class WHERE relname LIKE 'room\_events%\_ccnew%'`); n != 0 {
		t.Errorf("%d leftover _ccnew indexes", n)
	}
	// Rebuilt indexes are lean: a second run has nothing to do.
	if res, err = m.Run(ctx, maint.JobReindex); err != nil || res.Has(maint.ActionReindexed, "room_events_pkey") {
		t.Errorf("second reindex run: %+v, %v", res.Actions, err)
	}
}

func leftPad(i int) string {
	s := "000000" + itoa(int64(i))
	return s[len(s)-6:]
}

func TestReportListsUnusedAndRedundantIndexes(t *testing.T) {
	ctx := testCtx(t)
	app := mustConn(t, cluster.PrimaryDSN())
	mustExec(t, app, `CREATE INDEX test_dup_rooms_creator ON rooms (creator)`)
	mustExec(t, app, `CREATE INDEX test_dup_rooms_creator2 ON rooms (creator)`)
	mustExec(t, app, `CREATE INDEX test_prefix_events_room ON room_events (room_id)`)
	t.Cleanup(func() {
		c := mustConn(t, cluster.PrimaryDSN())
		for _, n := range []string{"test_dup_rooms_creator", "test_dup_rooms_creator2", "test_prefix_events_room"} {
			_, _ = c.Exec(context.Background(), "DROP INDEX IF EXISTS "+n)
		}
	})

	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 2), maint.Config{})
	rep, err := m.Report(ctx, maint.ReportOptions{Orphans: true})
	if err != nil {
		t.Fatal(err)
	}
	red := map[string]maint.RedundantIndex{}
	for _, x := range rep.Redundant {
		red[x.Index] = x
	}
	if x, ok := red["test_dup_rooms_creator2"]; !ok || x.Kind != maint.RedundantDuplicate || x.CoveredBy != "test_dup_rooms_creator" {
		t.Errorf("duplicate not reported as such: %+v (all: %+v)", x, rep.Redundant)
	}
	if _, ok := red["test_dup_rooms_creator"]; ok {
		t.Error("both duplicates reported: one must be kept")
	}
	if x, ok := red["test_prefix_events_room"]; !ok || x.Kind != maint.RedundantPrefix {
		t.Errorf("prefix-covered index not reported: %+v (all: %+v)", x, rep.Redundant)
	}
	unused := map[string]bool{}
	for _, s := range rep.Unused {
		unused[s.Index] = true
	}
	if !unused["test_dup_rooms_creator"] {
		t.Errorf("never-scanned index not listed as unused: %v", unused)
	}
	if unused["rooms_pkey"] || unused["private_messages_session_idx"] {
		t.Errorf("constraint or foreign-key index listed as unused: %v", unused)
	}
	if s := indexStats(t, rep, "private_messages_session_idx"); s.ForeignKey != "private_messages_session_id_fkey" {
		t.Errorf("foreign-key support not recognised: %+v", s)
	}
	if len(rep.Databases) == 0 || rep.Databases[0].Age <= 0 {
		t.Errorf("wraparound ages missing: %+v", rep.Databases)
	}
	if len(rep.Slots) != 1 || !rep.Slots[0].Active || rep.Slots[0].RetainedBytes == nil {
		t.Errorf("replication slots: %+v", rep.Slots)
	}
	if len(rep.Replicas) != 1 || rep.Replicas[0].State != "streaming" {
		t.Errorf("replicas: %+v", rep.Replicas)
	}
	if len(rep.Orphans) == 0 {
		t.Error("orphan counts missing")
	}
	for _, tb := range rep.Tables {
		if tb.XIDAge <= 0 {
			t.Errorf("table %s has XID age %d", tb.Table, tb.XIDAge)
		}
	}

	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TABLES", "room_events", "UNUSED INDEXES", "REDUNDANT INDEXES",
		"test_dup_rooms_creator2", "TRANSACTION ID WRAPAROUND", "REPLICATION SLOTS", "REPLICAS", "streaming", "ORPHANS"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	if strings.Contains(text.String(), "hsdal:hsdal") {
		t.Error("text report shows credentials")
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back maint.Report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Tables) != len(rep.Tables) {
		t.Errorf("JSON round trip: %v", err)
	}
}
