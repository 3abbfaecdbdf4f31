package repos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

func msg(i int) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))
}

func mustEvent(tb testing.TB, f *fixture, ctx context.Context, room, sender, typ string, i int) repos.Event {
	tb.Helper()
	return must[repos.Event](tb)(f.Events.AppendEvent(ctx, repos.NewEvent{EventID: eid(), RoomID: room, Sender: sender, Type: typ, Content: msg(i)}))
}

func orderings(evs []repos.Event) []int64 {
	out := make([]int64, len(evs))
	for i, e := range evs {
		out[i] = e.StreamOrdering
	}
	return out
}

func TestEvents(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	room := mustRoom(t, f, ctx, alice)

	var evs []repos.Event
	for i := range 10 {
		typ := "m.room.message"
		if i%3 == 0 {
			typ = "m.reaction"
		}
		evs = append(evs, mustEvent(t, f, ctx, room, alice, typ, i))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].StreamOrdering <= evs[i-1].StreamOrdering {
			t.Fatalf("stream orderings not increasing: %v", orderings(evs))
		}
	}

	t.Run("append", func(t *testing.T) {
		sk := ""
		e := must[repos.Event](t)(f.Events.AppendEvent(ctx, repos.NewEvent{EventID: eid(), RoomID: room, Sender: "@bob:remote.example",
			Type: "m.room.topic", StateKey: &sk, Content: json.RawMessage(`{"topic":"x"}`), OriginServerTS: 1234}))
		if e.StateKey == nil || *e.StateKey != "" || e.OriginServerTS != 1234 || e.CreatedTS != f.clock.UnixMilli() {
			t.Fatalf("appended %+v", e)
		}
		mustTok(t)(f.Events.DeleteEvent(ctx, e.EventID)) // keep the timeline to evs
		_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: e.EventID, RoomID: room, Sender: alice, Type: "t", Content: msg(0)})
		wantErr(t, err, repos.ErrConflict) // event IDs are never reused
		_, _, err = f.Events.AppendEvent(ctx, repos.NewEvent{EventID: eid(), RoomID: rid("ghost"), Sender: alice, Type: "t", Content: msg(0)})
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("get", func(t *testing.T) {
		got, err := f.Events.GetEvent(ctx, evs[3].EventID)
		if err != nil || got.EventID != evs[3].EventID || string(got.Content) != string(evs[3].Content) {
			t.Fatalf("got %+v, %v", got, err)
		}
		var v map[string]string
		if err := json.Unmarshal(got.Content, &v); err != nil || v["body"] != "message 3" {
			t.Fatalf("content %s: %v", got.Content, err)
		}
		m, err := f.Events.GetEvents(ctx, []string{evs[0].EventID, evs[1].EventID, eid()})
		if err != nil || len(m) != 2 {
			t.Fatalf("get many: %v, %v", m, err)
		}
	})
	t.Run("backward from the live edge, then follow forward", func(t *testing.T) {
		pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		if got := orderings(pg.Items); fmt.Sprint(got) != fmt.Sprint(reverse(orderings(evs[6:]))) {
			t.Fatalf("newest 4: %v", got)
		}
		var all []repos.Event
		all = append(all, pg.Items...)
		for next := pg.Next; next != ""; {
			p, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: next, Limit: 4})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, p.Items...)
			next = p.Next
		}
		if fmt.Sprint(orderings(all)) != fmt.Sprint(reverse(orderings(evs))) {
			t.Fatalf("whole room backward: %v", orderings(all))
		}
		// Prev of the first backward page follows the room forward.
		fw, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Prev})
		if err != nil || len(fw.Items) != 0 || fw.Next == "" {
			t.Fatalf("at live edge: %+v, %v", fw, err)
		}
		e := mustEvent(t, f, ctx, room, alice, "m.room.message", 99)
		fw, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: fw.Next})
		if err != nil || len(fw.Items) != 1 || fw.Items[0].EventID != e.EventID {
			t.Fatalf("followed: %+v, %v", fw, err)
		}
		mustTok(t)(f.Events.DeleteEvent(ctx, e.EventID))
	})
	t.Run("forward from the start", func(t *testing.T) {
		pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Dir: repos.Forward, Limit: 3})
		if err != nil || fmt.Sprint(orderings(pg.Items)) != fmt.Sprint(orderings(evs[:3])) {
			t.Fatalf("first 3: %+v, %v", pg.Items, err)
		}
		// Backward from Prev: nothing precedes the first event.
		b, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Prev})
		if err != nil || len(b.Items) != 0 || b.Next != "" {
			t.Fatalf("before the first: %+v, %v", b, err)
		}
	})
	t.Run("type filter", func(t *testing.T) {
		pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Dir: repos.Forward, Types: []string{"m.reaction"}})
		if err != nil || fmt.Sprint(orderings(pg.Items)) != fmt.Sprint([]int64{evs[0].StreamOrdering, evs[3].StreamOrdering, evs[6].StreamOrdering, evs[9].StreamOrdering}) {
			t.Fatalf("reactions: %v, %v", orderings(pg.Items), err)
		}
		pg, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Types: []string{"m.reaction", "m.room.message"}, Limit: 5})
		if err != nil || len(pg.Items) != 5 || pg.Items[0].StreamOrdering != evs[9].StreamOrdering {
			t.Fatalf("two types backward: %v, %v", orderings(pg.Items), err)
		}
	})
	t.Run("cursors", func(t *testing.T) {
		other := mustRoom(t, f, ctx, alice)
		pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: other, From: pg.Next})
		wantErr(t, err, repos.ErrInvalidCursor)
		_, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Next, Dir: repos.Forward})
		wantErr(t, err, repos.ErrInvalidCursor)
		_, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Next[:len(pg.Next)-2]})
		wantErr(t, err, repos.ErrInvalidCursor)
		_, err = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Next, Dir: repos.Backward})
		if err != nil {
			t.Fatal(err)
		}
	})
	t.Run("delete and restore", func(t *testing.T) {
		mustTok(t)(f.Events.DeleteEvent(ctx, evs[9].EventID))
		_, err := f.Events.GetEvent(ctx, evs[9].EventID)
		wantErr(t, err, repos.ErrNotFound)
		pg, _ := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Limit: 1})
		if pg.Items[0].EventID != evs[8].EventID {
			t.Fatalf("newest after delete: %+v", pg.Items)
		}
		_, err = f.Events.DeleteEvent(ctx, evs[9].EventID)
		wantErr(t, err, repos.ErrNotFound)
		mustTok(t)(f.Events.RestoreEvent(ctx, evs[9].EventID))
		pg, _ = f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Limit: 1})
		if pg.Items[0].EventID != evs[9].EventID {
			t.Fatalf("newest after restore: %+v", pg.Items)
		}
		_, err = f.Events.RestoreEvent(ctx, evs[9].EventID)
		wantErr(t, err, repos.ErrNotFound)
	})
}

