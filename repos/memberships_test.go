package repos_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/hsdal/hsdal/repos"
)

func TestCheckTransition(t *testing.T) {
	const (
		none = repos.MembershipState("")
		J    = repos.Join
		I    = repos.Invite
		L    = repos.Leave
		B    = repos.Ban
		K    = repos.Knock
	)
	all := []repos.MembershipState{none, J, I, L, B, K}
	type key struct {
		next   repos.MembershipState
		self   bool
		prev   repos.MembershipState
		sender repos.MembershipState
	}
	// legal lists every legal combination; everything else must conflict.
	legal := map[key]bool{}
	{
		for _, prev := range all {
			// join: self, not banned (sender state == prev when self)
			if prev != B {
				legal[key{J, true, prev, prev}] = true
			}
			// invite: joined sender, target not joined/banned
			if prev != J && prev != B {
				legal[key{I, false, prev, J}] = true
			}
			// self leave from invite/join/knock
			if prev == I || prev == J || prev == K {
				legal[key{L, true, prev, prev}] = true
			}
			// kick/unban by a joined sender
			legal[key{L, false, prev, J}] = true
			// ban by a joined sender, not self
			legal[key{B, false, prev, J}] = true
			// knock: self, not banned/invited/joined
			if prev != B && prev != I && prev != J {
				legal[key{K, true, prev, prev}] = true
			}
		}
	}
	for _, next := range all[1:] {
		for _, self := range []bool{true, false} {
			for _, prev := range all {
				for _, sender := range all {
					if self && sender != prev {
						continue // the sender is the target: one state
					}
					err := repos.CheckTransition(prev, sender, self, next)
					want := legal[key{next, self, prev, sender}]
					if want && err != nil || !want && !errors.Is(err, repos.ErrConflict) {
						t.Errorf("%q→%q self=%v sender=%q: got %v, legal=%v", prev, next, self, sender, err, want)
					}
				}
			}
		}
	}
	if err := repos.CheckTransition("", "", true, "dance"); !errors.Is(err, repos.ErrInvalidArgument) {
		t.Errorf("unknown membership: %v", err)
	}
}

