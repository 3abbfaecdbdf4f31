package repos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/repos"
)

// seedForPlans fills the tables the hot paths read with enough rows, spread
// over enough keys, that the planner's choice is meaningful, then ANALYZEs.
// Returns what to query with: a room with many events, a long session, a
// token hash, a room with many members and one of them, and a participant
// of the session with a read marker.
func seedForPlans(tb testing.TB, ctx context.Context, conn *pgx.Conn) (room string, session int64, tokenHash []byte, memberRoom, member, reader string) {
	tb.Helper()
	p := fmt.Sprintf("plan%d", idSeq.Add(1))
	stmts := []string{
		`INSERT INTO users (user_id) SELECT '@` + p + `-u' || i || ':test.local' FROM generate_series(0, 100) i`,
		`INSERT INTO devices (user_id, device_id) SELECT '@` + p + `-u' || i || ':test.local', 'D' FROM generate_series(0, 100) i`,
		`INSERT INTO rooms (room_id, creator) SELECT '!` + p + `-r' || i || ':test.local', '@x:test.local' FROM generate_series(0, 49) i`,
		`INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
		 SELECT '$` + p + `-e' || i || ':test.local', '!` + p + `-r' || (i % 50) || ':test.local', '@x:test.local',
		        CASE WHEN i % 7 = 0 THEN 'm.reaction' ELSE 'm.room.message' END, '{"body":"x"}', i
		 FROM generate_series(0, 29999) i`,
		`UPDATE room_events SET deleted_at = 1 WHERE event_id LIKE '$` + p + `-e%' AND stream_ordering % 10 = 0`,
		`INSERT INTO room_memberships (room_id, user_id, membership, sender, membership_ts)
		 SELECT '!` + p + `-r' || (i % 5) || ':test.local', '@` + p + `-u' || (i / 5) || ':test.local',
		        CASE WHEN i % 5 = 0 THEN 'leave' ELSE 'join' END, '@x:test.local', i
		 FROM generate_series(0, 5049) i`,
		`INSERT INTO access_tokens (token_hash, user_id, device_id)
		 SELECT sha256(('` + p + `' || i)::bytea), '@` + p + `-u' || (i % 101) || ':test.local', 'D'
		 FROM generate_series(0, 9999) i`,
		`INSERT INTO private_sessions (user_low, user_high)
		 SELECT LEAST(a, b) COLLATE "C", GREATEST(a, b) COLLATE "C" FROM (
		   SELECT '@` + p + `-u' || i || ':test.local' AS a, '@` + p + `-u' || (i + 1) || ':test.local' AS b
		   FROM generate_series(0, 49) i) x`,
		`INSERT INTO private_messages (session_id, sender_id, content, created_ts)
		 SELECT s.id, s.user_low, '{"body":"x"}', i FROM private_sessions s, generate_series(0, 199) i
		 WHERE s.user_low LIKE '@` + p + `-u%'`,
		// The session the test reads is a long conversation.
		`INSERT INTO private_messages (session_id, sender_id, content, created_ts)
		 SELECT s.id, s.user_high, '{"body":"x"}', 1000 + i FROM private_sessions s, generate_series(0, 9999) i
		 WHERE s.user_low = '@` + p + `-u7:test.local'`,
		`INSERT INTO private_session_read_markers (session_id, user_id, last_read_ts, last_read_id)
		 SELECT s.id, s.user_low, 10000, 0 FROM private_sessions s WHERE s.user_low = '@` + p + `-u7:test.local'`,
		`VACUUM ANALYZE users, devices, rooms, room_events, room_memberships, access_tokens, private_sessions,
		 private_messages, private_session_read_markers`,
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
	if err := conn.QueryRow(ctx, `SELECT id FROM private_sessions WHERE user_low = $1`, "@"+p+"-u7:test.local").Scan(&session); err != nil {
		tb.Fatal(err)
	}
	h := []byte(p + "17")
	if err := conn.QueryRow(ctx, `SELECT sha256($1::bytea)`, h).Scan(&tokenHash); err != nil {
		tb.Fatal(err)
	}
	return "!" + p + "-r7:test.local", session, tokenHash, "!" + p + "-r2:test.local", "@" + p + "-u3:test.local",
		"@" + p + "-u7:test.local"
}

// planNode is the part of EXPLAIN (FORMAT JSON) output the test reads.
type planNode struct {
	NodeType  string     `json:"Node Type"`
	Relation  string     `json:"Relation Name"`
	IndexName string     `json:"Index Name"`
	Plans     []planNode `json:"Plans"`
}

func (n planNode) walk(fn func(planNode)) {
	fn(n)
	for _, c := range n.Plans {
		c.walk(fn)
	}
}

// TestHotPathPlans checks with EXPLAIN that the hot paths are index scans
// of the intended (partial) indexes, never sequential scans of their table.
func TestHotPathPlans(t *testing.T) {
	ctx := session(t)
	conn, err := pgx.Connect(ctx, env.cluster.PrimaryDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	room, sess, hash, memberRoom, member, reader := seedForPlans(t, ctx, conn)

	const maxI64 = int64(^uint64(0) >> 1)
	tests := []struct {
		name, sql, table string
		indexes          []string // any of these
		args             []any
	}{
		{"events page backward", repos.SQLEventsBefore, "room_events", []string{"room_events_room_stream_idx"}, []any{room, maxI64, 51}},
		{"events page forward", repos.SQLEventsAfter, "room_events", []string{"room_events_room_stream_idx"}, []any{room, int64(100), 51}},
		{"events page by type", repos.SQLEventsBeforeTyped, "room_events", []string{"room_events_room_type_stream_idx"}, []any{room, maxI64, 51, []string{"m.reaction"}}},
		{"joined members", repos.SQLListMembersAsc, "room_memberships", []string{"room_memberships_room_members_idx"}, []any{memberRoom, "join", int64(-1), "", 51}},
		{"is joined", repos.SQLIsJoined, "room_memberships", []string{"room_memberships_pkey", "room_memberships_user_rooms_idx"}, []any{memberRoom, member}},
		{"token lookup", repos.SQLLookupToken, "access_tokens", []string{"access_tokens_token_hash_key"}, []any{hash, int64(0)}},
		{"messages page", repos.SQLMessagesBefore, "private_messages", []string{"private_messages_session_page_idx"}, []any{sess, maxI64, maxI64, 51}},
		{"unread count", repos.SQLUnreadCount, "private_messages", []string{"private_messages_session_page_idx"}, []any{sess, reader}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out []byte
			if err := conn.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+tt.sql, tt.args...).Scan(&out); err != nil {
				t.Fatal(err)
			}
			var plans []struct {
				Plan planNode `json:"Plan"`
			}
			if err := json.Unmarshal(out, &plans); err != nil || len(plans) != 1 {
				t.Fatalf("plan %s: %v", out, err)
			}
			usesIndex := false
			plans[0].Plan.walk(func(n planNode) {
				if n.Relation == tt.table && n.NodeType == "Seq Scan" {
					t.Errorf("sequential scan of %s", tt.table)
				}
				if slices.Contains(tt.indexes, n.IndexName) {
					usesIndex = true
				}
			})
			if !usesIndex {
				t.Errorf("plan uses none of %v:\n%s", tt.indexes, out)
			}
		})
	}
}

var offsetRE = regexp.MustCompile(`(?i)\bOFFSET\b`)

// sqlOffsets returns every string literal of the package's Go files that
// contains the SQL keyword OFFSET, as file:line.
func sqlOffsets(t *testing.T, testFiles bool) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var hits []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") != testFiles {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatalf("%s: %v", fset.Position(lit.Pos()), err)
			}
			if offsetRE.MatchString(s) {
				hits = append(hits, fset.Position(lit.Pos()).String())
			}
			return true
		})
	}
	return hits
}

// TestNoOffset enforces keyset pagination: no string constant in the
// package's (non-test) source mentions OFFSET. The scanner is checked on
// the test files, where the benchmark's OFFSET baseline must be found.
func TestNoOffset(t *testing.T) {
	if hits := sqlOffsets(t, false); len(hits) > 0 {
		t.Errorf("OFFSET in repository SQL (use keyset pagination): %v", hits)
	}
	if hits := sqlOffsets(t, true); len(hits) == 0 {
		t.Error("the scanner found no OFFSET in the test files, where the benchmark baseline has one: the scanner is broken")
	}
}