func reverse[T any](s []T) []T {
	out := make([]T, len(s))
	for i, x := range s {
		out[len(s)-1-i] = x
	}
	return out
}

// TestEventFollowerUnderConcurrentAppends: several appenders write to one
// room while a follower pages forward from the start, following Next. The
// follower (reading with the default consistency, on the replica when it
// is fresh enough) must see every event exactly once, in stream order: no
// skip even though appends run concurrently.
func TestEventFollowerUnderConcurrentAppends(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	room := mustRoom(t, f, ctx, alice)
	const appenders, each = 4, 40

	var mu sync.Mutex
	appended := map[int64]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, appenders)
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				e, _, err := f.Events.AppendEvent(context.Background(), repos.NewEvent{EventID: eid(), RoomID: room, Sender: alice, Type: "m.room.message", Content: msg(a*1000 + i)})
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				appended[e.StreamOrdering] = true
				mu.Unlock()
			}
		}()
	}

	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	// The follower has seen the room (or session) being created, nothing more.
	followCtx, cancel := context.WithTimeout(router.WithSession(context.Background(), router.SessionToken(ctx)), time.Minute)
	defer cancel()
	var seen []int64
	req := repos.EventPageRequest{RoomID: room, Dir: repos.Forward, Limit: 7}
	for len(seen) < appenders*each {
		// Once every append has returned, read on the primary: an empty page
		// then means the follower is at the end for good.
		final := false
		select {
		case <-allDone:
			final, req.Consistency = true, router.Strong()
		default:
		}
		pg, err := f.Events.PageEvents(followCtx, req)
		if err != nil {
			t.Fatalf("follower after %d events: %v", len(seen), err)
		}
		for _, e := range pg.Items {
			if len(seen) > 0 && e.StreamOrdering <= seen[len(seen)-1] {
				t.Fatalf("event %d after %d: repeated or out of order", e.StreamOrdering, seen[len(seen)-1])
			}
			seen = append(seen, e.StreamOrdering)
		}
		if pg.Next == "" {
			t.Fatal("forward page without Next")
		}
		req.From, req.Dir = pg.Next, 0
		if final && len(pg.Items) == 0 {
			break // skipped some: reported below
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != len(appended) {
		t.Fatalf("follower saw %d events, %d appended: it skipped some", len(seen), len(appended))
	}
	for _, so := range seen {
		if !appended[so] {
			t.Fatalf("follower saw %d, never appended", so)
		}
	}
	// Nothing more arrives.
	pg, err := f.Events.PageEvents(ctx, req)
	if err != nil || len(pg.Items) != 0 {
		t.Fatalf("after the end: %+v, %v", pg.Items, err)
	}
}

// TestAppendSerialisedPerRoom shows the mechanism behind the follower
// guarantee deterministically: while one append to a room is in flight
// (inside an open transaction, having drawn its stream ordering), a second
// append to the same room waits for the room lock instead of drawing a
// higher ordering and committing first; an append to another room does not
// wait.
func TestAppendSerialisedPerRoom(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	room, other := mustRoom(t, f, ctx, alice), mustRoom(t, f, ctx, alice)

	conn, err := pgx.Connect(ctx, env.cluster.PrimaryDSN())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	inflight := eid()
	var first int64
	if err := tx.QueryRow(ctx, repos.SQLAppendEvent, inflight, room, alice, "m.room.message", nil, msg(1), 1, 1).
		Scan(new(string), &first, new(string), new(string), new(string), new(*string), new(json.RawMessage), new(int64), new(int64)); err != nil {
		t.Fatal(err)
	}

	// An append to another room is not held up by the open transaction.
	mustEvent(t, f, ctx, other, alice, "m.room.message", 2)

	type result struct {
		e   repos.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: eid(), RoomID: room, Sender: alice, Type: "m.room.message", Content: msg(3)})
		done <- result{e, err}
	}()
	// Wait (polling, with the test's deadline) until the second append is
	// blocked on the room's row lock.
	for {
		var waiting bool
		if _, err := env.router.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
			return q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
				WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO room_events%')`).Scan(&waiting)
		}); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		select {
		case r := <-done:
			t.Fatalf("second append finished while the first was in flight: %+v, %v", r.e, r.err)
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		default:
		}
	}
	// Nothing of the room is visible yet: a forward page from the start is
	// empty, and its Next stays before the in-flight event.
	pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, Dir: repos.Forward, Consistency: router.Strong()})
	if err != nil || len(pg.Items) != 0 {
		t.Fatalf("page while in flight: %+v, %v", pg.Items, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.e.StreamOrdering <= first {
		t.Fatalf("second append got ordering %d, not after the first's %d", r.e.StreamOrdering, first)
	}
	next, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: pg.Next, Consistency: router.Strong()})
	if err != nil || fmt.Sprint(orderings(next.Items)) != fmt.Sprint([]int64{first, r.e.StreamOrdering}) {
		t.Fatalf("follower after commit: %v, %v", orderings(next.Items), err)
	}
}

