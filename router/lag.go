package router

import (
	"sort"
	"time"
)

// lsnSample says the primary's WAL insert position was lsn (and had not
// moved since it first got there) at time at.
type lsnSample struct {
	lsn LSN
	at  time.Time
}

// lsnHistory is a ring of primary position samples in increasing LSN order.
// A new sample at the same LSN as the newest only moves the newest sample's
// time forward, so an idle primary does not fill the ring and a caught-up
// replica's lag stays ~0 on an idle primary. Not safe for concurrent use
// (the router guards it with its state mutex).
type lsnHistory struct {
	buf   []lsnSample
	start int // index of the oldest sample
	n     int
}

func newLSNHistory(size int) *lsnHistory { return &lsnHistory{buf: make([]lsnSample, size)} }

func (h *lsnHistory) at(i int) *lsnSample { return &h.buf[(h.start+i)%len(h.buf)] }

// reset forgets every sample (new primary or new timeline: old positions say
// nothing about the new history).
func (h *lsnHistory) reset() { h.start, h.n = 0, 0 }

// add records that the primary was at lsn at time t. A position lower than
// the newest (a different primary, or a bug) resets the history.
func (h *lsnHistory) add(lsn LSN, t time.Time) {
	if h.n > 0 {
		last := h.at(h.n - 1)
		switch {
		case lsn == last.lsn:
			if t.After(last.at) {
				last.at = t
			}
			return
		case lsn < last.lsn:
			h.reset()
		}
	}
	if h.n == len(h.buf) {
		h.start = (h.start + 1) % len(h.buf)
		h.n--
	}
	*h.at(h.n) = lsnSample{lsn: lsn, at: t}
	h.n++
}

// latest returns the newest sample.
func (h *lsnHistory) latest() (lsnSample, bool) {
	if h.n == 0 {
		return lsnSample{}, false
	}
	return *h.at(h.n - 1), true
}

// caughtUpAt returns the latest time at which the primary was known to be at
// or before replay position r: a replica that has replayed r holds every
// write the primary had then, so its staleness now is at most now minus that
// time. ok is false when r is older than the whole history (staleness
// unknown, at least the history's span) or there is no history.
func (h *lsnHistory) caughtUpAt(r LSN) (time.Time, bool) {
	if h.n == 0 {
		return time.Time{}, false
	}
	// First sample with lsn > r; the one before it is the answer.
	i := sort.Search(h.n, func(i int) bool { return h.at(i).lsn > r })
	if i == 0 {
		return time.Time{}, false
	}
	return h.at(i - 1).at, true
}

// replicaLag is what the router derives from a replica's replay position and
// the primary's history.
type replicaLag struct {
	bytes      uint64        // primary's newest position minus replay position (0 if ahead)
	seconds    time.Duration // at probe time: how long ago the primary was at the replay position (0 when caught up)
	caughtUpAt time.Time     // see lsnHistory.caughtUpAt; zero when unknown
	known      bool          // caughtUpAt is valid
}

// computeLag derives a replica's lag at probe time probedAt from its replay
// position r.
func computeLag(h *lsnHistory, r LSN, probedAt time.Time) replicaLag {
	var lag replicaLag
	last, ok := h.latest()
	if !ok {
		return lag
	}
	if last.lsn > r {
		lag.bytes = uint64(last.lsn - r)
	}
	lag.caughtUpAt, lag.known = h.caughtUpAt(r)
	switch {
	case !lag.known:
		// Behind the whole history: report at least its span.
		lag.seconds = probedAt.Sub(h.at(0).at)
	case r >= last.lsn:
		lag.seconds = 0
	default:
		lag.seconds = max(0, probedAt.Sub(lag.caughtUpAt))
	}
	return lag
}

// staleness bounds how old a replica's data can be at time now; ok is false
// when no bound is known.
func (l replicaLag) staleness(now time.Time) (time.Duration, bool) {
	if !l.known {
		return 0, false
	}
	return max(0, now.Sub(l.caughtUpAt)), true
}
