package repos_test

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/hsdal/hsdal/repos"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func mustCodec(tb testing.TB, key []byte, prev ...[]byte) *repos.CursorCodec {
	tb.Helper()
	c, err := repos.NewCursorCodec(key, prev)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestCursorRoundTrip(t *testing.T) {
	c := mustCodec(t, testKey)
	tests := []struct {
		name  string
		kind  repos.CursorKind
		dir   repos.Direction
		pos   repos.CursorPos
		scope string
	}{
		{"events backward", repos.KindEvents, repos.Backward, repos.CursorPos{A: 42}, "!r:example.org"},
		{"events forward negative", repos.KindEvents, repos.Forward, repos.CursorPos{A: -1}, "!r:example.org"},
		{"messages", repos.KindPrivateMessages, repos.Backward, repos.CursorPos{A: 1700000000000, B: 99}, "7"},
		{"members", repos.KindJoinedMembers, repos.Forward, repos.CursorPos{A: 5, S: "@alice:example.org"}, "!r:x"},
		{"rooms with long key", repos.KindUserRooms, repos.Forward, repos.CursorPos{S: "!" + strings.Repeat("a", 250) + ":x"}, "@u:x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := c.Encode(tt.kind, tt.scope, tt.dir, tt.pos)
			dir, pos, err := c.Decode(s, tt.kind, tt.scope)
			if err != nil {
				t.Fatal(err)
			}
			if dir != tt.dir || pos != tt.pos {
				t.Fatalf("got %v %+v, want %v %+v", dir, pos, tt.dir, tt.pos)
			}
		})
	}
}

func TestCursorRejected(t *testing.T) {
	c := mustCodec(t, testKey)
	good := c.Encode(repos.KindEvents, "!r:example.org", repos.Backward, repos.CursorPos{A: 42})
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	flip := func(i int) string {
		b := append([]byte(nil), raw...)
		b[i] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	other := mustCodec(t, []byte("another key that is long enough!"))
	tests := []struct {
		name   string
		cursor string
		kind   repos.CursorKind
		scope  string
	}{
		{"empty", "", repos.KindEvents, "!r:example.org"},
		{"garbage", "not a cursor!", repos.KindEvents, "!r:example.org"},
		{"truncated", good[:len(good)-3], repos.KindEvents, "!r:example.org"},
		{"truncated to header", good[:12], repos.KindEvents, "!r:example.org"},
		{"extended", good + "AA", repos.KindEvents, "!r:example.org"},
		{"key byte flipped", flip(len(raw) - 17), repos.KindEvents, "!r:example.org"},
		{"direction flipped", flip(2), repos.KindEvents, "!r:example.org"},
		{"mac flipped", flip(len(raw) - 1), repos.KindEvents, "!r:example.org"},
		{"other room", good, repos.KindEvents, "!other:example.org"},
		{"other kind", good, repos.KindPrivateMessages, "!r:example.org"},
		{"other key", other.Encode(repos.KindEvents, "!r:example.org", repos.Backward, repos.CursorPos{A: 42}), repos.KindEvents, "!r:example.org"},
		{"huge", strings.Repeat("A", 10000), repos.KindEvents, "!r:example.org"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := c.Decode(tt.cursor, tt.kind, tt.scope); !errors.Is(err, repos.ErrInvalidCursor) {
				t.Fatalf("got %v, want ErrInvalidCursor", err)
			}
		})
	}
}

func TestCursorKeyRotation(t *testing.T) {
	oldKey := []byte("the old key, still long enough..")
	old := mustCodec(t, oldKey)
	rotated := mustCodec(t, testKey, oldKey)
	s := old.Encode(repos.KindEvents, "!r:x", repos.Forward, repos.CursorPos{A: 7})
	if _, pos, err := rotated.Decode(s, repos.KindEvents, "!r:x"); err != nil || pos.A != 7 {
		t.Fatalf("cursor signed with the previous key: %v %v", pos, err)
	}
	s = rotated.Encode(repos.KindEvents, "!r:x", repos.Forward, repos.CursorPos{A: 7})
	if _, _, err := old.Decode(s, repos.KindEvents, "!r:x"); !errors.Is(err, repos.ErrInvalidCursor) {
		t.Fatalf("new key accepted by old codec: %v", err)
	}
	if _, err := repos.NewCursorCodec([]byte("short"), nil); !errors.Is(err, repos.ErrInvalidArgument) {
		t.Fatalf("short key: got %v", err)
	}
}

// FuzzCursorDecode feeds arbitrary strings and byte-level mutations of valid
// cursors to the decoder: it must never panic, must reject with
// ErrInvalidCursor, and may accept only what re-encodes to the same string
// (i.e. what the codec itself signed).
func FuzzCursorDecode(f *testing.F) {
	c := mustCodec(f, testKey)
	f.Add(c.Encode(repos.KindEvents, "!r:x", repos.Backward, repos.CursorPos{A: 1}), uint8(repos.KindEvents))
	f.Add(c.Encode(repos.KindPrivateMessages, "!r:x", repos.Forward, repos.CursorPos{A: 1, B: 2}), uint8(repos.KindPrivateMessages))
	f.Add(c.Encode(repos.KindJoinedMembers, "!r:x", repos.Forward, repos.CursorPos{A: 3, S: "@a:b"}), uint8(repos.KindJoinedMembers))
	f.Add(c.Encode(repos.KindUserRooms, "!r:x", repos.Forward, repos.CursorPos{S: "!a:b"}), uint8(repos.KindUserRooms))
	f.Add("", uint8(0))
	f.Add("AAAA", uint8(200))
	f.Fuzz(func(t *testing.T, s string, kind uint8) {
		k := repos.CursorKind(kind)
		dir, pos, err := c.Decode(s, k, "!r:x")
		if err != nil {
			if !errors.Is(err, repos.ErrInvalidCursor) {
				t.Fatalf("error %v is not ErrInvalidCursor", err)
			}
			return
		}
		if again := c.Encode(k, "!r:x", dir, pos); again != s {
			t.Fatalf("accepted %q, which re-encodes as %q", s, again)
		}
	})
}
