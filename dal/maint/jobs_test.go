package maint_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/hsdal/hsdal/dal/maint"
)

func TestExpiredTokensDeletedValidKept(t *testing.T) {
	ctx := testCtx(t)
	app := mustConn(t, cluster.PrimaryDSN())
	now := time.Date(2031, 5, 1, 12, 0, 0, 0, time.UTC)
	past, future := ms(now.Add(-time.Hour)), ms(now.Add(time.Hour))

	mustExec(t, app, `INSERT INTO users (user_id) VALUES ('@tok:hs')`)
	mustExec(t, app, `INSERT INTO devices (user_id, device_id) VALUES ('@tok:hs', 'D1')`)
	insertRefresh := func(name string, expires *int64) int64 {
		var id int64
		if err := app.QueryRow(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, expires_ts)
			VALUES ($1, '@tok:hs', 'D1', $2) RETURNING id`, hash(name), expires).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	insertAccess := func(name string, expires *int64, refresh *int64) int64 {
		var id int64
		if err := app.QueryRow(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, expires_ts, refresh_token_id)
			VALUES ($1, '@tok:hs', 'D1', $2, $3) RETURNING id`, hash(name), expires, refresh).Scan(&id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	rExpired := insertRefresh("r-expired", &past)
	rExpiredInUse := insertRefresh("r-expired-in-use", &past) // a live access token was minted with it
	rValid := insertRefresh("r-valid", &future)
	rForever := insertRefresh("r-forever", nil)
	var expiredAccess []int64
	for i := range 7 { // more than one batch of 3
		expiredAccess = append(expiredAccess, insertAccess("a-expired-"+string(rune('a'+i)), &past, &rExpired))
	}
	aValid := insertAccess("a-valid", &future, &rExpiredInUse)
	aForever := insertAccess("a-forever", nil, nil)
	aJustExpired := insertAccess("a-just-expired", ptr(ms(now)-1), nil)
	aExpiresNow := insertAccess("a-expires-now", ptr(ms(now)), nil) // not before now: kept

	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 4), maint.Config{
		BatchSize:      3,
		Now:            func() time.Time { return now },
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		MeterProvider:  sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	res, err := m.Run(ctx, maint.JobExpiredTokens)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != maint.Done {
		t.Fatalf("outcome %s", res.Outcome)
	}
	if got := res.Rows(maint.ActionDeleted, "access_tokens"); got < 8 {
		t.Errorf("deleted %d access tokens, want at least the 8 expired ones", got)
	}
	if got := res.Rows(maint.ActionDeleted, "refresh_tokens"); got < 1 {
		t.Errorf("deleted %d refresh tokens, want at least 1", got)
	}
	for _, id := range append(expiredAccess, aJustExpired) {
		if n := count(t, app, `SELECT count(*) FROM access_tokens WHERE id = $1`, id); n != 0 {
			t.Errorf("expired access token %d kept", id)
		}
	}
	for _, id := range []int64{aValid, aForever, aExpiresNow} {
		if n := count(t, app, `SELECT count(*) FROM access_tokens WHERE id = $1`, id); n != 1 {
			t.Errorf("valid access token %d deleted", id)
		}
	}
	if n := count(t, app, `SELECT count(*) FROM refresh_tokens WHERE id = $1`, rExpired); n != 0 {
		t.Error("expired refresh token kept")
	}
	for _, id := range []int64{rExpiredInUse, rValid, rForever} {
		if n := count(t, app, `SELECT count(*) FROM refresh_tokens WHERE id = $1`, id); n != 1 {
			t.Errorf("refresh token %d deleted (valid, or backing a live access token)", id)
		}
	}

	// Idempotent: a second run finds nothing.
	res, err = m.Run(ctx, maint.JobExpiredTokens)
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Rows(maint.ActionDeleted, ""); n != 0 {
		t.Errorf("second run deleted %d rows", n)
	}

	// One span per run, with the outcome.
	ended := spans.Ended()
	if len(ended) != 2 || ended[0].Name() != "maint.expired_tokens" {
		t.Fatalf("spans = %d (%v), want 2 maint.expired_tokens", len(ended), ended)
	}
	if !hasAttr(ended[0].Attributes(), "maint.outcome", "done") {
		t.Errorf("span attributes %v lack maint.outcome=done", ended[0].Attributes())
	}
	// Metrics: two done runs, and the deleted rows.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	if got := sumInt(rm, "hsdal.maint.job.runs", "outcome", "done"); got != 2 {
		t.Errorf("hsdal.maint.job.runs{outcome=done} = %d, want 2", got)
	}
	if got := sumInt(rm, "hsdal.maint.rows", "table", "access_tokens"); got < 8 {
		t.Errorf("hsdal.maint.rows{table=access_tokens} = %d, want >= 8", got)
	}

	mustExec(t, app, `DELETE FROM users WHERE user_id = '@tok:hs'`)
}

