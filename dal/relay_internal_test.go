package dal

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hsdal/hsdal/router"
)

func TestParseSnapshotXIP(t *testing.T) {
	tests := []struct {
		in   string
		want []uint64
		bad  bool
	}{
		{in: "100:105:", want: nil},
		{in: "100:105:101,103", want: []uint64{101, 103}},
		{in: "5:5:", want: nil},
		{in: "garbage", bad: true},
		{in: "1:2:x", bad: true},
	}
	for _, tc := range tests {
		got, err := parseSnapshotXIP(tc.in)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("parseSnapshotXIP(%q) = %v, %v", tc.in, got, err)
		}
	}
}

// A candidate is released only once none of the transactions in progress at
// its snapshot is still running.
func TestReleaseCandidates(t *testing.T) {
	var pending []wmCandidate
	steps := []struct {
		name    string
		c       wmCandidate
		running []uint64
		want    router.LSN
		left    int
	}{
		{"nothing in progress: released at once", wmCandidate{p: 10}, nil, 10, 0},
		{"a writer in progress holds it", wmCandidate{p: 20, xip: []uint64{7}}, []uint64{7}, 0, 1},
		{"a later one waits behind the same writer", wmCandidate{p: 30, xip: []uint64{7, 8}}, []uint64{7, 8}, 0, 2},
		{"the first writer ended: the first is released", wmCandidate{p: 40, xip: []uint64{8}}, []uint64{8}, 20, 2},
		{"all ended: the newest position wins", wmCandidate{p: 50}, nil, 50, 0},
	}
	for _, st := range steps {
		var w router.LSN
		pending, w = releaseCandidates(pending, st.c, st.running)
		if w != st.want || len(pending) != st.left {
			t.Fatalf("%s: released %d with %d left, want %d with %d left", st.name, w, len(pending), st.want, st.left)
		}
	}
	// The list is bounded.
	pending = nil
	for i := range maxCandidates + 10 {
		pending, _ = releaseCandidates(pending, wmCandidate{p: router.LSN(i + 1), xip: []uint64{1}}, []uint64{1})
	}
	if len(pending) != maxCandidates || pending[0].p != 11 {
		t.Fatalf("%d candidates kept, oldest %d", len(pending), pending[0].p)
	}
}

func TestWatchTimelineBumpsOnChange(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	tl, calls := uint32(1), 0
	bumps, fail := 0, 1 // the first bump fails and is retried
	timeline := func() uint32 {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return tl
	}
	bump := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		bumps++
		if fail > 0 {
			fail--
			return errors.New("redis down")
		}
		return nil
	}
	done := make(chan struct{})
	go func() {
		watchTimeline(ctx, time.Millisecond, timeline, bump, slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	// set changes the timeline and waits until the watch looked at it a
	// few times.
	set := func(v uint32) {
		mu.Lock()
		tl = v
		seen := calls
		mu.Unlock()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := calls
			mu.Unlock()
			if n >= seen+3 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the watch stopped looking")
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	get := func() int { mu.Lock(); defer mu.Unlock(); return bumps }
	set(0) // unknown: ignored
	set(1)
	if n := get(); n != 0 {
		t.Fatalf("%d bumps without a timeline change", n)
	}
	set(2)
	set(2)
	if n := get(); n != 2 {
		t.Fatalf("bumps = %d after one change, want 2 (one failed, one retried)", n)
	}
	cancel()
	<-done
}
