package dal_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hsdal/hsdal/dal"
)

// SQLSTATEs the schema's constraints raise.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
	checkViolation      = "23514"
)

// migratedDB returns a connection to a fresh, migrated database.
func migratedDB(tb testing.TB) *pgx.Conn {
	tb.Helper()
	_, dsn := freshDB(tb)
	if err := dal.Migrate(testCtx(tb), dsn); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return mustConnect(tb, dsn)
}

// mustExec runs statements that must succeed.
func mustExec(tb testing.TB, conn *pgx.Conn, sql string, args ...any) {
	tb.Helper()
	if _, err := conn.Exec(testCtx(tb), sql, args...); err != nil {
		tb.Fatalf("%s: %v", firstLine(sql), err)
	}
}

// execState runs sql and returns the SQLSTATE of its failure ("" on success).
func execState(tb testing.TB, conn *pgx.Conn, sql string, args ...any) string {
	tb.Helper()
	_, err := conn.Exec(testCtx(tb), sql, args...)
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		tb.Fatalf("%s: %v", firstLine(sql), err)
	}
	return pgErr.Code
}

func mustCount(tb testing.TB, conn *pgx.Conn, sql string, args ...any) int {
	tb.Helper()
	var n int
	if err := conn.QueryRow(testCtx(tb), sql, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", firstLine(sql), err)
	}
	return n
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// seed inserts a small world: users @alice/@bob/@carol, alice's devices A1/A2 with access
// and refresh tokens, a room with an alias, memberships and events, and a private session
// alice–bob with messages and read markers.
const seedSQL = `
INSERT INTO users (user_id) VALUES ('@alice:hs'), ('@bob:hs'), ('@carol:hs');
INSERT INTO devices (user_id, device_id) VALUES ('@alice:hs', 'A1'), ('@alice:hs', 'A2'), ('@bob:hs', 'B1');
INSERT INTO refresh_tokens (token_hash, user_id, device_id) VALUES (sha256('r-a1'), '@alice:hs', 'A1');
INSERT INTO access_tokens (token_hash, user_id, device_id, refresh_token_id)
  VALUES (sha256('t-a1'), '@alice:hs', 'A1', (SELECT id FROM refresh_tokens WHERE token_hash = sha256('r-a1'))),
         (sha256('t-a2'), '@alice:hs', 'A2', NULL),
         (sha256('t-b1'), '@bob:hs', 'B1', NULL),
         (sha256('t-admin'), '@alice:hs', NULL, NULL);
INSERT INTO rooms (room_id, creator) VALUES ('!r1:hs', '@alice:hs');
INSERT INTO room_aliases (room_alias, room_id, creator) VALUES ('#r1:hs', '!r1:hs', '@alice:hs');
INSERT INTO room_memberships (room_id, user_id, membership, sender)
  VALUES ('!r1:hs', '@alice:hs', 'join', '@alice:hs'), ('!r1:hs', '@remote:other', 'join', '@remote:other');
INSERT INTO room_membership_history (room_id, user_id, membership, sender)
  VALUES ('!r1:hs', '@alice:hs', 'join', '@alice:hs');
INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
  VALUES ('$e1', '!r1:hs', '@alice:hs', 'm.room.message', '{"body":"hi"}', 1),
         ('$e2', '!r1:hs', '@remote:other', 'm.room.message', '{"body":"yo"}', 2);
INSERT INTO private_sessions (user_low, user_high) VALUES ('@alice:hs', '@bob:hs');
INSERT INTO private_messages (session_id, sender_id, content)
  SELECT id, s, '{"body":"x"}' FROM private_sessions, unnest(ARRAY['@alice:hs', '@bob:hs']) AS s;
INSERT INTO private_session_read_markers (session_id, user_id, last_read_ts, last_read_id)
  SELECT session_id, '@bob:hs', created_ts, id FROM private_messages ORDER BY id LIMIT 1;
`

func TestForeignKeyActions(t *testing.T) {
	t.Run("user hard delete removes credentials and keeps content", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		mustExec(t, conn, `DELETE FROM users WHERE user_id = '@alice:hs'`)

		gone := []string{
			`SELECT count(*) FROM devices WHERE user_id = '@alice:hs'`,
			`SELECT count(*) FROM access_tokens WHERE user_id = '@alice:hs'`,
			`SELECT count(*) FROM refresh_tokens WHERE user_id = '@alice:hs'`,
		}
		for _, q := range gone {
			if n := mustCount(t, conn, q); n != 0 {
				t.Errorf("%s = %d, want 0 (CASCADE)", q, n)
			}
		}
		kept := []struct {
			q    string
			want int
		}{
			{`SELECT count(*) FROM access_tokens WHERE user_id = '@bob:hs'`, 1},
			{`SELECT count(*) FROM private_messages WHERE sender_id IS NULL`, 1},
			{`SELECT count(*) FROM private_messages WHERE sender_id = '@bob:hs'`, 1},
			{`SELECT count(*) FROM private_sessions WHERE user_low IS NULL AND user_high = '@bob:hs'`, 1},
			{`SELECT count(*) FROM room_memberships WHERE user_id = '@alice:hs'`, 1},
			{`SELECT count(*) FROM room_events WHERE sender = '@alice:hs'`, 1},
		}
		for _, k := range kept {
			if n := mustCount(t, conn, k.q); n != k.want {
				t.Errorf("%s = %d, want %d", k.q, n, k.want)
			}
		}
	})

	t.Run("device hard delete removes only its tokens", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		mustExec(t, conn, `DELETE FROM devices WHERE user_id = '@alice:hs' AND device_id = 'A1'`)
		if n := mustCount(t, conn, `SELECT count(*) FROM access_tokens WHERE device_id = 'A1'`); n != 0 {
			t.Errorf("A1 access tokens = %d, want 0", n)
		}
		if n := mustCount(t, conn, `SELECT count(*) FROM refresh_tokens WHERE device_id = 'A1'`); n != 0 {
			t.Errorf("A1 refresh tokens = %d, want 0", n)
		}
		// A2's token and the device-less token survive.
		if n := mustCount(t, conn, `SELECT count(*) FROM access_tokens WHERE user_id = '@alice:hs'`); n != 2 {
			t.Errorf("alice's remaining access tokens = %d, want 2", n)
		}
	})

	t.Run("refresh token hard delete removes the access tokens minted with it", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		mustExec(t, conn, `DELETE FROM refresh_tokens WHERE token_hash = sha256('r-a1')`)
		if n := mustCount(t, conn, `SELECT count(*) FROM access_tokens WHERE token_hash = sha256('t-a1')`); n != 0 {
			t.Errorf("minted access token survived its refresh token")
		}
	})

	t.Run("room hard delete is refused while content references it", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		children := []string{
			`DELETE FROM room_events WHERE room_id = '!r1:hs'`,
			`DELETE FROM room_memberships WHERE room_id = '!r1:hs'`,
			`DELETE FROM room_membership_history WHERE room_id = '!r1:hs'`,
			`DELETE FROM room_aliases WHERE room_id = '!r1:hs'`,
		}
		for _, child := range children {
			if got := execState(t, conn, `DELETE FROM rooms WHERE room_id = '!r1:hs'`); got != foreignKeyViolation {
				t.Fatalf("delete room before %q: SQLSTATE %q, want %s", child, got, foreignKeyViolation)
			}
			mustExec(t, conn, child)
		}
		mustExec(t, conn, `DELETE FROM rooms WHERE room_id = '!r1:hs'`) // purge order: children first
	})

	t.Run("session hard delete is refused while messages remain; read markers go with it", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		if got := execState(t, conn, `DELETE FROM private_sessions`); got != foreignKeyViolation {
			t.Fatalf("delete session with messages: SQLSTATE %q, want %s", got, foreignKeyViolation)
		}
		mustExec(t, conn, `DELETE FROM private_messages`)
		mustExec(t, conn, `DELETE FROM private_sessions`)
		if n := mustCount(t, conn, `SELECT count(*) FROM private_session_read_markers`); n != 0 {
			t.Errorf("read markers = %d after their session was deleted, want 0", n)
		}
	})

	t.Run("children need an existing parent", func(t *testing.T) {
		conn := migratedDB(t)
		mustExec(t, conn, seedSQL)
		orphans := []string{
			`INSERT INTO devices (user_id, device_id) VALUES ('@nobody:hs', 'X')`,
			`INSERT INTO access_tokens (token_hash, user_id, device_id) VALUES (sha256('o'), '@alice:hs', 'NOPE')`,
			`INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
			   VALUES ('$o', '!nope:hs', '@alice:hs', 'm.room.message', '{}', 1)`,
			`INSERT INTO room_memberships (room_id, user_id, membership, sender)
			   VALUES ('!nope:hs', '@alice:hs', 'join', '@alice:hs')`,
			`INSERT INTO private_messages (session_id, sender_id, content) VALUES (-1, '@alice:hs', '{}')`,
		}
		for _, q := range orphans {
			if got := execState(t, conn, q); got != foreignKeyViolation {
				t.Errorf("%s: SQLSTATE %q, want %s", firstLine(q), got, foreignKeyViolation)
			}
		}
	})
}