func TestOrphansReportedAndRepaired(t *testing.T) {
	ctx := testCtx(t)
	app := mustConn(t, cluster.PrimaryDSN())
	su := mustConn(t, cluster.Primary().SuperDSN())

	mustExec(t, app, `INSERT INTO users (user_id) VALUES ('@orph:hs'), ('@orph2:hs')`)
	mustExec(t, app, `INSERT INTO devices (user_id, device_id) VALUES ('@orph:hs', 'OK')`)
	var session int64
	if err := app.QueryRow(ctx, `INSERT INTO private_sessions (user_low, user_high) VALUES ('@orph2:hs', '@orph:hs')
		RETURNING id`).Scan(&session); err != nil {
		t.Fatal(err)
	}

	// Bypass foreign keys the way a careless restore would.
	mustExec(t, su, `SET session_replication_role = replica`)
	// CASCADE children of missing parents: deleted.
	mustExec(t, su, `INSERT INTO devices (user_id, device_id) VALUES ('@ghost:hs', 'G1'), ('@ghost:hs', 'G2')`)
	mustExec(t, su, `INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, '@ghost:hs', 'G1')`, hash("ghost-a"))
	mustExec(t, su, `INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES ($1, '@orph:hs', 'NO-SUCH-DEVICE')`, hash("orph-a"))
	mustExec(t, su, `INSERT INTO refresh_tokens (token_hash, user_id, device_id) VALUES ($1, '@orph:hs', 'NO-SUCH-DEVICE')`, hash("orph-r"))
	mustExec(t, su, `INSERT INTO private_session_read_markers (session_id, user_id, last_read_ts, last_read_id)
		VALUES (987654321, '@orph:hs', 0, 0)`)
	// SET NULL reference to a missing user: cleared, message kept.
	var msgKept int64
	if err := su.QueryRow(ctx, `INSERT INTO private_messages (session_id, sender_id, content)
		VALUES ($1, '@vanished:hs', '{}') RETURNING id`, session).Scan(&msgKept); err != nil {
		t.Fatal(err)
	}
	// NO ACTION content of missing parents: only reported.
	mustExec(t, su, `INSERT INTO private_messages (session_id, sender_id, content) VALUES (987654321, '@orph:hs', '{}')`)
	mustExec(t, su, `INSERT INTO room_memberships (room_id, user_id, membership, sender)
		VALUES ('!gone:hs', '@orph:hs', 'join', '@orph:hs')`)
	mustExec(t, su, `RESET session_replication_role`)

	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 4), maint.Config{BatchSize: 1})
	before, err := m.Orphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		rows   int64
		repair maint.Repair
	}{
		"devices_user_id_fkey":                         {2, maint.RepairDelete},
		"access_tokens_user_id_fkey":                   {1, maint.RepairDelete},
		"access_tokens_device_fkey":                    {1, maint.RepairDelete},
		"refresh_tokens_device_fkey":                   {1, maint.RepairDelete},
		"refresh_tokens_user_id_fkey":                  {0, maint.RepairDelete},
		"private_session_read_markers_session_id_fkey": {1, maint.RepairDelete},
		"private_messages_sender_id_fkey":              {1, maint.RepairSetNull},
		"private_messages_session_id_fkey":             {1, maint.RepairReport},
		"room_memberships_room_id_fkey":                {1, maint.RepairReport},
		"room_events_room_id_fkey":                     {0, maint.RepairReport},
		"private_sessions_user_low_fkey":               {0, maint.RepairSetNull},
	}
	got := map[string]maint.OrphanCount{}
	for _, o := range before {
		got[o.Constraint] = o
	}
	for name, w := range want {
		o, ok := got[name]
		if !ok {
			t.Errorf("foreign key %s not checked", name)
			continue
		}
		if o.Rows != w.rows || o.Repair != w.repair {
			t.Errorf("%s: %d orphans, repair %s; want %d, %s", name, o.Rows, o.Repair, w.rows, w.repair)
		}
	}

	res, err := m.Run(ctx, maint.JobOrphans)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Has(maint.ActionReported, "room_memberships_room_id_fkey") ||
		!res.Has(maint.ActionReported, "private_messages_session_id_fkey") {
		t.Errorf("report-only orphans not reported: %+v", res.Actions)
	}
	if n := res.Rows(maint.ActionSetNull, "private_messages"); n != 1 {
		t.Errorf("set_null private_messages = %d, want 1", n)
	}
	if n := count(t, app, `SELECT count(*) FROM devices WHERE user_id = '@ghost:hs'`); n != 0 {
		t.Errorf("%d orphan devices left", n)
	}
	if n := count(t, app, `SELECT count(*) FROM access_tokens WHERE user_id = '@ghost:hs'`); n != 0 {
		t.Errorf("%d orphan access tokens left", n)
	}
	if n := count(t, app, `SELECT count(*) FROM refresh_tokens WHERE device_id = 'NO-SUCH-DEVICE'`); n != 0 {
		t.Errorf("%d orphan refresh tokens left", n)
	}
	if n := count(t, app, `SELECT count(*) FROM access_tokens WHERE device_id = 'NO-SUCH-DEVICE'`); n != 0 {
		t.Errorf("%d access tokens of a missing device left", n)
	}
	if n := count(t, app, `SELECT count(*) FROM private_session_read_markers WHERE session_id = 987654321`); n != 0 {
		t.Errorf("%d orphan read markers left", n)
	}
	if n := count(t, app, `SELECT count(*) FROM private_messages WHERE id = $1 AND sender_id IS NULL`, msgKept); n != 1 {
		t.Error("message with a vanished sender should be kept with sender_id NULL")
	}
	if n := count(t, app, `SELECT count(*) FROM room_memberships WHERE room_id = '!gone:hs'`); n != 1 {
		t.Error("membership of a missing room must be left for an operator")
	}
	if n := count(t, app, `SELECT count(*) FROM devices WHERE user_id = '@orph:hs'`); n != 1 {
		t.Error("a healthy device was touched")
	}

	after, err := m.Orphans(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range after {
		if o.Rows != 0 && o.Repair != maint.RepairReport {
			t.Errorf("after the job, %s still has %d repairable orphans", o.Constraint, o.Rows)
		}
	}

	// Leave the database clean for the other tests.
	mustExec(t, su, `DELETE FROM room_memberships WHERE room_id = '!gone:hs'`)
	mustExec(t, su, `DELETE FROM private_messages WHERE session_id IN ($1, 987654321)`, session)
	mustExec(t, su, `DELETE FROM private_sessions WHERE id = $1`, session)
	mustExec(t, su, `DELETE FROM users WHERE user_id IN ('@orph:hs', '@orph2:hs')`)
}

