package repos_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hsdal/hsdal/repos"
)

func TestValidators(t *testing.T) {
	long := func(prefix, suffix string, total int) string {
		return prefix + strings.Repeat("a", total-len(prefix)-len(suffix)) + suffix
	}
	tests := []struct {
		name  string
		fn    func(string) error
		field string
		ok    []string
		bad   []string
	}{
		{
			name: "user ID", fn: repos.ValidateUserID, field: "user_id",
			ok: []string{
				"@alice:example.org", "@a:b", "@alice.b_c=d-e/f+g:example.org:8448",
				"@Alice:example.org",   // historical: upper case
				"@al!ce#~:example.org", // historical: any printable ASCII but ':'
				"@bob:[::1]", "@bob:[2001:db8::1]:8448", "@bob:1.2.3.4", "@bob:1.2.3.4:443",
				long("@", ":example.org", 255),
			},
			bad: []string{
				"", "alice:example.org", "@alice", "@:example.org", "@alice:", "@al ice:example.org",
				"@alice\x00:example.org", "@alicé:example.org", "@alice:exa_mple.org", "@alice:example.org:",
				"@alice:example.org:0", "@alice:example.org:65536", "@alice:example.org:123456",
				"@alice:example.org:80a", "@alice:[::1", "@alice:[::1]x", "@alice:[::1]:", "@alice:[zz::1]",
				"@alice:[1.2.3.4]", "@alice:256.1.1.1", "@alice:[]",
				long("@", ":example.org", 256),
			},
		},
		{
			name: "new user ID", fn: repos.ValidateNewUserID, field: "user_id",
			ok:  []string{"@alice:example.org", "@a.b_c=d-e/f+g:example.org"},
			bad: []string{"@Alice:example.org", "@al!ce:example.org", "@alice:", ""},
		},
		{
			name: "room ID", fn: repos.ValidateRoomID, field: "room_id",
			ok: []string{"!abc:example.org", "!AbC123/=+:[::1]:80", long("!", ":e.org", 255)},
			bad: []string{"", "abc:example.org", "!abc", "!:example.org", "!a b:example.org",
				"!abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", long("!", ":e.org", 256)},
		},
		{
			name: "event ID", fn: repos.ValidateEventID, field: "event_id",
			ok: []string{
				"$abc:example.org", // v1, v2
				"$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk", // v3, standard base64
				"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", // v4+, URL-safe
			},
			bad: []string{"", "$", "$abc", "abc:example.org", "$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJ",
				"$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7Xc-k", // mixed alphabets
				"$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7Xc=k"},
		},
		{
			name: "room alias", fn: repos.ValidateRoomAlias, field: "alias",
			ok:  []string{"#room:example.org", "#a:b.c:1"},
			bad: []string{"", "room:example.org", "#room", "#:example.org"},
		},
		{
			name: "device ID", fn: repos.ValidateDeviceID, field: "device_id",
			ok:  []string{"ABCDEFGH", "é-device 1", strings.Repeat("x", 255)},
			bad: []string{"", "a\x00b", "a\nb", "\xff\xfe", strings.Repeat("x", 256)},
		},
		{
			name: "server name", fn: repos.ValidateServerName, field: "server_name",
			ok:  []string{"example.org", "example.org:8448", "localhost", "[::1]", "[::ffff:1.2.3.4]:80", "1.2.3.4"},
			bad: []string{"", ":80", "exa mple.org", "[::1", "example.org:", "[::1]:99999", "1.2.3.256", "ex\x00ample.org"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, s := range tt.ok {
				if err := tt.fn(s); err != nil {
					t.Errorf("%q rejected: %v", s, err)
				}
			}
			for _, s := range tt.bad {
				err := tt.fn(s)
				if !errors.Is(err, repos.ErrInvalidArgument) {
					t.Errorf("%q: got %v, want ErrInvalidArgument", s, err)
					continue
				}
				var ae *repos.ArgumentError
				if !errors.As(err, &ae) || ae.Field != tt.field {
					t.Errorf("%q: error %v does not name field %q", s, err, tt.field)
				}
			}
		})
	}
}

func TestParseDirection(t *testing.T) {
	for in, want := range map[string]repos.Direction{"f": repos.Forward, "b": repos.Backward} {
		got, err := repos.ParseDirection(in)
		if err != nil || got != want || got.String() != in {
			t.Errorf("ParseDirection(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "F", "forward", "x"} {
		if _, err := repos.ParseDirection(in); !errors.Is(err, repos.ErrInvalidArgument) {
			t.Errorf("ParseDirection(%q): got %v, want ErrInvalidArgument", in, err)
		}
	}
}

// FuzzValidators checks that no input makes a validator panic, that every
// rejection is an ArgumentError, and that whatever is accepted respects the
// invariants the database relies on (length, no NUL, sigil, a colon).
func FuzzValidators(f *testing.F) {
	for _, s := range []string{"@alice:example.org", "!r:[::1]:8448", "$abc:1.2.3.4",
		"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "#a:b", "DEVICE", "@\x00:x", "[::1]:80", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		check := func(name string, fn func(string) error, sigil byte, needColon bool) {
			err := fn(s)
			if err != nil {
				if !errors.Is(err, repos.ErrInvalidArgument) {
					t.Fatalf("%s(%q): error %v is not ErrInvalidArgument", name, s, err)
				}
				return
			}
			if len(s) == 0 || len(s) > repos.MaxIDBytes || strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("%s accepted %q", name, s)
			}
			if sigil != 0 && s[0] != sigil {
				t.Fatalf("%s accepted %q without sigil", name, s)
			}
			if needColon && !strings.Contains(s, ":") {
				t.Fatalf("%s accepted %q without server name", name, s)
			}
		}
		check("ValidateUserID", repos.ValidateUserID, '@', true)
		check("ValidateNewUserID", repos.ValidateNewUserID, '@', true)
		check("ValidateRoomID", repos.ValidateRoomID, '!', true)
		check("ValidateEventID", repos.ValidateEventID, '$', false)
		check("ValidateRoomAlias", repos.ValidateRoomAlias, '#', true)
		check("ValidateDeviceID", repos.ValidateDeviceID, 0, false)
		check("ValidateServerName", repos.ValidateServerName, 0, false)
		if repos.ValidateNewUserID(s) == nil && repos.ValidateUserID(s) != nil {
			t.Fatalf("%q is a valid new user ID but not a valid user ID", s)
		}
	})
}

// FuzzContent: whatever the content validator accepts is a JSON object in
// valid UTF-8 whose decoded strings (keys and values) contain no NUL, which
// is what PostgreSQL's jsonb requires; rejections are ArgumentErrors.
func FuzzContent(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"\u0000"}`, `{"a":"\\u0000"}`, ` {"a":[1,{"b":"\u0001"}]}`, `[]`, `"x"`, `{"a":1`, "{\"\xff\":1}"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := repos.CheckContent(b)
		if err != nil {
			if !errors.Is(err, repos.ErrInvalidArgument) {
				t.Fatalf("error %v is not ErrInvalidArgument", err)
			}
			return
		}
		var v map[string]any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatalf("accepted %q: %v", b, err)
		}
		if !utf8.Valid(b) {
			t.Fatalf("accepted invalid UTF-8 %q", b)
		}
		var walk func(any)
		walk = func(x any) {
			switch x := x.(type) {
			case string:
				if strings.IndexByte(x, 0) >= 0 {
					t.Fatalf("accepted %q, which decodes to a NUL", b)
				}
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				for k, e := range x {
					walk(k)
					walk(e)
				}
			}
		}
		walk(v)
	})
}