// TestContentAgreesWithJSONB: for tricky JSON, the content validator either
// rejects before any SQL runs, or PostgreSQL's jsonb stores it and gives it
// back with the same meaning. No case may reach the database and fail there.
func TestContentAgreesWithJSONB(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	room := mustRoom(t, f, ctx, alice)
	for _, c := range []string{
		`{"a":"\u0000"}`, `{"a":"\\u0000"}`, `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d"}`, `{"a":"\ude00"}`,
		`{"a":"\ud83d\u0041"}`, `{"a":"\ud83dx"}`, `{"\u00e9":"\u00e9"}`, `{"a":[{"b":"\\\\\u0041"}]}`,
		`{"a":"\ud83d\ud83d\ude00"}`, `{"a":1e400}`, `{"a":"x","a":"y"}`, "{\"a\":\"\u2028\"}",
	} {
		t.Run(c, func(t *testing.T) {
			before := f.db.calls.Load()
			e, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: eid(), RoomID: room, Sender: alice, Type: "t", Content: json.RawMessage(c)})
			if err != nil {
				var ae *repos.ArgumentError
				if !errors.As(err, &ae) || f.db.calls.Load() != before {
					t.Fatalf("rejected by the database, not the validator: %v", err)
				}
				return
			}
			var in, out any
			if err := json.Unmarshal([]byte(c), &in); err != nil {
				t.Fatal(err)
			}
			got, err := f.Events.GetEvent(ctx, e.EventID)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(got.Content, &out); err != nil || fmt.Sprint(in) != fmt.Sprint(out) {
				t.Fatalf("stored %s as %s (%v)", c, got.Content, err)
			}
		})
	}
}