func TestPurgeSoftDeleted(t *testing.T) {
	ctx := testCtx(t)
	app := mustConn(t, cluster.PrimaryDSN())
	now := time.Now()
	old, recent := ms(now.Add(-40*24*time.Hour)), ms(now.Add(-24*time.Hour))

	mustExec(t, app, `INSERT INTO users (user_id, displayname, avatar_url, password_hash, deleted_at) VALUES
		('@live:hs', 'Live', NULL, NULL, NULL),
		('@gone-old:hs', 'Old Name', 'mxc://hs/old', '$argon2id$old', $1),
		('@gone-new:hs', 'New Name', NULL, NULL, $2)`, old, recent)
	mustExec(t, app, `INSERT INTO devices (user_id, device_id, deleted_at) VALUES
		('@live:hs', 'OLD', $1), ('@live:hs', 'NEW', $2), ('@live:hs', 'LIVE', NULL)`, old, recent)
	mustExec(t, app, `INSERT INTO access_tokens (token_hash, user_id, device_id, deleted_at) VALUES
		($1, '@live:hs', 'OLD', NULL),   -- goes with its purged device
		($2, '@live:hs', 'LIVE', $4),    -- revoked long ago
		($3, '@live:hs', 'LIVE', $5)     -- revoked recently`,
		hash("p-dev-old"), hash("p-revoked-old"), hash("p-revoked-new"), old, recent)

	// Rooms: one deleted long ago with content, one deleted recently, one live.
	mustExec(t, app, `INSERT INTO rooms (room_id, creator, deleted_at) VALUES
		('!old:hs', '@live:hs', $1), ('!new:hs', '@live:hs', $2), ('!live:hs', '@live:hs', NULL)`, old, recent)
	mustExec(t, app, `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts, deleted_at)
		SELECT '$old-' || g, '!old:hs', '@live:hs', 'm.room.message', '{}', 0, NULL FROM generate_series(1, 5) g`)
	mustExec(t, app, `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts, deleted_at) VALUES
		('$new-1', '!new:hs', '@live:hs', 'm.room.message', '{}', 0, NULL),
		('$live-hidden-old', '!live:hs', '@live:hs', 'm.room.message', '{}', 0, $1),
		('$live-hidden-new', '!live:hs', '@live:hs', 'm.room.message', '{}', 0, $2),
		('$live-visible', '!live:hs', '@live:hs', 'm.room.message', '{}', 0, NULL)`, old, recent)
	mustExec(t, app, `INSERT INTO room_memberships (room_id, user_id, membership, sender) VALUES
		('!old:hs', '@live:hs', 'join', '@live:hs'), ('!old:hs', '@remote:other', 'join', '@remote:other'),
		('!live:hs', '@live:hs', 'join', '@live:hs')`)
	mustExec(t, app, `INSERT INTO room_membership_history (room_id, user_id, membership, sender) VALUES
		('!old:hs', '@live:hs', 'join', '@live:hs')`)
	mustExec(t, app, `INSERT INTO room_aliases (room_alias, room_id, creator, deleted_at) VALUES
		('#old:hs', '!old:hs', '@live:hs', NULL),
		('#hidden-old:hs', '!live:hs', '@live:hs', $1)`, old)

	// Private sessions: one deleted long ago with messages and a marker, one live.
	var sOld, sLive int64
	if err := app.QueryRow(ctx, `INSERT INTO private_sessions (user_low, user_high, deleted_at)
		VALUES ('@gone-new:hs', '@live:hs', $1) RETURNING id`, old).Scan(&sOld); err != nil {
		t.Fatal(err)
	}
	if err := app.QueryRow(ctx, `INSERT INTO private_sessions (user_low, user_high)
		VALUES ('@gone-old:hs', '@live:hs') RETURNING id`).Scan(&sLive); err != nil {
		t.Fatal(err)
	}
	mustExec(t, app, `INSERT INTO private_messages (session_id, sender_id, content, deleted_at)
		SELECT $1, '@live:hs', '{}', NULL FROM generate_series(1, 4)`, sOld)
	mustExec(t, app, `INSERT INTO private_session_read_markers (session_id, user_id, last_read_ts, last_read_id)
		VALUES ($1, '@live:hs', 0, 0)`, sOld)
	var mOld, mNew, mLive int64
	for _, x := range []struct {
		dst *int64
		del *int64
	}{{&mOld, &old}, {&mNew, &recent}, {&mLive, nil}} {
		if err := app.QueryRow(ctx, `INSERT INTO private_messages (session_id, sender_id, content, deleted_at)
			VALUES ($1, '@live:hs', '{}', $2) RETURNING id`, sLive, x.del).Scan(x.dst); err != nil {
			t.Fatal(err)
		}
	}

	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 4), maint.Config{
		BatchSize: 2,
		Retention: map[string]time.Duration{"room_aliases": -1}, // never purge aliases
	})
	res, err := m.Run(ctx, maint.JobPurgeDeleted)
	if err != nil {
		t.Fatal(err)
	}

	checks := []struct {
		what string
		sql  string
		args []any
		want int64
	}{
		{"old device purged", `SELECT count(*) FROM devices WHERE user_id = '@live:hs' AND device_id = 'OLD'`, nil, 0},
		{"its token cascaded", `SELECT count(*) FROM access_tokens WHERE token_hash = $1`, []any{hash("p-dev-old")}, 0},
		{"recent device kept", `SELECT count(*) FROM devices WHERE user_id = '@live:hs' AND device_id = 'NEW'`, nil, 1},
		{"live device kept", `SELECT count(*) FROM devices WHERE user_id = '@live:hs' AND device_id = 'LIVE'`, nil, 1},
		{"old revoked token purged", `SELECT count(*) FROM access_tokens WHERE token_hash = $1`, []any{hash("p-revoked-old")}, 0},
		{"recent revoked token kept", `SELECT count(*) FROM access_tokens WHERE token_hash = $1`, []any{hash("p-revoked-new")}, 1},
		{"old room purged", `SELECT count(*) FROM rooms WHERE room_id = '!old:hs'`, nil, 0},
		{"old room's events purged", `SELECT count(*) FROM room_events WHERE room_id = '!old:hs'`, nil, 0},
		{"old room's memberships purged", `SELECT count(*) FROM room_memberships WHERE room_id = '!old:hs'`, nil, 0},
		{"old room's history purged", `SELECT count(*) FROM room_membership_history WHERE room_id = '!old:hs'`, nil, 0},
		{"old room's alias purged", `SELECT count(*) FROM room_aliases WHERE room_id = '!old:hs'`, nil, 0},
		{"recent room kept", `SELECT count(*) FROM rooms WHERE room_id = '!new:hs'`, nil, 1},
		{"recent room's events kept", `SELECT count(*) FROM room_events WHERE room_id = '!new:hs'`, nil, 1},
		{"old hidden event purged", `SELECT count(*) FROM room_events WHERE event_id = '$live-hidden-old'`, nil, 0},
		{"recent hidden event kept", `SELECT count(*) FROM room_events WHERE event_id = '$live-hidden-new'`, nil, 1},
		{"visible event kept", `SELECT count(*) FROM room_events WHERE event_id = '$live-visible'`, nil, 1},
		{"live room membership kept", `SELECT count(*) FROM room_memberships WHERE room_id = '!live:hs'`, nil, 1},
		{"alias with retention disabled kept", `SELECT count(*) FROM room_aliases WHERE room_alias = '#hidden-old:hs'`, nil, 1},
		{"old session purged", `SELECT count(*) FROM private_sessions WHERE id = $1`, []any{sOld}, 0},
		{"old session's messages purged", `SELECT count(*) FROM private_messages WHERE session_id = $1`, []any{sOld}, 0},
		{"old session's marker cascaded", `SELECT count(*) FROM private_session_read_markers WHERE session_id = $1`, []any{sOld}, 0},
		{"old hidden message purged", `SELECT count(*) FROM private_messages WHERE id = $1`, []any{mOld}, 0},
		{"recent hidden message kept", `SELECT count(*) FROM private_messages WHERE id = $1`, []any{mNew}, 1},
		{"live message kept", `SELECT count(*) FROM private_messages WHERE id = $1`, []any{mLive}, 1},
		{"old user row kept (ID reserved)", `SELECT count(*) FROM users WHERE user_id = '@gone-old:hs'`, nil, 1},
		{"old user scrubbed", `SELECT count(*) FROM users WHERE user_id = '@gone-old:hs' AND displayname IS NULL AND avatar_url IS NULL AND password_hash IS NULL`, nil, 1},
		{"recent user not scrubbed", `SELECT count(*) FROM users WHERE user_id = '@gone-new:hs' AND displayname = 'New Name'`, nil, 1},
	}
	for _, c := range checks {
		if got := count(t, app, c.sql, c.args...); got != c.want {
			t.Errorf("%s: count = %d, want %d", c.what, got, c.want)
		}
	}
	if n := res.Rows(maint.ActionDeleted, "room_events"); n < 6 {
		t.Errorf("result counts %d deleted room_events, want >= 6 (5 of the old room + 1 hidden)", n)
	}
	if n := res.Rows(maint.ActionScrubbed, "users"); n < 1 {
		t.Errorf("result counts %d scrubbed users", n)
	}
	if res.Has(maint.ActionDeleted, "room_aliases") && res.Rows(maint.ActionDeleted, "room_aliases") != 1 {
		t.Errorf("room_aliases deleted %d, want only the old room's alias", res.Rows(maint.ActionDeleted, "room_aliases"))
	}

	// Idempotent.
	res, err = m.Run(ctx, maint.JobPurgeDeleted)
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Rows(maint.ActionDeleted, "") + res.Rows(maint.ActionScrubbed, ""); n != 0 {
		t.Errorf("second purge changed %d rows: %+v", n, res.Actions)
	}

	// Clean up for the other tests.
	for _, sql := range []string{
		`DELETE FROM private_messages WHERE session_id = ` + itoa(sLive),
		`DELETE FROM private_sessions WHERE id = ` + itoa(sLive),
		`DELETE FROM room_events WHERE room_id IN ('!new:hs', '!live:hs')`,
		`DELETE FROM room_memberships WHERE room_id IN ('!new:hs', '!live:hs')`,
		`DELETE FROM room_aliases WHERE room_id IN ('!new:hs', '!live:hs')`,
		`DELETE FROM rooms WHERE room_id IN ('!new:hs', '!live:hs')`,
		`DELETE FROM users WHERE user_id IN ('@live:hs', '@gone-old:hs', '@gone-new:hs')`,
	} {
		mustExec(t, app, sql)
	}
}

