package cache

import (
	"sync"
	"sync/atomic"
	"time"
)

// l1 is the in-process tier: an LRU bounded in entries and bytes whose
// entries carry the position they were filled at and the epoch of their
// shard, exactly like Redis entries.
//
// Safety against a value validated in Redis just before an invalidation and
// put here just after the invalidation's message was processed: every
// invalidation leaves a per-key marker for l1InsertWindow, and put refuses a
// value whose position does not exceed the marker. Safety against lost
// messages: the tier is trusted only while the pub/sub subscription is up;
// every loss and every (re)subscription flushes it and bumps gen, and put
// refuses a value validated under another gen (or while untrusted).
type l1 struct {
	cfg L1Config
	now func() time.Time

	// state is gen<<1 | trusted; written under mu, read atomically by snap.
	state atomic.Uint64
	// wm is the watermark as received through the subscription, after every
	// invalidation message published before it (0 after a flush).
	wm atomic.Uint64

	mu         sync.Mutex
	entries    map[l1Key]*l1Entry
	lru        l1Entry // sentinel: lru.next is the most recently used
	bytes      int
	markers    map[l1Key]l1Marker
	markerQ    []l1MarkerAt
	maxMarkers int

	hits, misses, flushes atomic.Uint64
	onFlush               func(reason string)
}

type l1Key struct{ kind, id string }

type l1Entry struct {
	key        l1Key
	payload    []byte
	value      any // the decoded value, for entities that share values (nil otherwise)
	pos, epoch uint64
	shard      int
	negative   bool
	expires    time.Time
	size       int
	prev, next *l1Entry
}

type l1Marker struct {
	pos uint64
	at  time.Time
}

type l1MarkerAt struct {
	key l1Key
	at  time.Time
}

// l1Snap is what a reader records before the Redis operation that validates a
// value, and presents to put.
type l1Snap struct {
	state uint64
	at    time.Time
}

// l1Hit is a copy of an entry's fields; payload is shared and immutable.
type l1Hit struct {
	payload  []byte
	value    any
	pos      uint64
	negative bool
}

const l1EntryOverhead = 96

func newL1(cfg L1Config, now func() time.Time, onFlush func(string)) *l1 {
	l := &l1{
		cfg:        cfg,
		now:        now,
		entries:    make(map[l1Key]*l1Entry),
		markers:    make(map[l1Key]l1Marker),
		maxMarkers: 4*cfg.MaxEntries + 1024,
		onFlush:    onFlush,
	}
	l.lru.next, l.lru.prev = &l.lru, &l.lru
	return l
}

func (l *l1) snap() l1Snap { return l1Snap{state: l.state.Load(), at: l.now()} }

func (l *l1) trusted() bool { return l.state.Load()&1 == 1 }

// get returns the entry for k if it is trusted, unexpired, of the shard's
// current epoch and filled at a position that covers token (or token is below
// the watermark).
func (l *l1) get(k l1Key, token uint64, epochOf func(shard int) uint64) (l1Hit, bool) {
	if !l.trusted() {
		l.misses.Add(1)
		return l1Hit{}, false
	}
	now := l.now()
	l.mu.Lock()
	e, ok := l.entries[k]
	if ok && (!now.Before(e.expires) || e.epoch != epochOf(e.shard)) {
		l.removeLocked(e)
		ok = false
	}
	if !ok || !covers(e.pos, token) && token >= l.wm.Load() {
		l.mu.Unlock()
		l.misses.Add(1)
		return l1Hit{}, false
	}
	l.moveFrontLocked(e)
	h := l1Hit{payload: e.payload, value: e.value, pos: e.pos, negative: e.negative}
	l.mu.Unlock()
	l.hits.Add(1)
	return h, true
}