// TestUniquenessWithSoftDelete checks, per unique rule, that two live rows conflict and
// whether a soft-deleted row frees its key.
func TestUniquenessWithSoftDelete(t *testing.T) {
	tests := []struct {
		name       string
		insert     string // inserts the row (again)
		softDelete string
		// freedByDelete: after softDelete, insert succeeds (partial unique index) or still
		// conflicts (a key that must never be reused).
		freedByDelete bool
		restore       string // brings the first row back; must conflict when freed and re-taken
	}{
		{
			name:          "user IDs are never reused",
			insert:        `INSERT INTO users (user_id) VALUES ('@dave:hs')`,
			softDelete:    `UPDATE users SET deleted_at = 1 WHERE user_id = '@dave:hs'`,
			freedByDelete: false,
		},
		{
			name:          "device IDs stay taken (re-login upserts)",
			insert:        `INSERT INTO devices (user_id, device_id) VALUES ('@alice:hs', 'D')`,
			softDelete:    `UPDATE devices SET deleted_at = 1 WHERE device_id = 'D'`,
			freedByDelete: false,
		},
		{
			name:          "room aliases can be re-created after deletion",
			insert:        `INSERT INTO room_aliases (room_alias, room_id, creator) VALUES ('#a:hs', '!r1:hs', '@alice:hs')`,
			softDelete:    `UPDATE room_aliases SET deleted_at = 1 WHERE room_alias = '#a:hs'`,
			freedByDelete: true,
			restore:       `UPDATE room_aliases SET deleted_at = NULL WHERE room_alias = '#a:hs' AND deleted_at IS NOT NULL`,
		},
		{
			name:          "one live private session per pair",
			insert:        `INSERT INTO private_sessions (user_low, user_high) VALUES ('@bob:hs', '@carol:hs')`,
			softDelete:    `UPDATE private_sessions SET deleted_at = 1 WHERE user_low = '@bob:hs'`,
			freedByDelete: true,
			restore:       `UPDATE private_sessions SET deleted_at = NULL WHERE user_low = '@bob:hs' AND deleted_at IS NOT NULL`,
		},
		{
			name:          "access token hashes unique among live tokens",
			insert:        `INSERT INTO access_tokens (token_hash, user_id) VALUES (sha256('dup'), '@alice:hs')`,
			softDelete:    `UPDATE access_tokens SET deleted_at = 1 WHERE token_hash = sha256('dup')`,
			freedByDelete: true,
			restore:       `UPDATE access_tokens SET deleted_at = NULL WHERE token_hash = sha256('dup') AND deleted_at IS NOT NULL`,
		},
		{
			name:          "refresh token hashes unique among live tokens",
			insert:        `INSERT INTO refresh_tokens (token_hash, user_id, device_id) VALUES (sha256('dup'), '@alice:hs', 'A1')`,
			softDelete:    `UPDATE refresh_tokens SET deleted_at = 1 WHERE token_hash = sha256('dup')`,
			freedByDelete: true,
			restore:       `UPDATE refresh_tokens SET deleted_at = NULL WHERE token_hash = sha256('dup') AND deleted_at IS NOT NULL`,
		},
	}
	conn := migratedDB(t)
	mustExec(t, conn, seedSQL)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustExec(t, conn, tt.insert)
			if got := execState(t, conn, tt.insert); got != uniqueViolation {
				t.Fatalf("second live row: SQLSTATE %q, want %s", got, uniqueViolation)
			}
			mustExec(t, conn, tt.softDelete)
			got := execState(t, conn, tt.insert)
			switch {
			case tt.freedByDelete && got != "":
				t.Fatalf("insert after soft delete: SQLSTATE %q, want success", got)
			case !tt.freedByDelete && got != uniqueViolation:
				t.Fatalf("insert after soft delete: SQLSTATE %q, want %s (key never reused)", got, uniqueViolation)
			}
			if tt.restore != "" {
				if got := execState(t, conn, tt.restore); got != uniqueViolation {
					t.Fatalf("restore while the key is taken again: SQLSTATE %q, want %s", got, uniqueViolation)
				}
			}
		})
	}
}

