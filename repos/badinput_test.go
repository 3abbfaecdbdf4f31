package repos_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// TestBadInput: every method rejects malformed input with ErrInvalidArgument
// naming the field (or ErrInvalidCursor for a bad cursor) before any SQL
// runs: the router is never called, so nothing can have been written.
func TestBadInput(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	const (
		okUser = "@ok:test.local"
		okRoom = "!ok:test.local"
		okEv   = "$ok:test.local"
	)
	okTok := strings.Repeat("t", 32)
	long := strings.Repeat("x", 300)
	content := json.RawMessage(`{"a":1}`)
	many := make([]string, repos.MaxBatchIDs+1)
	for i := range many {
		many[i] = okUser
	}
	tests := []struct {
		name  string
		field string // "" for ErrInvalidCursor
		call  func() error
	}{
		{"CreateUser upper-case localpart", "user_id", func() error {
			_, _, err := f.Users.CreateUser(ctx, repos.NewUser{UserID: "@Alice:test.local"})
			return err
		}},
		{"CreateUser NUL in display name", "displayname", func() error {
			_, _, err := f.Users.CreateUser(ctx, repos.NewUser{UserID: okUser, DisplayName: ptr("a\x00b")})
			return err
		}},
		{"CreateUser long avatar", "avatar_url", func() error {
			_, _, err := f.Users.CreateUser(ctx, repos.NewUser{UserID: okUser, AvatarURL: ptr(strings.Repeat("a", 2000))})
			return err
		}},
		{"GetUser no sigil", "user_id", func() error { _, err := f.Users.GetUser(ctx, "alice:test.local"); return err }},
		{"GetUser two consistencies", "consistency", func() error {
			_, err := f.Users.GetUser(ctx, okUser, router.Strong(), router.Strong())
			return err
		}},
		{"GetUsers bad element", "user_ids[1]", func() error { _, err := f.Users.GetUsers(ctx, []string{okUser, "@x"}); return err }},
		{"GetUsers too many", "user_ids", func() error { _, err := f.Users.GetUsers(ctx, many); return err }},
		{"UpdateProfile long name", "displayname", func() error {
			_, _, err := f.Users.UpdateProfile(ctx, okUser, repos.ProfileUpdate{DisplayName: ptr(long)})
			return err
		}},
		{"Deactivate", "user_id", func() error { _, err := f.Users.Deactivate(ctx, ""); return err }},
		{"DeleteUser", "user_id", func() error { _, err := f.Users.DeleteUser(ctx, "@"+long+":x"); return err }},
		{"RestoreUser", "user_id", func() error { _, err := f.Users.RestoreUser(ctx, "@a:b:c:d"); return err }},
		{"ListUsers negative limit", "limit", func() error { _, err := f.Users.ListUsers(ctx, repos.UserPageRequest{Limit: -1}); return err }},
		{"ListUsers huge limit", "limit", func() error {
			_, err := f.Users.ListUsers(ctx, repos.UserPageRequest{Limit: repos.DefaultMaxPageSize + 1})
			return err
		}},
		{"ListUsers bad dir", "dir", func() error { _, err := f.Users.ListUsers(ctx, repos.UserPageRequest{Dir: 'x'}); return err }},
		{"ListUsers forged cursor", "", func() error {
			_, err := f.Users.ListUsers(ctx, repos.UserPageRequest{From: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
			return err
		}},

		{"UpsertDevice empty device", "device_id", func() error {
			_, _, err := f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: okUser})
			return err
		}},
		{"UpsertDevice NUL in IP", "ip", func() error {
			_, _, err := f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: okUser, DeviceID: "D", IP: "1\x00"})
			return err
		}},
		{"GetDevice control char", "device_id", func() error { _, err := f.Devices.GetDevice(ctx, okUser, "a\nb"); return err }},
		{"ListDevices", "user_id", func() error { _, err := f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: "x"}); return err }},
		{"TouchDevice", "device_id", func() error {
			_, _, err := f.Devices.TouchDevice(ctx, repos.DeviceTouch{UserID: okUser})
			return err
		}},
		{"DeleteDevice", "device_id", func() error { _, err := f.Devices.DeleteDevice(ctx, okUser, long); return err }},
		{"DeleteDevices element", "device_ids[0]", func() error { _, _, err := f.Devices.DeleteDevices(ctx, okUser, []string{""}); return err }},
		{"DeleteAllDevices keep", "keep_device_id", func() error { _, _, err := f.Devices.DeleteAllDevices(ctx, okUser, "\x00"); return err }},
		{"RestoreDevice", "user_id", func() error { _, err := f.Devices.RestoreDevice(ctx, "@:x", "D"); return err }},

		{"CreateToken short", "token", func() error {
			_, err := f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: "short", UserID: okUser})
			return err
		}},
		{"CreateToken negative expiry", "expires_ts", func() error {
			_, err := f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: okTok, UserID: okUser, ExpiresTS: -1})
			return err
		}},
		{"LookupToken huge", "token", func() error { _, err := f.AccessTokens.LookupToken(ctx, strings.Repeat("t", 600)); return err }},
		{"RevokeToken NUL", "token", func() error { _, err := f.AccessTokens.RevokeToken(ctx, okTok+"\x00"); return err }},

		{"CreateRoom bad ID", "room_id", func() error {
			_, _, err := f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: "#nope:x", Creator: okUser})
			return err
		}},
		{"CreateRoom bad creator", "creator", func() error {
			_, _, err := f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: okRoom, Creator: "nobody"})
			return err
		}},
		{"CreateRoom NUL name", "name", func() error {
			_, _, err := f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: okRoom, Creator: okUser, Name: ptr("\x00")})
			return err
		}},
		{"GetRoom", "room_id", func() error { _, err := f.Rooms.GetRoom(ctx, "!x"); return err }},
		{"GetRooms", "room_ids[0]", func() error { _, err := f.Rooms.GetRooms(ctx, []string{"!"}); return err }},
		{"UpdateRoom long topic", "topic", func() error {
			_, _, err := f.Rooms.UpdateRoom(ctx, okRoom, repos.RoomUpdate{Topic: ptr(strings.Repeat("t", repos.MaxRoomTopicBytes+1))})
			return err
		}},
		{"DeleteRoom", "room_id", func() error { _, err := f.Rooms.DeleteRoom(ctx, ""); return err }},
		{"RestoreRoom", "room_id", func() error { _, err := f.Rooms.RestoreRoom(ctx, "!a:[::1"); return err }},
		{"ListPublicRooms", "limit", func() error {
			_, err := f.Rooms.ListPublicRooms(ctx, repos.RoomPageRequest{Limit: 1 << 30})
			return err
		}},
		{"CreateAlias", "alias", func() error { _, err := f.Rooms.CreateAlias(ctx, "alias:x", okRoom, okUser); return err }},
		{"ResolveAlias", "alias", func() error { _, err := f.Rooms.ResolveAlias(ctx, "#:x"); return err }},
		{"ListAliases", "room_id", func() error { _, err := f.Rooms.ListAliases(ctx, "x"); return err }},
		{"DeleteAlias", "alias", func() error { _, err := f.Rooms.DeleteAlias(ctx, "#a"); return err }},

		{"ChangeMembership unknown", "membership", func() error {
			_, _, err := f.Memberships.ChangeMembership(ctx, repos.MembershipChange{RoomID: okRoom, UserID: okUser, Sender: okUser, Membership: "dance"})
			return err
		}},
		{"ChangeMembership bad event", "event_id", func() error {
			_, _, err := f.Memberships.ChangeMembership(ctx, repos.MembershipChange{RoomID: okRoom, UserID: okUser, Sender: okUser, Membership: repos.Join, EventID: "ev"})
			return err
		}},
		{"ChangeMembership NUL reason", "reason", func() error {
			_, _, err := f.Memberships.Ban(ctx, okRoom, okUser, "@b:x", "\x00")
			return err
		}},
		{"Invite bad target", "user_id", func() error { _, _, err := f.Memberships.Invite(ctx, okRoom, okUser, "bob"); return err }},
		{"Join bad room", "room_id", func() error { _, _, err := f.Memberships.Join(ctx, "room", okUser); return err }},
		{"Kick bad sender", "sender", func() error { _, _, err := f.Memberships.Kick(ctx, okRoom, "", okUser, ""); return err }},
		{"GetMembership", "user_id", func() error { _, err := f.Memberships.GetMembership(ctx, okRoom, "@"); return err }},
		{"IsJoined", "room_id", func() error { _, err := f.Memberships.IsJoined(ctx, "!", okUser); return err }},
		{"ListMembers membership", "membership", func() error {
			_, err := f.Memberships.ListMembers(ctx, repos.MemberPageRequest{RoomID: okRoom, Membership: "x"})
			return err
		}},
		{"ListJoinedMembers cursor", "", func() error {
			_, err := f.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: okRoom, From: "!!"})
			return err
		}},
		{"ListRoomsOfUser", "limit", func() error {
			_, err := f.Memberships.ListRoomsOfUser(ctx, repos.UserRoomsRequest{UserID: okUser, Limit: -5})
			return err
		}},
		{"CountMembers", "room_id", func() error { _, err := f.Memberships.CountMembers(ctx, long); return err }},
		{"ListHistory", "user_id", func() error {
			_, err := f.Memberships.ListHistory(ctx, repos.HistoryRequest{RoomID: okRoom, UserID: "x"})
			return err
		}},

		{"AppendEvent not an object", "content", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Type: "t", Content: json.RawMessage(`[1]`)})
			return err
		}},
		{"AppendEvent NUL escape", "content", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Type: "t", Content: json.RawMessage(`{"a":"\u0000"}`)})
			return err
		}},
		{"AppendEvent lone surrogate", "content", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Type: "t", Content: json.RawMessage(`{"a":"\ud800x"}`)})
			return err
		}},
		{"AppendEvent reversed surrogates", "content", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Type: "t", Content: json.RawMessage(`{"a":"\udc00\ud800"}`)})
			return err
		}},
		{"AppendEvent too big", "content", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Type: "t",
				Content: json.RawMessage(`{"a":"` + strings.Repeat("x", repos.MaxContentBytes) + `"}`)})
			return err
		}},
		{"AppendEvent empty type", "type", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: okEv, RoomID: okRoom, Sender: okUser, Content: content})
			return err
		}},
		{"AppendEvent bad event ID", "event_id", func() error {
			_, _, err := f.Events.AppendEvent(ctx, repos.NewEvent{EventID: "$", RoomID: okRoom, Sender: okUser, Type: "t", Content: content})
			return err
		}},
		{"GetEvent", "event_id", func() error { _, err := f.Events.GetEvent(ctx, "ev"); return err }},
		{"GetEvents", "event_ids[1]", func() error { _, err := f.Events.GetEvents(ctx, []string{okEv, "x"}); return err }},
		{"PageEvents too many types", "types", func() error {
			_, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: okRoom, Types: make([]string, repos.MaxTypeFilters+1)})
			return err
		}},
		{"PageEvents empty type", "types[0]", func() error {
			_, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: okRoom, Types: []string{""}})
			return err
		}},
		{"PageEvents truncated cursor", "", func() error {
			_, err := f.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: okRoom, From: "AQE"})
			return err
		}},
		{"DeleteEvent", "event_id", func() error { _, err := f.Events.DeleteEvent(ctx, ""); return err }},
		{"RestoreEvent", "event_id", func() error { _, err := f.Events.RestoreEvent(ctx, "$a:"); return err }},

		{"GetOrCreateSession same user", "user_b", func() error {
			_, _, _, err := f.PrivateMessages.GetOrCreateSession(ctx, okUser, okUser)
			return err
		}},
		{"GetSession", "user_a", func() error { _, err := f.PrivateMessages.GetSession(ctx, "a", okUser); return err }},
		{"GetSessionByID", "session_id", func() error { _, err := f.PrivateMessages.GetSessionByID(ctx, 0); return err }},
		{"SendMessage invalid JSON", "content", func() error {
			_, _, err := f.PrivateMessages.SendMessage(ctx, 1, okUser, json.RawMessage(`{"a":`))
			return err
		}},
		{"SendMessage bad UTF-8", "content", func() error {
			_, _, err := f.PrivateMessages.SendMessage(ctx, 1, okUser, json.RawMessage("{\"a\":\"\xff\"}"))
			return err
		}},
		{"GetMessage", "message_id", func() error { _, err := f.PrivateMessages.GetMessage(ctx, -1); return err }},
		{"PageMessages", "limit", func() error {
			_, err := f.PrivateMessages.PageMessages(ctx, repos.MessagePageRequest{SessionID: 1, Limit: -1})
			return err
		}},
		{"MarkRead", "message_id", func() error { _, _, err := f.PrivateMessages.MarkRead(ctx, 1, okUser, 0); return err }},
		{"UnreadCount", "user_id", func() error { _, err := f.PrivateMessages.UnreadCount(ctx, 1, ""); return err }},
		{"DeleteSession", "session_id", func() error { _, err := f.PrivateMessages.DeleteSession(ctx, -3); return err }},
		{"RestoreSession", "session_id", func() error { _, err := f.PrivateMessages.RestoreSession(ctx, 0); return err }},
		{"DeleteMessage", "message_id", func() error { _, err := f.PrivateMessages.DeleteMessage(ctx, 0); return err }},
		{"RestoreMessage", "message_id", func() error { _, err := f.PrivateMessages.RestoreMessage(ctx, 0); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.db.calls.Load()
			err := tt.call()
			if f.db.calls.Load() != before {
				t.Errorf("the router was called: SQL ran for rejected input")
			}
			if tt.field == "" {
				if !errors.Is(err, repos.ErrInvalidCursor) {
					t.Fatalf("got %v, want ErrInvalidCursor", err)
				}
				return
			}
			var ae *repos.ArgumentError
			if !errors.Is(err, repos.ErrInvalidArgument) || !errors.As(err, &ae) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
			if ae.Field != tt.field {
				t.Fatalf("error %q names field %q, want %q", err, ae.Field, tt.field)
			}
		})
	}
}

