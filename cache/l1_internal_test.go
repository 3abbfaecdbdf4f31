package cache

import (
	"strconv"
	"testing"
	"time"
)

// Pure-logic tests of the L1's rules, with a manual clock.

type manualClock struct{ t time.Time }

func (c *manualClock) now() time.Time { return c.t }

func newTestL1(maxEntries, maxBytes int) (*l1, *manualClock) {
	clk := &manualClock{t: time.Unix(1000, 0)}
	l := newL1(L1Config{TTL: time.Second, MaxEntries: maxEntries, MaxBytes: maxBytes}, clk.now, nil)
	l.setTrusted(true, "test")
	return l, clk
}

func epochOne(int) uint64 { return 1 }

func TestL1PutGetRules(t *testing.T) {
	k := l1Key{"kind", "id"}
	tests := []struct {
		name   string
		setup  func(l *l1, clk *manualClock) l1Snap // returns the snap to put with
		pos    uint64
		token  uint64
		wantOK bool
	}{
		{"fresh put is served", func(l *l1, _ *manualClock) l1Snap { return l.snap() }, 10, 0, true},
		{"token below pos is covered", func(l *l1, _ *manualClock) l1Snap { return l.snap() }, 10, 9, true},
		{"token at pos is not covered", func(l *l1, _ *manualClock) l1Snap { return l.snap() }, 10, 10, false},
		{"put after a covering invalidation is refused", func(l *l1, _ *manualClock) l1Snap {
			s := l.snap()
			l.invalidate(k, 10)
			return s
		}, 10, 0, false},
		{"put above the invalidation is kept", func(l *l1, _ *manualClock) l1Snap {
			s := l.snap()
			l.invalidate(k, 9)
			return s
		}, 10, 0, true},
		{"put after a flush is refused", func(l *l1, _ *manualClock) l1Snap {
			s := l.snap()
			l.flush("test")
			return s
		}, 10, 0, false},
		{"put validated while untrusted is refused", func(l *l1, _ *manualClock) l1Snap {
			l.setTrusted(false, "lost")
			s := l.snap()
			l.setTrusted(true, "back")
			return s
		}, 10, 0, false},
		{"put across a lost and regained subscription is refused", func(l *l1, _ *manualClock) l1Snap {
			s := l.snap()
			l.setTrusted(false, "lost")
			l.setTrusted(true, "back")
			return s
		}, 10, 0, false},
		{"put older than the insert window is refused", func(l *l1, clk *manualClock) l1Snap {
			s := l.snap()
			clk.t = clk.t.Add(l1InsertWindow + time.Millisecond)
			return s
		}, 10, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clk := newTestL1(10, 1<<20)
			s := tt.setup(l, clk)
			l.put(k, 0, []byte("v"), nil, tt.pos, 1, false, s)
			if _, ok := l.get(k, tt.token, epochOne); ok != tt.wantOK {
				t.Fatalf("get ok = %v, want %v", ok, tt.wantOK)
			}
		})
	}
}

func TestL1ServesNothingWhileUntrusted(t *testing.T) {
	l, _ := newTestL1(10, 1<<20)
	k := l1Key{"kind", "id"}
	l.put(k, 0, []byte("v"), nil, 10, 1, false, l.snap())
	l.setTrusted(false, "lost")
	if _, ok := l.get(k, 0, epochOne); ok {
		t.Fatal("served while untrusted")
	}
	l.setTrusted(true, "back")
	if _, ok := l.get(k, 0, epochOne); ok {
		t.Fatal("entry survived the loss of the subscription")
	}
}

func TestL1ExpiryAndEpoch(t *testing.T) {
	l, clk := newTestL1(10, 1<<20)
	k := l1Key{"kind", "id"}
	l.put(k, 0, []byte("v"), nil, 10, 1, false, l.snap())
	if _, ok := l.get(k, 0, func(int) uint64 { return 2 }); ok {
		t.Fatal("entry of an older epoch served")
	}
	l.put(k, 0, []byte("v"), nil, 10, 1, false, l.snap())
	clk.t = clk.t.Add(time.Second - time.Nanosecond)
	if _, ok := l.get(k, 0, epochOne); !ok {
		t.Fatal("entry expired early")
	}
	clk.t = clk.t.Add(time.Nanosecond)
	if _, ok := l.get(k, 0, epochOne); ok {
		t.Fatal("entry served at its expiry")
	}
}