func TestCheckConstraints(t *testing.T) {
	conn := migratedDB(t)
	mustExec(t, conn, seedSQL)
	bad := []struct{ name, sql string }{
		{"user ID without sigil", `INSERT INTO users (user_id) VALUES ('alice:hs')`},
		{"user ID over 255 bytes", `INSERT INTO users (user_id) VALUES ('@' || repeat('a', 252) || ':hs')`},
		{"room ID without sigil", `INSERT INTO rooms (room_id, creator) VALUES ('r:hs', '@alice:hs')`},
		{"session pair not ordered", `INSERT INTO private_sessions (user_low, user_high) VALUES ('@carol:hs', '@bob:hs')`},
		{"session with oneself", `INSERT INTO private_sessions (user_low, user_high) VALUES ('@bob:hs', '@bob:hs')`},
		{"unknown membership", `INSERT INTO room_memberships (room_id, user_id, membership, sender) VALUES ('!r1:hs', '@bob:hs', 'joined', '@bob:hs')`},
		{"token hash not SHA-256 sized", `INSERT INTO access_tokens (token_hash, user_id) VALUES ('\x00'::bytea, '@alice:hs')`},
		{"event ID without sigil", `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts) VALUES ('e', '!r1:hs', '@a:hs', 't', '{}', 1)`},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			if got := execState(t, conn, b.sql); got != checkViolation {
				t.Errorf("SQLSTATE %q, want %s", got, checkViolation)
			}
		})
	}
	// The pair order is byte order regardless of the database collation: '@Z' < '@a'.
	mustExec(t, conn, `INSERT INTO users (user_id) VALUES ('@Zed:hs')`)
	mustExec(t, conn, `INSERT INTO private_sessions (user_low, user_high) VALUES ('@Zed:hs', '@alice:hs')`)
}