func TestUnknownJob(t *testing.T) {
	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 2), maint.Config{})
	if _, err := m.Run(testCtx(t), "defrag"); !errors.Is(err, maint.ErrUnknownJob) {
		t.Errorf("Run(defrag) = %v, want ErrUnknownJob", err)
	}
	if _, err := m.RunAll(testCtx(t), maint.JobVacuum, "defrag"); !errors.Is(err, maint.ErrUnknownJob) {
		t.Errorf("RunAll(vacuum, defrag) = %v, want ErrUnknownJob", err)
	}
}

func TestRefusesStandby(t *testing.T) {
	ctx := testCtx(t)
	replica := mustPool(t, cluster.ReplicaDSNs()[0], 2)
	m := mustMaintainer(t, replica, maint.Config{})
	for _, job := range maint.Jobs() {
		_, err := m.Run(ctx, job)
		if !errors.Is(err, maint.ErrStandby) {
			t.Errorf("Run(%s) on a standby = %v, want ErrStandby", job, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "standby") || !strings.Contains(msg, "primary") ||
			strings.Contains(msg, "hsdal:hsdal") {
			t.Errorf("error message not clear (or leaks credentials): %q", msg)
		}
	}
	if _, err := m.Report(ctx, maint.ReportOptions{}); !errors.Is(err, maint.ErrStandby) {
		t.Errorf("Report on a standby = %v, want ErrStandby", err)
	}
	if _, err := m.Orphans(ctx); !errors.Is(err, maint.ErrStandby) {
		t.Errorf("Orphans on a standby = %v, want ErrStandby", err)
	}
}

func ptr[T any](v T) *T { return &v }

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

func hasAttr(attrs []attribute.KeyValue, key, value string) bool {
	for _, a := range attrs {
		if string(a.Key) == key && a.Value.Emit() == value {
			return true
		}
	}
	return false
}

// sumInt sums an Int64 counter's data points whose attribute key has value.
func sumInt(rm metricdata.ResourceMetrics, name, key, value string) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			sum, ok := mt.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				if v, ok := dp.Attributes.Value(attribute.Key(key)); ok && v.Emit() == value {
					n += dp.Value
				}
			}
		}
	}
	return n
}
