package repos_test

import (
	"context"
	"errors"
	"testing"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// TestSoftDelete: for each read method, a row is visible; after the row or
// its parent is soft-deleted the method no longer returns it (ErrNotFound,
// absent from a map or page, false, or a count without it); restoring
// brings it back.
func TestSoftDelete(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	codec, err := repos.NewCursorCodec(cursorKeyForTests, nil)
	if err != nil {
		t.Fatal(err)
	}

	type world struct {
		user, device, token, room, alias, member string
		event                                    repos.Event
		session                                  repos.PrivateSession
		message                                  repos.PrivateMessage
	}
	setup := func(t *testing.T) *world {
		w := &world{user: mustUser(t, f, ctx, "sd"), device: "DEV", member: mustUser(t, f, ctx, "sdm")}
		must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: w.user, DeviceID: w.device}))
		w.token = mustToken(t, f, ctx, w.user, w.device)
		w.room = rid("sd")
		must[repos.Room](t)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: w.room, Creator: w.user, IsPublic: true}))
		w.alias = "#" + w.room[1:]
		mustTok(t)(f.Rooms.CreateAlias(ctx, w.alias, w.room, w.user))
		must[repos.Membership](t)(f.Memberships.Join(ctx, w.room, w.member))
		w.event = mustEvent(t, f, ctx, w.room, w.member, "m.room.message", 1)
		s, _, _, err := f.PrivateMessages.GetOrCreateSession(ctx, w.user, w.member)
		if err != nil {
			t.Fatal(err)
		}
		w.session = s
		w.message = must[repos.PrivateMessage](t)(f.PrivateMessages.SendMessage(ctx, s.ID, w.member, msg(1)))
		return w
	}
	// found turns (value, error) into "visible?": ErrNotFound means hidden.
	found := func(err error) (bool, error) {
		if errors.Is(err, repos.ErrNotFound) {
			return false, nil
		}
		return err == nil, err
	}

	type parent struct {
		name            string
		delete, restore func(ctx context.Context, w *world) (router.Token, error)
	}
	userP := parent{"user",
		func(ctx context.Context, w *world) (router.Token, error) { return f.Users.DeleteUser(ctx, w.user) },
		func(ctx context.Context, w *world) (router.Token, error) { return f.Users.RestoreUser(ctx, w.user) }}
	deviceP := parent{"device",
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.Devices.DeleteDevice(ctx, w.user, w.device)
		},
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.Devices.RestoreDevice(ctx, w.user, w.device)
		}}
	roomP := parent{"room",
		func(ctx context.Context, w *world) (router.Token, error) { return f.Rooms.DeleteRoom(ctx, w.room) },
		func(ctx context.Context, w *world) (router.Token, error) { return f.Rooms.RestoreRoom(ctx, w.room) }}
	eventP := parent{"event",
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.Events.DeleteEvent(ctx, w.event.EventID)
		},
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.Events.RestoreEvent(ctx, w.event.EventID)
		}}
	sessionP := parent{"session",
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.PrivateMessages.DeleteSession(ctx, w.session.ID)
		},
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.PrivateMessages.RestoreSession(ctx, w.session.ID)
		}}
	messageP := parent{"message",
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.PrivateMessages.DeleteMessage(ctx, w.message.ID)
		},
		func(ctx context.Context, w *world) (router.Token, error) {
			return f.PrivateMessages.RestoreMessage(ctx, w.message.ID)
		}}

	tests := []struct {
		method  string
		parents []parent
		visible func(ctx context.Context, w *world) (bool, error)
	}{
		{"Users.GetUser", []parent{userP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Users.GetUser(ctx, w.user)
			return found(err)
		}},
		{"Users.GetUsers", []parent{userP}, func(ctx context.Context, w *world) (bool, error) {
			m, err := f.Users.GetUsers(ctx, []string{w.user})
			_, ok := m[w.user]
			return ok, err
		}},
		{"Users.ListUsers", []parent{userP}, func(ctx context.Context, w *world) (bool, error) {
			// The page that starts just before the user's creation time.
			u, err := f.Users.GetUsers(ctx, []string{w.member}) // created with w.user, same clock
			if err != nil {
				return false, err
			}
			from := codec.Encode(repos.KindUsers, "users", repos.Forward, repos.CursorPos{A: u[w.member].CreatedTS - 1})
			pg, err := f.Users.ListUsers(ctx, repos.UserPageRequest{From: from, Limit: 5})
			for _, u := range pg.Items {
				if u.UserID == w.user {
					return true, err
				}
			}
			return false, err
		}},
		{"Devices.GetDevice", []parent{deviceP, userP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Devices.GetDevice(ctx, w.user, w.device)
			return found(err)
		}},
		{"Devices.ListDevices", []parent{deviceP, userP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: w.user})
			if ok, err := found(err); !ok {
				return false, err
			}
			return len(pg.Items) == 1, nil
		}},
		{"AccessTokens.LookupToken", []parent{deviceP, userP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.AccessTokens.LookupToken(ctx, w.token)
			return found(err)
		}},
		{"Rooms.GetRoom", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Rooms.GetRoom(ctx, w.room)
			return found(err)
		}},
		{"Rooms.GetRooms", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			m, err := f.Rooms.GetRooms(ctx, []string{w.room})
			return len(m) == 1, err
		}},
		{"Rooms.ListPublicRooms", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Rooms.ListPublicRooms(ctx, repos.RoomPageRequest{From: justBefore(t, repos.KindPublicRooms, "public", w.room), Limit: 1})
			return err == nil && len(pg.Items) == 1 && pg.Items[0].RoomID == w.room, err
		}},
		{"Rooms.ResolveAlias", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Rooms.ResolveAlias(ctx, w.alias)
			return found(err)
		}},
		{"Rooms.ListAliases", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			l, err := f.Rooms.ListAliases(ctx, w.room)
			return len(l) == 1, err
		}},
		{"Memberships.GetMembership", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Memberships.GetMembership(ctx, w.room, w.member)
			return found(err)
		}},
		{"Memberships.IsJoined", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			return f.Memberships.IsJoined(ctx, w.room, w.member)
		}},
		{"Memberships.ListJoinedMembers", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: w.room})
			if ok, err := found(err); !ok {
				return false, err
			}
			return len(pg.Items) == 1, nil
		}},
		{"Memberships.ListRoomsOfUser", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Memberships.ListRoomsOfUser(ctx, repos.UserRoomsRequest{UserID: w.member})
			return len(pg.Items) == 1, err
		}},
		{"Memberships.CountMembers", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			c, err := f.Memberships.CountMembers(ctx, w.room)
			if ok, err := found(err); !ok {
				return false, err
			}
			return c.Joined == 1, nil
		}},
		{"Memberships.ListHistory", []parent{roomP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Memberships.ListHistory(ctx, repos.HistoryRequest{RoomID: w.room, UserID: w.member})
			if ok, err := found(err); !ok {
				return false, err
			}
			return len(pg.Items) == 1, nil
		}},
		{"Events.GetEvent", []parent{eventP, roomP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.Events.GetEvent(ctx, w.event.EventID)
			return found(err)
		}},
		{"Events.GetEvents", []parent{eventP, roomP}, func(ctx context.Context, w *world) (bool, error) {
			m, err := f.Events.GetEvents(ctx, []string{w.event.EventID})
			return len(m) == 1, err
		}},
		{"Events.PageEvents", []parent{eventP, roomP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: w.room})
			if ok, err := found(err); !ok {
				return false, err
			}
			return len(pg.Items) == 1, nil
		}},
		{"PrivateMessages.GetSession", []parent{sessionP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.PrivateMessages.GetSession(ctx, w.user, w.member)
			return found(err)
		}},
		{"PrivateMessages.GetSessionByID", []parent{sessionP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.PrivateMessages.GetSessionByID(ctx, w.session.ID)
			return found(err)
		}},
		{"PrivateMessages.GetMessage", []parent{messageP, sessionP}, func(ctx context.Context, w *world) (bool, error) {
			_, err := f.PrivateMessages.GetMessage(ctx, w.message.ID)
			return found(err)
		}},
		{"PrivateMessages.PageMessages", []parent{messageP, sessionP}, func(ctx context.Context, w *world) (bool, error) {
			pg, err := f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: w.session.ID})
			if ok, err := found(err); !ok {
				return false, err
			}
			return len(pg.Items) == 1, nil
		}},
		{"PrivateMessages.UnreadCount", []parent{messageP, sessionP}, func(ctx context.Context, w *world) (bool, error) {
			n, err := f.PrivateMessages.UnreadCount(ctx, w.session.ID, w.user)
			if ok, err := found(err); !ok {
				return false, err
			}
			return n == 1, nil
		}},
	}
	for _, tt := range tests {
		for _, p := range tt.parents {
			t.Run(tt.method+"/"+p.name, func(t *testing.T) {
				w := setup(t)
				check := func(stage string, want bool) {
					t.Helper()
					got, err := tt.visible(ctx, w)
					if err != nil {
						t.Fatalf("%s: %v", stage, err)
					}
					if got != want {
						t.Fatalf("%s: visible=%v, want %v", stage, got, want)
					}
				}
				check("created", true)
				oneWrite := func(op func(context.Context, *world) (router.Token, error)) {
					t.Helper()
					before := f.db.writes.Load()
					tok := mustTok(t)(op(ctx, w))
					if n := f.db.writes.Load() - before; n != 1 || tok.IsZero() {
						t.Fatalf("%d router writes, token %v; want one write with a token", n, tok)
					}
				}
				oneWrite(p.delete)
				check(p.name+" deleted", false)
				oneWrite(p.restore)
				check(p.name+" restored", true)
			})
		}
	}
}
