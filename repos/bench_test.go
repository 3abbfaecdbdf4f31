package repos_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// deepRoomEvents is how many events the benchmark room holds: enough for
// a full page at depth 100 000.
const deepRoomEvents = 100_100

var deepRoom struct {
	once sync.Once
	id   string
	err  error
}

// seedDeepRoom creates (once per process) a room with deepRoomEvents live
// events, plus 10% hidden ones interleaved, and waits until the replica has
// them.
func seedDeepRoom(tb testing.TB) string {
	tb.Helper()
	deepRoom.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, env.cluster.PrimaryDSN())
		if err != nil {
			deepRoom.err = err
			return
		}
		defer conn.Close(context.Background())
		id := rid("deep")
		for _, s := range []string{
			`INSERT INTO rooms (room_id, creator) VALUES ($1, '@x:test.local')`,
			`INSERT INTO room_events (event_id, room_id, sender, type, content, origin_server_ts)
			 SELECT '$deep-' || i || ':test.local', $1, '@x:test.local', 'm.room.message',
			        jsonb_build_object('msgtype', 'm.text', 'body', 'message ' || i), i
			 FROM generate_series(1, ` + fmt.Sprint(deepRoomEvents*11/10) + `) i`,
			`UPDATE room_events SET deleted_at = 1 WHERE room_id = $1 AND stream_ordering % 11 = 0`,
		} {
			if _, err := conn.Exec(ctx, s, id); err != nil {
				deepRoom.err = fmt.Errorf("%s: %w", s, err)
				return
			}
		}
		if _, err := conn.Exec(ctx, `VACUUM ANALYZE room_events`); err != nil {
			deepRoom.err = err
			return
		}
		deepRoom.id, deepRoom.err = id, env.cluster.WaitReplicated(ctx)
	})
	if deepRoom.err != nil {
		tb.Fatal(deepRoom.err)
	}
	return deepRoom.id
}

// offsetPageSQL is the OFFSET baseline the keyset page is compared with
// (test-only: TestNoOffset keeps OFFSET out of the package's own SQL).
const offsetPageSQL = `
SELECT e.event_id, e.stream_ordering, e.room_id, e.sender, e.type, e.state_key, e.content, e.origin_server_ts, e.created_ts
FROM room_events e
WHERE e.room_id = $1 AND e.deleted_at IS NULL
ORDER BY e.stream_ordering DESC
LIMIT $2 OFFSET $3`

// BenchmarkEventsPage measures one 50-event backward page of a room with
// 100 000+ live events, at the live edge and 100 000 events deep: keyset
// pagination through Events.PageEvents, and the same page with OFFSET
// through the same router for comparison. Reads use the default
// consistency (the replica when fresh).
//
//	go test -run '^$' -bench BenchmarkEventsPage -benchtime 2s ./repos
func BenchmarkEventsPage(b *testing.B) {
	room := seedDeepRoom(b)
	f := newRepos(b)
	ctx := context.Background()
	codec, err := repos.NewCursorCodec(cursorKeyForTests, nil)
	if err != nil {
		b.Fatal(err)
	}
	const limit = 50
	for _, depth := range []int{0, 100_000} {
		// The cursor a client holds after paging down `depth` events: the
		// stream ordering of the depth-th newest live event.
		from := ""
		if depth > 0 {
			var so int64
			if _, err := env.router.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
				return q.QueryRow(ctx, `SELECT stream_ordering FROM room_events WHERE room_id = $1 AND deleted_at IS NULL
					ORDER BY stream_ordering DESC OFFSET $2 LIMIT 1`, room, depth-1).Scan(&so)
			}); err != nil {
				b.Fatal(err)
			}
			from = codec.Encode(repos.KindEvents, room, repos.Backward, repos.CursorPos{A: so})
		}
		var keysetFirst, offsetFirst string
		b.Run(fmt.Sprintf("keyset/depth=%d", depth), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: from, Limit: limit})
				if err != nil || len(pg.Items) != limit {
					b.Fatalf("%d events, %v", len(pg.Items), err)
				}
				keysetFirst = pg.Items[0].EventID
			}
		})
		b.Run(fmt.Sprintf("offset/depth=%d", depth), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var evs []repos.Event
				if _, err := env.router.Read(ctx, router.Consistency{}, func(ctx context.Context, q router.Querier) error {
					rows, _ := q.Query(ctx, offsetPageSQL, room, limit, depth)
					var err error
					evs, err = pgx.CollectRows(rows, pgx.RowToStructByName[repos.Event])
					return err
				}); err != nil || len(evs) != limit {
					b.Fatalf("%d events, %v", len(evs), err)
				}
				offsetFirst = evs[0].EventID
			}
		})
		if keysetFirst != offsetFirst {
			b.Fatalf("depth %d: keyset page starts at %s, OFFSET page at %s", depth, keysetFirst, offsetFirst)
		}
	}
}

// BenchmarkHotReads measures the hottest single-row reads through the
// repositories (default consistency: the replica when fresh), uncached.
//
//	go test -run '^$' -bench BenchmarkHotReads ./repos
func BenchmarkHotReads(b *testing.B) {
	f := newRepos(b)
	ctx := session(b)
	alice := mustUser(b, f, ctx, "bench")
	must[repos.Device](b)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "D"}))
	raw := mustToken(b, f, ctx, alice, "D")
	room := mustRoom(b, f, ctx, alice)
	must[repos.Membership](b)(f.Memberships.Join(ctx, room, alice))
	if err := env.cluster.WaitReplicated(ctx); err != nil {
		b.Fatal(err)
	}
	ctx = context.Background() // no session: reads may use the replica
	b.Run("LookupToken", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.AccessTokens.LookupToken(ctx, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("IsJoined", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ok, err := f.Memberships.IsJoined(ctx, room, alice); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("GetUser", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.Users.GetUser(ctx, alice); err != nil {
				b.Fatal(err)
			}
		}
	})
}
