package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// retryRead runs f until it succeeds, returns a non-transient error, or ctx
// ends (polling every 100ms): the final state is read after the faults are
// healed, but a router may still be reopening breakers.
func retryRead(ctx context.Context, f func(ctx context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !router.Retryable(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// ReadFinal reads, with Strong consistency through d, the final state of
// every object the workload wrote: profiles, events (and every event of
// its rooms), private messages (whole sessions), memberships with their
// whole history. The plain observations are appended to the history as one
// op at LevelFinal; the rest is returned for Check. Call it after the
// workload stopped and the cluster is healed.
func (w *Workload) ReadFinal(ctx context.Context, d *dal.DAL) (*Final, error) {
	op := &Op{User: -1, Kind: "final_state", Level: LevelFinal, Start: w.h.Now()}
	fin := &Final{Memberships: map[string]FinalMembership{}, Duplicates: map[string]int{}}
	objs := w.h.Objects()
	strong := router.Strong()

	// Profiles.
	ids := w.UserIDs()
	var users map[string]repos.User
	if err := retryRead(ctx, func(ctx context.Context) (err error) {
		users, err = d.Users.GetUsers(ctx, ids, strong)
		return err
	}); err != nil {
		return nil, fmt.Errorf("integration: final profiles: %w", err)
	}
	for i, id := range ids {
		st := StateAbsent
		if u, ok := users[id]; ok {
			st = parseVersion(fmt.Sprintf("u%d", i), u.DisplayName)
		}
		op.Obs = append(op.Obs, Observation{Object: profileObj(id), States: []string{st}})
	}

	// Events by ID.
	var events []string
	for obj := range objs {
		if id, ok := strings.CutPrefix(obj, "event/"); ok {
			events = append(events, id)
		}
	}
	sort.Strings(events)
	for len(events) > 0 {
		batch := events[:min(len(events), repos.MaxBatchIDs)]
		events = events[len(batch):]
		var got map[string]repos.Event
		if err := retryRead(ctx, func(ctx context.Context) (err error) {
			got, err = d.Events.GetEvents(ctx, batch, strong)
			return err
		}); err != nil {
			return nil, fmt.Errorf("integration: final events: %w", err)
		}
		for _, id := range batch {
			obj := eventObj(id)
			if e, ok := got[id]; ok {
				op.Obs = append(op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: w.mismatch(obj, gotEvent(e))})
			} else {
				op.Obs = append(op.Obs, Observation{Object: obj, States: []string{StateAbsent, StateDeleted}})
			}
		}
	}
	// Every live event of the rooms must be one the workload sent.
	for _, room := range w.rooms {
		err := pageAll(ctx, func(ctx context.Context, from string) (string, int, error) {
			p, err := d.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: room, From: from, Dir: repos.Forward,
				Limit: repos.DefaultMaxPageSize, Consistency: strong})
			for _, e := range p.Items {
				if _, ok := objs[eventObj(e.EventID)]; !ok {
					fin.Unexpected = append(fin.Unexpected, eventObj(e.EventID))
				}
			}
			return p.Next, len(p.Items), err
		})
		if err != nil {
			return nil, fmt.Errorf("integration: final timeline of %s: %w", room, err)
		}
	}

	// Private messages: whole sessions, matched by the key in the content.
	found := map[string][]repos.PrivateMessage{}
	for _, u := range w.users {
		err := pageAll(ctx, func(ctx context.Context, from string) (string, int, error) {
			p, err := d.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: u.session, From: from,
				Dir: repos.Forward, Limit: repos.DefaultMaxPageSize, Consistency: strong})
			for _, m := range p.Items {
				var c struct {
					K string `json:"k"`
				}
				_ = json.Unmarshal(m.Content, &c)
				found[messageObj(c.K)] = append(found[messageObj(c.K)], m)
			}
			return p.Next, len(p.Items), err
		})
		if err != nil {
			return nil, fmt.Errorf("integration: final session %d: %w", u.session, err)
		}
	}
	for obj, ms := range found {
		if _, ok := objs[obj]; !ok {
			fin.Unexpected = append(fin.Unexpected, obj)
		}
		if len(ms) > 1 {
			fin.Duplicates[obj] = len(ms)
		}
	}
	for obj := range objs {
		if !strings.HasPrefix(obj, "msg/") {
			continue
		}
		if ms, ok := found[obj]; ok {
			op.Obs = append(op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: w.mismatch(obj, gotMessage(ms[0]))})
		} else {
			op.Obs = append(op.Obs, Observation{Object: obj, States: []string{StateAbsent, StateDeleted}})
		}
	}

	// Memberships: current row and whole history.
	for _, u := range w.users {
		for _, room := range w.toggle {
			obj := memberObj(room, u.id)
			var fm FinalMembership
			if err := retryRead(ctx, func(ctx context.Context) error {
				m, err := d.Memberships.GetMembership(ctx, room, u.id, strong)
				switch {
				case err == nil:
					fm.Current = string(m.Membership)
				case errors.Is(err, repos.ErrNotFound):
					fm.Current = StateNone
				default:
					return err
				}
				return nil
			}); err != nil {
				return nil, fmt.Errorf("integration: final membership: %w", err)
			}
			prev := StateNone
			err := pageAll(ctx, func(ctx context.Context, from string) (string, int, error) {
				p, err := d.Memberships.ListHistory(ctx, repos.HistoryRequest{RoomID: room, UserID: u.id, From: from,
					Dir: repos.Forward, Limit: repos.DefaultMaxPageSize, Consistency: strong})
				for _, t := range p.Items {
					got := StateNone
					if t.PrevMembership != nil {
						got = string(*t.PrevMembership)
					}
					if got != prev && fm.ChainBroken == "" {
						fm.ChainBroken = fmt.Sprintf("entry %d says prev %q, the entry before it is %q", t.ID, got, prev)
					}
					prev = string(t.Membership)
					fm.History = append(fm.History, prev)
				}
				return p.Next, len(p.Items), err
			})
			if err != nil {
				return nil, fmt.Errorf("integration: final membership history: %w", err)
			}
			fin.Memberships[obj] = fm
		}
	}
	sort.Strings(fin.Unexpected)
	op.End = w.h.Now()
	op.Outcome = Acked
	w.h.Add(op)
	return fin, nil
}

// pageAll follows a forward keyset list until a page comes back empty
// (forward pages of growing lists always carry a Next cursor).
func pageAll(ctx context.Context, page func(ctx context.Context, from string) (next string, n int, err error)) error {
	from := ""
	for {
		var next string
		var n int
		if err := retryRead(ctx, func(ctx context.Context) (err error) {
			next, n, err = page(ctx, from)
			return err
		}); err != nil {
			return err
		}
		if n == 0 || next == "" {
			return nil
		}
		from = next
	}
}
