package repos_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

func TestPrivateMessages(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice, bob := mustUser(t, f, ctx, "alice"), mustUser(t, f, ctx, "bob")

	s, created, _, err := f.PrivateMessages.GetOrCreateSession(ctx, bob, alice)
	if err != nil || !created || *s.UserLow != alice || *s.UserHigh != bob {
		t.Fatalf("session %+v created=%v: %v", s, created, err)
	}
	t.Run("one session per pair", func(t *testing.T) {
		s2, created, _, err := f.PrivateMessages.GetOrCreateSession(ctx, alice, bob)
		if err != nil || created || s2.ID != s.ID {
			t.Fatalf("again: %+v created=%v: %v", s2, created, err)
		}
		got, err := f.PrivateMessages.GetSession(ctx, bob, alice)
		if err != nil || got.ID != s.ID {
			t.Fatalf("get: %+v, %v", got, err)
		}
		got, err = f.PrivateMessages.GetSessionByID(ctx, s.ID)
		if err != nil || got.ID != s.ID {
			t.Fatalf("get by id: %+v, %v", got, err)
		}
		_, _, _, err = f.PrivateMessages.GetOrCreateSession(ctx, alice, uid("ghost"))
		wantErr(t, err, repos.ErrNotFound)
		_, _, _, err = f.PrivateMessages.GetOrCreateSession(ctx, alice, alice)
		wantErr(t, err, repos.ErrInvalidArgument)
	})
	t.Run("concurrent creation makes one session", func(t *testing.T) {
		c, d := mustUser(t, f, ctx, "c"), mustUser(t, f, ctx, "d")
		ids := make([]int64, 6)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				a, b := c, d
				if i%2 == 1 {
					a, b = d, c
				}
				s, _, _, err := f.PrivateMessages.GetOrCreateSession(context.Background(), a, b)
				if err != nil {
					t.Error(err)
				}
				ids[i] = s.ID
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("sessions %v", ids)
			}
		}
	})

	var sent []repos.PrivateMessage
	for i := range 7 {
		from := alice
		if i%2 == 1 {
			from = bob
		}
		if i%3 != 0 {
			f.clock.Add(time.Millisecond) // some messages share created_ts: id breaks ties
		}
		sent = append(sent, must[repos.PrivateMessage](t)(f.PrivateMessages.SendMessage(ctx, s.ID, from, msg(i))))
	}
	t.Run("send", func(t *testing.T) {
		_, _, err := f.PrivateMessages.SendMessage(ctx, s.ID, mustUser(t, f, ctx, "eve"), msg(0))
		wantErr(t, err, repos.ErrNotFound) // not a participant
		f.clock.Add(-time.Hour)            // a clock behind the session's latest message
		m := must[repos.PrivateMessage](t)(f.PrivateMessages.SendMessage(ctx, s.ID, alice, msg(100)))
		f.clock.Add(time.Hour)
		if m.CreatedTS < sent[len(sent)-1].CreatedTS {
			t.Fatalf("created_ts went backwards: %d < %d", m.CreatedTS, sent[len(sent)-1].CreatedTS)
		}
		sent = append(sent, m)
		got, err := f.PrivateMessages.GetMessage(ctx, m.ID)
		if err != nil || got.ID != m.ID || *got.SenderID != alice {
			t.Fatalf("get: %+v, %v", got, err)
		}
	})
	t.Run("page newest first, then oldest first", func(t *testing.T) {
		var ids []int64
		req := repos.MessagePageRequest{SessionID: s.ID, Limit: 3}
		for {
			pg, err := f.PrivateMessages.PageMessages(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range pg.Items {
				ids = append(ids, m.ID)
			}
			if pg.Next == "" {
				break
			}
			req.From = pg.Next
		}
		if len(ids) != len(sent) {
			t.Fatalf("backward walk %v", ids)
		}
		for i := range ids {
			if ids[i] != sent[len(sent)-1-i].ID {
				t.Fatalf("backward walk %v", ids)
			}
		}
		pg, err := f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: s.ID, Dir: repos.Forward, Limit: 2})
		if err != nil || pg.Items[0].ID != sent[0].ID || pg.Items[1].ID != sent[1].ID || pg.Next == "" {
			t.Fatalf("forward %+v, %v", pg.Items, err)
		}
		other, _, _, _ := f.PrivateMessages.GetOrCreateSession(ctx, alice, mustUser(t, f, ctx, "zed"))
		_, err = f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: other.ID, From: pg.Next})
		wantErr(t, err, repos.ErrInvalidCursor)
	})
	t.Run("read markers and unread counts", func(t *testing.T) {
		unread := func(user string) int64 {
			t.Helper()
			n, err := f.PrivateMessages.UnreadCount(ctx, s.ID, user)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		// alice sent 0,2,4,6,7; bob sent 1,3,5.
		if a, b := unread(alice), unread(bob); a != 3 || b != 5 {
			t.Fatalf("unread alice=%d bob=%d", a, b)
		}
		moved, _, err := f.PrivateMessages.MarkRead(ctx, s.ID, bob, sent[4].ID)
		if err != nil || !moved {
			t.Fatalf("mark read: %v %v", moved, err)
		}
		if b := unread(bob); b != 2 {
			t.Fatalf("bob unread after reading up to 4: %d", b)
		}
		moved, _, err = f.PrivateMessages.MarkRead(ctx, s.ID, bob, sent[2].ID)
		if err != nil || moved {
			t.Fatalf("marker moved backwards: %v %v", moved, err)
		}
		if b := unread(bob); b != 2 {
			t.Fatalf("bob unread: %d", b)
		}
		_, _, err = f.PrivateMessages.MarkRead(ctx, s.ID, mustUser(t, f, ctx, "eve"), sent[2].ID)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.PrivateMessages.UnreadCount(ctx, s.ID, uid("eve"))
		wantErr(t, err, repos.ErrNotFound)
		mustTok(t)(f.PrivateMessages.DeleteMessage(ctx, sent[6].ID))
		if b := unread(bob); b != 1 {
			t.Fatalf("bob unread after a delete: %d", b)
		}
		mustTok(t)(f.PrivateMessages.RestoreMessage(ctx, sent[6].ID))
		if b := unread(bob); b != 2 {
			t.Fatalf("bob unread after restore: %d", b)
		}
	})
	t.Run("delete and restore session", func(t *testing.T) {
		mustTok(t)(f.PrivateMessages.DeleteSession(ctx, s.ID))
		_, err := f.PrivateMessages.GetMessage(ctx, sent[0].ID)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: s.ID})
		wantErr(t, err, repos.ErrNotFound)
		_, _, err = f.PrivateMessages.SendMessage(ctx, s.ID, alice, msg(1))
		wantErr(t, err, repos.ErrNotFound)
		// The pair may start over; the old session then cannot come back.
		s2, created, _, err := f.PrivateMessages.GetOrCreateSession(ctx, alice, bob)
		if err != nil || !created || s2.ID == s.ID {
			t.Fatalf("new session %+v %v %v", s2, created, err)
		}
		_, err = f.PrivateMessages.RestoreSession(ctx, s.ID)
		wantErr(t, err, repos.ErrConflict)
		mustTok(t)(f.PrivateMessages.DeleteSession(ctx, s2.ID))
		mustTok(t)(f.PrivateMessages.RestoreSession(ctx, s.ID))
		if _, err := f.PrivateMessages.GetMessage(ctx, sent[0].ID); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMessagePaginationUnderConcurrentSends: senders on both sides post to
// one session while a reader pages oldest-first from the start and follows
// Next; a second reader walks newest-first from a fixed start. Neither may
// skip or repeat a message.
func TestMessagePaginationUnderConcurrentSends(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice, bob := mustUser(t, f, ctx, "alice"), mustUser(t, f, ctx, "bob")
	s, _, _, err := f.PrivateMessages.GetOrCreateSession(ctx, alice, bob)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 { // history for the backward walker
		must[repos.PrivateMessage](t)(f.PrivateMessages.SendMessage(ctx, s.ID, alice, msg(i)))
	}
	first, err := f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: s.ID, Limit: 3, Consistency: router.Strong()})
	if err != nil {
		t.Fatal(err)
	}

	const senders, each = 4, 30
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			from := alice
			if i%2 == 1 {
				from = bob
			}
			for j := range each {
				if _, _, err := f.PrivateMessages.SendMessage(context.Background(), s.ID, from, json.RawMessage(`{"n":1}`)); err != nil {
					t.Error(err)
					return
				}
				_ = j
			}
		})
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()

	// Backward walk from the first page's end while sends run: exactly the
	// 17 older messages, newest first.
	var back []int64
	for next := first.Next; next != ""; {
		pg, err := f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: s.ID, From: next, Limit: 4})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range pg.Items {
			if len(back) > 0 && m.ID >= back[len(back)-1] {
				t.Fatalf("backward walk repeated or reordered %d", m.ID)
			}
			back = append(back, m.ID)
		}
		next = pg.Next
	}
	if len(back) != 17 {
		t.Fatalf("backward walk returned %d messages, want 17", len(back))
	}

	// Forward follower from the start.
	// The follower has seen the room (or session) being created, nothing more.
	followCtx, cancel := context.WithTimeout(router.WithSession(context.Background(), router.SessionToken(ctx)), time.Minute)
	defer cancel()
	type key struct{ ts, id int64 }
	var seen []key
	req := repos.MessagePageRequest{SessionID: s.ID, Dir: repos.Forward, Limit: 9}
	for len(seen) < 20+senders*each {
		final := false
		select {
		case <-allDone:
			final, req.Consistency = true, router.Strong()
		default:
		}
		pg, err := f.PrivateMessages.PageMessages(followCtx, req)
		if err != nil {
			t.Fatalf("follower after %d: %v", len(seen), err)
		}
		for _, m := range pg.Items {
			k := key{m.CreatedTS, m.ID}
			if len(seen) > 0 {
				p := seen[len(seen)-1]
				if k.ts < p.ts || k.ts == p.ts && k.id <= p.id {
					t.Fatalf("message %+v after %+v: repeated or out of order", k, p)
				}
			}
			seen = append(seen, k)
		}
		req.From, req.Dir = pg.Next, 0
		if final && len(pg.Items) == 0 {
			break
		}
	}
	<-allDone
	if len(seen) != 20+senders*each {
		t.Fatalf("follower saw %d messages, %d sent: it skipped some", len(seen), 20+senders*each)
	}
}