func TestStreamOrderingIsIncreasing(t *testing.T) {
	conn := migratedDB(t)
	mustExec(t, conn, seedSQL)
	mustExec(t, conn, `INSERT INTO rooms (room_id, creator) VALUES ('!r2:hs', '@bob:hs')`)
	mustExec(t, conn, `
INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
SELECT '$s' || i, CASE WHEN i % 2 = 0 THEN '!r1:hs' ELSE '!r2:hs' END, '@bob:hs', 'm.room.message', '{}', 1000 - i
  FROM generate_series(1, 100) AS i ORDER BY i`)
	rows, err := conn.Query(testCtx(t), `SELECT stream_ordering FROM room_events WHERE event_id LIKE '$s%' ORDER BY substr(event_id, 3)::int`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("stream_ordering not increasing in insert order: %v", got)
		}
	}
}

// An old room's live-edge page must be served by the room's index even when
// every newer event belongs to other rooms: with a global index on
// stream_ordering the planner scanned it backwards past all of them
// (migration 4 dropped it).
func TestOldRoomLiveEdgeUsesTheRoomIndex(t *testing.T) {
	conn := migratedDB(t)
	mustExec(t, conn, seedSQL)
	mustExec(t, conn, `INSERT INTO rooms (room_id, creator) VALUES ('!old:hs', '@bob:hs'), ('!busy:hs', '@bob:hs')`)
	mustExec(t, conn, `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
SELECT '$o' || i, '!old:hs', '@bob:hs', 'm.room.message', '{}', i FROM generate_series(1, 20000) AS i`)
	mustExec(t, conn, `INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
SELECT '$b' || i, '!busy:hs', '@bob:hs', 'm.room.message', '{}', i FROM generate_series(1, 10000) AS i`)
	mustExec(t, conn, `ANALYZE room_events`)
	var plan strings.Builder
	rows, err := conn.Query(testCtx(t), `EXPLAIN SELECT event_id FROM room_events e
WHERE e.room_id = '!old:hs' AND e.deleted_at IS NULL AND e.stream_ordering < 9223372036854775807
ORDER BY e.stream_ordering DESC LIMIT 50`)
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		plan.WriteString(l + "\n")
	}
	if !strings.Contains(plan.String(), "room_events_room_stream_idx") {
		t.Fatalf("live-edge page of an old room not served by room_events_room_stream_idx:\n%s", plan.String())
	}
}