func TestMemberships(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice, bob, carol := uid("alice"), uid("bob"), fmt.Sprintf("@carol-%d:remote.example", idSeq.Add(1))
	room := mustRoom(t, f, ctx, alice)

	m := must[repos.Membership](t)(f.Memberships.Join(ctx, room, alice))
	if m.Membership != repos.Join || m.Sender != alice || m.MembershipTS != f.clock.UnixMilli() {
		t.Fatalf("join %+v", m)
	}
	step := func(name string, call func() (repos.Membership, error), want repos.MembershipState, wantErr error) {
		t.Helper()
		f.clock.Add(time.Second)
		got, err := call()
		if wantErr != nil {
			if !errors.Is(err, wantErr) {
				t.Fatalf("%s: got %v, want %v", name, err, wantErr)
			}
			return
		}
		if err != nil || got.Membership != want {
			t.Fatalf("%s: got %+v, %v", name, got, err)
		}
	}

	step("bob joins uninvited (no join rules here: allowed)", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Join(ctx, room, bob)
		return m, err
	}, repos.Join, nil)
	step("bob invites carol", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Invite(ctx, room, bob, carol)
		return m, err
	}, repos.Invite, nil)
	step("carol cannot invite herself back", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Invite(ctx, room, carol, carol)
		return m, err
	}, "", repos.ErrConflict)
	step("carol rejects", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Leave(ctx, room, carol)
		return m, err
	}, repos.Leave, nil)
	step("carol cannot leave twice", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Leave(ctx, room, carol)
		return m, err
	}, "", repos.ErrConflict)
	step("carol knocks", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Knock(ctx, room, carol)
		return m, err
	}, repos.Knock, nil)
	step("alice bans carol", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Ban(ctx, room, alice, carol, "spam")
		return m, err
	}, repos.Ban, nil)
	step("banned carol cannot join", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Join(ctx, room, carol)
		return m, err
	}, "", repos.ErrConflict)
	step("banned carol cannot be invited", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Invite(ctx, room, bob, carol)
		return m, err
	}, "", repos.ErrConflict)
	step("carol (not joined) cannot kick bob", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Kick(ctx, room, carol, bob, "")
		return m, err
	}, "", repos.ErrConflict)
	step("alice unbans carol", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Kick(ctx, room, alice, carol, "forgiven")
		return m, err
	}, repos.Leave, nil)
	step("carol joins", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Join(ctx, room, carol)
		return m, err
	}, repos.Join, nil)
	step("deleted room", func() (repos.Membership, error) {
		m, _, err := f.Memberships.Join(ctx, rid("ghost"), carol)
		return m, err
	}, "", repos.ErrNotFound)

	t.Run("join keeps membership_ts on profile change", func(t *testing.T) {
		before, err := f.Memberships.GetMembership(ctx, room, bob)
		if err != nil {
			t.Fatal(err)
		}
		f.clock.Add(5 * time.Second)
		after := must[repos.Membership](t)(f.Memberships.Join(ctx, room, bob))
		if after.MembershipTS != before.MembershipTS || after.UpdatedTS == before.UpdatedTS {
			t.Fatalf("before %+v after %+v", before, after)
		}
	})
	t.Run("is joined", func(t *testing.T) {
		for user, want := range map[string]bool{alice: true, bob: true, carol: true, uid("ghost"): false} {
			got, err := f.Memberships.IsJoined(ctx, room, user)
			if err != nil || got != want {
				t.Fatalf("IsJoined(%s) = %v, %v", user, got, err)
			}
		}
	})
	t.Run("counts", func(t *testing.T) {
		dan := uid("dan")
		must[repos.Membership](t)(f.Memberships.Invite(ctx, room, alice, dan))
		got, err := f.Memberships.CountMembers(ctx, room)
		if err != nil || got != (repos.MemberCounts{Joined: 3, Invited: 1}) {
			t.Fatalf("counts %+v, %v", got, err)
		}
		_, err = f.Memberships.CountMembers(ctx, rid("ghost"))
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("joined members in join order", func(t *testing.T) {
		pg, err := f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room, Limit: 2})
		if err != nil || len(pg.Items) != 2 || pg.Items[0].UserID != alice || pg.Items[1].UserID != bob || pg.Next == "" {
			t.Fatalf("page 1 %+v, %v", pg, err)
		}
		pg, err = f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room, From: pg.Next, Limit: 2})
		if err != nil || len(pg.Items) != 1 || pg.Items[0].UserID != carol || pg.Next != "" {
			t.Fatalf("page 2 %+v, %v", pg, err)
		}
		inv, err := f.Memberships.ListMembers(ctx, repos.MemberPageRequest{RoomID: room, Membership: repos.Invite})
		if err != nil || len(inv.Items) != 1 {
			t.Fatalf("invited %+v, %v", inv, err)
		}
		// A cursor of the joined list is not one of the invited list.
		_, err = f.Memberships.ListMembers(ctx, repos.MemberPageRequest{RoomID: room, Membership: repos.Invite, From: pg.Prev})
		wantErr(t, err, repos.ErrInvalidCursor)
		back, err := f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room, Dir: repos.Backward})
		if err != nil || len(back.Items) != 3 || back.Items[0].UserID != carol {
			t.Fatalf("backward %+v, %v", back, err)
		}
	})
	t.Run("rooms of user", func(t *testing.T) {
		var rooms []string
		for range 3 {
			r := mustRoom(t, f, ctx, alice)
			must[repos.Membership](t)(f.Memberships.Join(ctx, r, carol))
			rooms = append(rooms, r)
		}
		rooms = append([]string{room}, rooms...) // room IDs grow with the sequence
		var got []string
		req := repos.UserRoomsRequest{UserID: carol, Limit: 3}
		for {
			pg, err := f.Memberships.ListRoomsOfUser(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range pg.Items {
				got = append(got, m.RoomID)
			}
			if pg.Next == "" {
				break
			}
			req.From = pg.Next
		}
		if len(got) != 4 || got[0] != rooms[0] || got[3] != rooms[3] {
			t.Fatalf("rooms %v, want %v", got, rooms)
		}
		mustTok(t)(f.Rooms.DeleteRoom(ctx, rooms[2]))
		pg, err := f.Memberships.ListRoomsOfUser(ctx, repos.UserRoomsRequest{UserID: carol, Dir: repos.Backward})
		if err != nil || len(pg.Items) != 3 || pg.Items[0].RoomID != rooms[3] || pg.Items[1].RoomID != rooms[1] {
			t.Fatalf("after deleting a room: %+v, %v", pg.Items, err)
		}
	})
	t.Run("history", func(t *testing.T) {
		pg, err := f.Memberships.ListHistory(ctx, repos.HistoryRequest{RoomID: room, UserID: carol})
		if err != nil {
			t.Fatal(err)
		}
		want := []repos.MembershipState{repos.Invite, repos.Leave, repos.Knock, repos.Ban, repos.Leave, repos.Join}
		if len(pg.Items) != len(want) {
			t.Fatalf("history %+v", pg.Items)
		}
		for i, h := range pg.Items {
			var prev repos.MembershipState
			if i > 0 {
				prev = want[i-1]
			}
			if h.Membership != want[i] || (h.PrevMembership == nil) != (i == 0) || i > 0 && *h.PrevMembership != prev {
				t.Fatalf("history[%d] = %+v", i, h)
			}
		}
		if r := pg.Items[3].Reason; r == nil || *r != "spam" {
			t.Fatalf("ban reason %v", r)
		}
		back, err := f.Memberships.ListHistory(ctx, repos.HistoryRequest{RoomID: room, UserID: carol, Dir: repos.Backward, Limit: 1})
		if err != nil || len(back.Items) != 1 || back.Items[0].Membership != repos.Join {
			t.Fatalf("latest %+v, %v", back, err)
		}
	})
}
