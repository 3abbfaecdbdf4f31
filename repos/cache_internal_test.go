package repos

import (
	"reflect"
	"testing"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/router"
)

func roundTrip[T any](t *testing.T, name string, enc func(*cache.Writer, T), dec func(*cache.Reader) T, values ...T) {
	t.Helper()
	codec := stampedCodec(1, enc, dec)
	for i, v := range values {
		in := stamped[T]{v: v, upper: router.LSN(1<<40 + uint64(i)), tl: 3}
		b, err := codec.Append(nil, in)
		if err != nil {
			t.Fatalf("%s #%d: encode: %v", name, i, err)
		}
		out, err := codec.Decode(b)
		if err != nil {
			t.Fatalf("%s #%d: decode: %v", name, i, err)
		}
		if !reflect.DeepEqual(out, in) {
			t.Fatalf("%s #%d: round trip\n got %+v\nwant %+v", name, i, out, in)
		}
		if _, err := codec.Decode(b[:len(b)-1]); err == nil && len(b) > 0 {
			t.Fatalf("%s #%d: truncated encoding decoded", name, i)
		}
	}
}

func TestCacheCodecsRoundTrip(t *testing.T) {
	s := func(v string) *string { return &v }
	n := func(v int64) *int64 { return &v }
	roundTrip(t, "token", encodeTokenOwner, decodeTokenOwner,
		TokenOwner{},
		TokenOwner{UserID: "@a:b", DeviceID: s("D"), IsAdmin: true, IsGuest: true, ExpiresTS: n(-5),
			DeviceLastSeenTS: n(1 << 50), DeviceLastSeenIP: s("::1")})
	roundTrip(t, "user", encodeUser, decodeUser,
		User{},
		User{UserID: "@a:b", DisplayName: s("Ä"), AvatarURL: s(""), IsAdmin: true, IsGuest: true, Deactivated: true,
			CreatedTS: 1, UpdatedTS: -1})
	roundTrip(t, "room", encodeRoom, decodeRoom,
		Room{},
		Room{RoomID: "!r:b", Creator: "@a:b", IsPublic: true, Name: s("n"), Topic: s("t"), CreatedTS: 7, UpdatedTS: 8})
	roundTrip(t, "devices", encodeDeviceList, decodeDeviceList,
		deviceList{},
		deviceList{Large: true},
		deviceList{Devices: []Device{{UserID: "@a:b", DeviceID: "D1"},
			{UserID: "@a:b", DeviceID: "D2", DisplayName: s("x"), LastSeenTS: n(3), LastSeenIP: s("ip"), CreatedTS: 4}}})
	roundTrip(t, "members", encodeMemberList, decodeMemberList,
		memberList{},
		memberList{Large: true},
		memberList{Members: []Membership{{RoomID: "!r:b", UserID: "@a:b", Membership: Join, Sender: "@a:b"},
			{RoomID: "!r:b", UserID: "@c:b", Membership: Join, Sender: "@d:b", EventID: s("$e"),
				StreamOrdering: n(9), MembershipTS: 10, UpdatedTS: 11}}})
}