// TestHotQueriesAreServedByIndexes checks that the schema serves the repositories' hot
// queries (shapes from the repos issue) with the intended index and without a sort, so
// their cost does not grow with table size. Sequential scans are disabled so that the
// check is about which index CAN serve the query, independent of table statistics.
func TestHotQueriesAreServedByIndexes(t *testing.T) {
	conn := migratedDB(t)
	mustExec(t, conn, seedSQL)
	// Enough rows in enough rooms, users and sessions that the planner's choices reflect a
	// real server's selectivity (one room's rows are a small fraction of the table).
	mustExec(t, conn, `
INSERT INTO users (user_id) SELECT '@u' || u || ':hs' FROM generate_series(1, 400) AS u;
INSERT INTO rooms (room_id, creator) SELECT '!g' || r || ':hs', '@bob:hs' FROM generate_series(1, 100) AS r;
INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts, deleted_at)
SELECT '$g' || i, CASE WHEN i % 100 = 0 THEN '!r1:hs' ELSE '!g' || (i % 100) || ':hs' END, '@bob:hs',
       CASE WHEN i % 7 = 0 THEN 'm.reaction' ELSE 'm.room.message' END,
       '{}', i, CASE WHEN i % 50 = 1 THEN 1 END
  FROM generate_series(1, 20000) AS i;
INSERT INTO room_memberships (room_id, user_id, membership, sender, membership_ts)
SELECT '!g' || r || ':hs', '@u' || u || ':hs', CASE WHEN u % 5 = 0 THEN 'leave' ELSE 'join' END, '@bob:hs', u
  FROM generate_series(1, 100) AS r, generate_series(1, 60) AS u;
INSERT INTO private_sessions (user_low, user_high)
SELECT '@u' || a || ':hs', '@u' || (a + d) || ':hs'
  FROM generate_series(100, 199) AS a, generate_series(1, 20) AS d;
INSERT INTO private_messages (session_id, sender_id, content, created_ts)
SELECT s.id, s.user_low, '{}', i FROM private_sessions s, generate_series(1, 10) AS i;
INSERT INTO private_messages (session_id, sender_id, content, created_ts)
SELECT 1, CASE WHEN i % 2 = 0 THEN '@alice:hs' ELSE '@bob:hs' END, '{}', i
  FROM generate_series(1, 2000) AS i;`)
	mustExec(t, conn, `VACUUM ANALYZE`) // fills the visibility map so index-only scans are chosen
	mustExec(t, conn, `SET enable_seqscan = off`)

	tests := []struct {
		name      string
		query     string
		index     string // the index expected, or alternatives separated by |
		indexOnly bool   // the plan reads the index without visiting the heap
		noSort    bool   // the order comes from the index
	}{
		{
			name:   "room timeline backwards",
			query:  `SELECT event_id FROM room_events WHERE room_id = '!r1:hs' AND deleted_at IS NULL AND stream_ordering < 1000000 ORDER BY stream_ordering DESC LIMIT 20`,
			index:  "room_events_room_stream_idx",
			noSort: true,
		},
		{
			name:   "room timeline forwards",
			query:  `SELECT event_id FROM room_events WHERE room_id = '!r1:hs' AND deleted_at IS NULL AND stream_ordering > 100 ORDER BY stream_ordering LIMIT 20`,
			index:  "room_events_room_stream_idx",
			noSort: true,
		},
		{
			name:   "room timeline filtered by type",
			query:  `SELECT event_id FROM room_events WHERE room_id = '!r1:hs' AND type = 'm.reaction' AND deleted_at IS NULL AND stream_ordering < 1000000 ORDER BY stream_ordering DESC LIMIT 20`,
			index:  "room_events_room_type_stream_idx",
			noSort: true,
		},
		{
			name:  "event by ID",
			query: `SELECT content FROM room_events WHERE event_id = '$g5' AND deleted_at IS NULL`,
			index: "room_events_pkey",
		},
		{
			name:   "joined members page",
			query:  `SELECT user_id FROM room_memberships WHERE room_id = '!r1:hs' AND membership = 'join' AND (membership_ts, user_id) > (0, '') ORDER BY membership_ts, user_id LIMIT 50`,
			index:  "room_memberships_room_members_idx",
			noSort: true,
		},
		{
			name:      "joined member count",
			query:     `SELECT count(*) FROM room_memberships WHERE room_id = '!r1:hs' AND membership = 'join'`,
			index:     "room_memberships_room_members_idx",
			indexOnly: true,
		},
		{
			name:  "is joined",
			query: `SELECT membership = 'join' FROM room_memberships WHERE room_id = '!r1:hs' AND user_id = '@alice:hs'`,
			index: "room_memberships_pkey|room_memberships_user_rooms_idx", // both are one probe
		},
		{
			name:   "rooms of a user",
			query:  `SELECT room_id FROM room_memberships WHERE user_id = '@alice:hs' AND membership = 'join' AND room_id > '' ORDER BY room_id LIMIT 50`,
			index:  "room_memberships_user_rooms_idx",
			noSort: true,
		},
		{
			name:  "access token lookup",
			query: `SELECT user_id, device_id FROM access_tokens WHERE token_hash = sha256('t-a1') AND deleted_at IS NULL AND (expires_ts IS NULL OR expires_ts > 5)`,
			index: "access_tokens_token_hash_key",
		},
		{
			name:   "devices of a user",
			query:  `SELECT device_id FROM devices WHERE user_id = '@alice:hs' AND deleted_at IS NULL ORDER BY device_id`,
			index:  "devices_pkey",
			noSort: true,
		},
		{
			name:   "users for admins",
			query:  `SELECT user_id FROM users WHERE deleted_at IS NULL AND (created_ts, user_id) > (0, '') ORDER BY created_ts, user_id LIMIT 50`,
			index:  "users_created_idx",
			noSort: true,
		},
		{
			name:  "alias resolution",
			query: `SELECT room_id FROM room_aliases WHERE room_alias = '#r1:hs' AND deleted_at IS NULL`,
			index: "room_aliases_room_alias_key",
		},
		{
			name:  "session of a pair",
			query: `SELECT id FROM private_sessions WHERE user_low = '@u150:hs' AND user_high = '@u155:hs' AND deleted_at IS NULL`,
			index: "private_sessions_pair_key",
		},
		{
			name:   "private messages newest first",
			query:  `SELECT id FROM private_messages WHERE session_id = 1 AND deleted_at IS NULL AND (created_ts, id) < (1500, 0) ORDER BY created_ts DESC, id DESC LIMIT 20`,
			index:  "private_messages_session_page_idx",
			noSort: true,
		},
		{
			name:      "unread count after a read marker",
			query:     `SELECT count(*) FROM private_messages WHERE session_id = 1 AND deleted_at IS NULL AND (created_ts, id) > (1000, 1000) AND sender_id IS DISTINCT FROM '@bob:hs'`,
			index:     "private_messages_session_page_idx",
			indexOnly: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var raw []byte
			if err := conn.QueryRow(testCtx(t), "EXPLAIN (FORMAT JSON) "+tt.query).Scan(&raw); err != nil {
				t.Fatalf("EXPLAIN: %v", err)
			}
			var plans []struct{ Plan planNode }
			if err := json.Unmarshal(raw, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("decode plan: %v", err)
			}
			var nodes []planNode
			plans[0].Plan.walk(func(n planNode) { nodes = append(nodes, n) })
			usedIndex, sorted := false, false
			for _, n := range nodes {
				if slices.Contains(strings.Split(tt.index, "|"), n.IndexName) && (!tt.indexOnly || n.NodeType == "Index Only Scan") {
					usedIndex = true
				}
				if n.NodeType == "Sort" || n.NodeType == "Incremental Sort" {
					sorted = true
				}
			}
			if !usedIndex {
				want := "an index scan"
				if tt.indexOnly {
					want = "an index-only scan"
				}
				t.Errorf("plan does not use %s of %s:\n%s", want, tt.index, raw)
			}
			if tt.noSort && sorted {
				t.Errorf("plan sorts instead of reading in index order:\n%s", raw)
			}
		})
	}
}

type planNode struct {
	NodeType  string     `json:"Node Type"`
	IndexName string     `json:"Index Name"`
	Plans     []planNode `json:"Plans"`
}

func (n planNode) walk(f func(planNode)) {
	f(n)
	for _, c := range n.Plans {
		c.walk(f)
	}
}
