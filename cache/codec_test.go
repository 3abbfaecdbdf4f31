package cache_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/hsdal/hsdal/cache"
)

// Representative hot entities: a profile and a user's device list.
type profile struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname"`
	AvatarURL   string `json:"avatar_url"`
	UpdatedTS   int64  `json:"updated_ts"`
}

type device struct {
	ID          string `json:"device_id"`
	DisplayName string `json:"display_name"`
	LastSeenIP  string `json:"last_seen_ip"`
	LastSeenTS  int64  `json:"last_seen_ts"`
	Hidden      bool   `json:"hidden"`
}

var profileCodec = cache.Binary(1,
	func(w *cache.Writer, p profile) {
		w.String(p.UserID)
		w.String(p.DisplayName)
		w.String(p.AvatarURL)
		w.Varint(p.UpdatedTS)
	},
	func(r *cache.Reader) profile {
		return profile{UserID: r.String(), DisplayName: r.String(), AvatarURL: r.String(), UpdatedTS: r.Varint()}
	})

var devicesCodec = cache.Binary(1,
	func(w *cache.Writer, ds []device) {
		w.Uvarint(uint64(len(ds)))
		for _, d := range ds {
			w.String(d.ID)
			w.String(d.DisplayName)
			w.String(d.LastSeenIP)
			w.Varint(d.LastSeenTS)
			w.Bool(d.Hidden)
		}
	},
	func(r *cache.Reader) []device {
		n := r.Count()
		if n == 0 {
			return nil
		}
		ds := make([]device, n)
		for i := range ds {
			ds[i] = device{ID: r.String(), DisplayName: r.String(), LastSeenIP: r.String(), LastSeenTS: r.Varint(), Hidden: r.Bool()}
		}
		return ds
	})

func sampleProfile() profile {
	return profile{UserID: "@alice:example.org", DisplayName: "Alice Liddell", AvatarURL: "mxc://example.org/SEsfnsuifSDFSSEF", UpdatedTS: 1_700_000_000_123}
}

func sampleDevices(n int) []device {
	ds := make([]device, n)
	for i := range ds {
		ds[i] = device{ID: "DEVICEID" + string(rune('A'+i%26)), DisplayName: "Element Desktop (Linux)", LastSeenIP: "203.0.113.42", LastSeenTS: 1_700_000_000_000 + int64(i), Hidden: i%3 == 0}
	}
	return ds
}

func roundTrip[V any](t *testing.T, c cache.Codec[V], v V) {
	t.Helper()
	b, err := c.Append([]byte("prefix"), v)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Decode(b[len("prefix"):])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, v) {
		t.Fatalf("round trip = %+v, want %+v", got, v)
	}
}

func TestCodecsRoundTrip(t *testing.T) {
	t.Run("binary profile", func(t *testing.T) { roundTrip(t, profileCodec, sampleProfile()) })
	t.Run("binary empty profile", func(t *testing.T) { roundTrip(t, profileCodec, profile{UpdatedTS: -5}) })
	t.Run("binary devices", func(t *testing.T) { roundTrip(t, devicesCodec, sampleDevices(7)) })
	t.Run("binary no devices", func(t *testing.T) { roundTrip(t, devicesCodec, nil) })
	t.Run("json profile", func(t *testing.T) { roundTrip(t, cache.JSON[profile](), sampleProfile()) })
	t.Run("json devices", func(t *testing.T) { roundTrip(t, cache.JSON[[]device](), sampleDevices(7)) })
	t.Run("writer helpers", func(t *testing.T) {
		type all struct {
			F  float64
			B  []byte
			SS []string
		}
		c := cache.Binary(3,
			func(w *cache.Writer, a all) { w.Float64(a.F); w.Blob(a.B); w.Strings(a.SS) },
			func(r *cache.Reader) all { return all{F: r.Float64(), B: r.Blob(), SS: r.Strings()} })
		roundTrip(t, c, all{F: 3.25, B: []byte{0, 1, 2}, SS: []string{"a", "", "ccc"}})
		roundTrip(t, c, all{})
		if c.ID() != "b3" {
			t.Fatalf("ID = %q", c.ID())
		}
	})
}

func TestBinaryDecodeRejectsCorruptInput(t *testing.T) {
	good, _ := devicesCodec.Append(nil, sampleDevices(3))
	tests := map[string][]byte{
		"empty":            {},
		"truncated":        good[:len(good)-3],
		"trailing bytes":   append(append([]byte(nil), good...), 0),
		"huge count":       {0xff, 0xff, 0xff, 0xff, 0x0f},
		"string too long":  {1, 0x7f, 'a'},
		"bad bool":         append(append([]byte(nil), good[:len(good)-1]...), 7),
		"unterminated var": {1, 0x80},
	}
	for name, data := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := devicesCodec.Decode(data); !errors.Is(err, cache.ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := cache.JSON[profile]().Decode([]byte("{")); !errors.Is(err, cache.ErrCorrupt) {
		t.Fatalf("json err = %v, want ErrCorrupt", err)
	}
}

func FuzzBinaryDecode(f *testing.F) {
	good, _ := devicesCodec.Append(nil, sampleDevices(2))
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := devicesCodec.Decode(data)
		if err != nil {
			return
		}
		b, err := devicesCodec.Append(nil, ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := devicesCodec.Decode(b); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
	})
}