func TestL1Bounds(t *testing.T) {
	t.Run("entries", func(t *testing.T) {
		l, _ := newTestL1(3, 1<<20)
		for i := range 5 {
			l.put(l1Key{"k", strconv.Itoa(i)}, 0, []byte("v"), nil, 10, 1, false, l.snap())
		}
		if n, _ := l.size(); n != 3 {
			t.Fatalf("entries = %d, want 3", n)
		}
		// Least recently used went first; a get refreshes.
		for _, id := range []string{"0", "1"} {
			if _, ok := l.get(l1Key{"k", id}, 0, epochOne); ok {
				t.Fatalf("entry %s not evicted", id)
			}
		}
		l.get(l1Key{"k", "2"}, 0, epochOne)
		l.put(l1Key{"k", "5"}, 0, []byte("v"), nil, 10, 1, false, l.snap())
		if _, ok := l.get(l1Key{"k", "2"}, 0, epochOne); !ok {
			t.Fatal("recently used entry evicted")
		}
		if _, ok := l.get(l1Key{"k", "3"}, 0, epochOne); ok {
			t.Fatal("least recently used entry kept")
		}
	})
	t.Run("bytes", func(t *testing.T) {
		per := len("k") + 1 + 100 + l1EntryOverhead
		l, _ := newTestL1(100, 3*per)
		for i := range 5 {
			l.put(l1Key{"k", strconv.Itoa(i)}, 0, make([]byte, 100), nil, 10, 1, false, l.snap())
		}
		if n, b := l.size(); n != 3 || b != 3*per {
			t.Fatalf("size = %d entries, %d bytes; want 3, %d", n, b, 3*per)
		}
		l.put(l1Key{"k", "big"}, 0, make([]byte, 4*per), nil, 10, 1, false, l.snap())
		if _, ok := l.get(l1Key{"k", "big"}, 0, epochOne); ok {
			t.Fatal("value larger than MaxBytes stored")
		}
	})
	t.Run("markers", func(t *testing.T) {
		l, clk := newTestL1(1, 1<<20) // room for 4*1+1024 markers
		before := l.flushes.Load()
		for i := range l.maxMarkers {
			l.invalidate(l1Key{"k", strconv.Itoa(i)}, 5)
		}
		if l.flushes.Load() != before {
			t.Fatal("flushed before the marker bound")
		}
		l.invalidate(l1Key{"k", "one more"}, 5)
		if l.flushes.Load() != before+1 || len(l.markers) != 0 {
			t.Fatalf("over the marker bound: flushes %d, markers %d", l.flushes.Load()-before, len(l.markers))
		}
		// Markers older than the insert window are pruned.
		l.invalidate(l1Key{"k", "a"}, 5)
		clk.t = clk.t.Add(l1InsertWindow + time.Second)
		l.invalidate(l1Key{"k", "b"}, 5)
		if _, ok := l.markers[l1Key{"k", "a"}]; ok || len(l.markers) != 1 {
			t.Fatalf("markers after the window: %d", len(l.markers))
		}
	})
}

func TestInvalidationMessageRoundTrip(t *testing.T) {
	keys := []Key{{"profile", "@a:b"}, {"room", ""}, {"x", "id with \x00 and ünïcode"}}
	pos, got, ok := parseInvalidation(string(appendInvalidation(nil, 1<<60+7, keys)))
	if !ok || pos != 1<<60+7 || len(got) != len(keys) {
		t.Fatalf("parse = %d %v %v", pos, got, ok)
	}
	for i := range keys {
		if got[i] != keys[i] {
			t.Fatalf("key %d = %v, want %v", i, got[i], keys[i])
		}
	}
	for _, bad := range []string{"", "i", "i1234567", "f", "i12345678\x05ab", "x12345678"} {
		if _, _, ok := parseInvalidation(bad); ok {
			t.Fatalf("parsed malformed message %q", bad)
		}
	}
}