func TestErrUnavailable(t *testing.T) {
	if !errors.Is(fmt.Errorf("x: %w", router.ErrUnavailable), repos.ErrUnavailable) {
		t.Fatal("repos.ErrUnavailable is not router.ErrUnavailable")
	}
	ctx := session(t)
	r, err := router.New(ctx, router.Config{PrimaryDSN: env.cluster.PrimaryDSN()})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repos.New(r, repos.Config{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close() // no node can serve anything now
	_, _, err = rp.Users.CreateUser(ctx, repos.NewUser{UserID: uid("u")})
	wantErr(t, err, repos.ErrUnavailable)
	_, err = rp.Users.GetUser(ctx, uid("u"))
	wantErr(t, err, repos.ErrUnavailable)
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name  string
		db    repos.DB
		cfg   repos.Config
		field string // "" = valid
	}{
		{"zero config", env.router, repos.Config{}, ""},
		{"nil db", nil, repos.Config{}, "db"},
		{"short cursor key", env.router, repos.Config{CursorKey: []byte("short")}, "cursor_key"},
		{"short previous key", env.router, repos.Config{CursorKey: cursorKeyForTests, PreviousCursorKeys: [][]byte{[]byte("x")}}, "cursor_key"},
		{"negative max", env.router, repos.Config{MaxPageSize: -1}, "max_page_size"},
		{"default above max", env.router, repos.Config{DefaultPageSize: 20, MaxPageSize: 10}, "default_page_size"},
		{"small max lowers the default", env.router, repos.Config{MaxPageSize: 10}, ""},
		{"negative touch interval", env.router, repos.Config{DeviceTouchInterval: -1}, "device_touch_interval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := repos.New(tt.db, tt.cfg)
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ae *repos.ArgumentError
			if !errors.As(err, &ae) || ae.Field != tt.field {
				t.Fatalf("got %v, want an ArgumentError for %s", err, tt.field)
			}
		})
	}
}