// put stores a value validated in Redis under s. It is dropped if the tier was
// flushed or untrusted since s, if s is older than l1InsertWindow, if an
// invalidation processed since covers pos, or if it does not fit.
func (l *l1) put(k l1Key, shard int, payload []byte, value any, pos, epoch uint64, negative bool, s l1Snap) {
	size := len(k.kind) + len(k.id) + len(payload) + l1EntryOverhead
	if s.state&1 == 0 || size > l.cfg.MaxBytes {
		return
	}
	now := l.now()
	if now.Sub(s.at) > l1InsertWindow {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state.Load() != s.state {
		return
	}
	if m, ok := l.markers[k]; ok && pos <= m.pos {
		return
	}
	if old, ok := l.entries[k]; ok {
		if old.epoch == epoch && old.pos >= pos && now.Before(old.expires) {
			return
		}
		l.removeLocked(old)
	}
	e := &l1Entry{key: k, payload: payload, value: value, pos: pos, epoch: epoch, shard: shard, negative: negative,
		expires: now.Add(l.cfg.TTL), size: size}
	l.entries[k] = e
	l.bytes += size
	e.next, e.prev = l.lru.next, &l.lru
	l.lru.next.prev = e
	l.lru.next = e
	for len(l.entries) > l.cfg.MaxEntries || l.bytes > l.cfg.MaxBytes {
		l.removeLocked(l.lru.prev)
	}
}

// invalidate records that a write at pos changed k: the entry goes unless it
// was filled above pos, and later puts at or below pos are refused.
func (l *l1) invalidate(k l1Key, pos uint64) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.entries[k]; ok && e.pos <= pos {
		l.removeLocked(e)
	}
	if m, ok := l.markers[k]; ok && m.pos >= pos {
		pos = m.pos
	}
	l.markers[k] = l1Marker{pos: pos, at: now}
	l.markerQ = append(l.markerQ, l1MarkerAt{key: k, at: now})
	// Prune markers no put can still need.
	i := 0
	for ; i < len(l.markerQ) && now.Sub(l.markerQ[i].at) > l1InsertWindow; i++ {
		q := l.markerQ[i]
		if m, ok := l.markers[q.key]; ok && m.at.Equal(q.at) {
			delete(l.markers, q.key)
		}
	}
	if i > 0 {
		l.markerQ = append(l.markerQ[:0], l.markerQ[i:]...)
	}
	if len(l.markers) > l.maxMarkers {
		// Too many recent invalidations to track one by one: forget them
		// all, which is safe only together with a flush and a new gen.
		l.flushLocked("markers")
	}
}

// flush drops every entry and invalidates every pending put, keeping the
// trust state.
func (l *l1) flush(reason string) {
	l.mu.Lock()
	l.flushLocked(reason)
	l.mu.Unlock()
}

// setTrusted flushes and then sets the trust state.
func (l *l1) setTrusted(trusted bool, reason string) {
	l.mu.Lock()
	l.flushLocked(reason)
	st := l.state.Load()
	if trusted {
		st |= 1
	} else {
		st &^= 1
	}
	l.state.Store(st)
	l.mu.Unlock()
}

// raiseWatermark records a watermark message.
func (l *l1) raiseWatermark(w uint64) {
	l.mu.Lock()
	if w > l.wm.Load() {
		l.wm.Store(w)
	}
	l.mu.Unlock()
}

func (l *l1) flushLocked(reason string) {
	st := l.state.Load()
	l.state.Store(st + 2) // next gen, same trust bit
	l.wm.Store(0)
	clear(l.entries)
	clear(l.markers)
	l.markerQ = l.markerQ[:0]
	l.lru.next, l.lru.prev = &l.lru, &l.lru
	l.bytes = 0
	l.flushes.Add(1)
	if l.onFlush != nil {
		l.onFlush(reason)
	}
}

func (l *l1) removeLocked(e *l1Entry) {
	e.prev.next = e.next
	e.next.prev = e.prev
	e.prev, e.next = nil, nil
	delete(l.entries, e.key)
	l.bytes -= e.size
}

func (l *l1) moveFrontLocked(e *l1Entry) {
	if l.lru.next == e {
		return
	}
	e.prev.next = e.next
	e.next.prev = e.prev
	e.next, e.prev = l.lru.next, &l.lru
	l.lru.next.prev = e
	l.lru.next = e
}

func (l *l1) size() (entries, bytes int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries), l.bytes
}

// covers reports whether data read at pos includes every write the token
// covers: writes at position < pos are included, and token 0 requires
// nothing.
func covers(pos, token uint64) bool { return token == 0 || pos > token }
