package router

import (
	"sync"
	"sync/atomic"
	"time"
)

// retryBudget lets retries be at most ratio of requests, plus minPerSec
// retries per second regardless of traffic. Each request deposits ratio of
// a token, each retry withdraws a whole one; the balance is capped so a long
// quiet period cannot bank a storm. Safe for concurrent use.
type retryBudget struct {
	ratioMilli int64 // milli-tokens deposited per request
	capMilli   int64
	minPerSec  float64
	now        func() time.Time

	balance atomic.Int64 // milli-tokens

	mu         sync.Mutex
	lastRefill time.Time
}

func newRetryBudget(ratio, minPerSec float64, now func() time.Time) *retryBudget {
	b := &retryBudget{minPerSec: minPerSec, now: now}
	if ratio > 0 {
		b.ratioMilli = int64(ratio*1000 + 0.5)
		if b.ratioMilli == 0 {
			b.ratioMilli = 1
		}
	}
	// The cap: ten seconds of the floor allowance, at least 10 retries.
	b.capMilli = int64(max(10, minPerSec*10) * 1000)
	b.lastRefill = now()
	if ratio > 0 {
		b.balance.Store(int64(minPerSec * 1000)) // a second's floor to start with
	}
	return b
}

// deposit records one request.
func (b *retryBudget) deposit() {
	if b.ratioMilli == 0 {
		return
	}
	for {
		cur := b.balance.Load()
		if cur >= b.capMilli {
			return
		}
		if b.balance.CompareAndSwap(cur, min(cur+b.ratioMilli, b.capMilli)) {
			return
		}
	}
}

// withdraw reports whether one retry may run now, and takes it if so.
func (b *retryBudget) withdraw() bool {
	if b.ratioMilli == 0 {
		return false // retries disabled
	}
	b.mu.Lock()
	now := b.now()
	if el := now.Sub(b.lastRefill); el > 0 {
		add := int64(el.Seconds() * b.minPerSec * 1000)
		if add > 0 {
			b.lastRefill = now
			for {
				cur := b.balance.Load()
				if b.balance.CompareAndSwap(cur, min(cur+add, max(cur, b.capMilli))) {
					break
				}
			}
		}
	}
	b.mu.Unlock()
	for {
		cur := b.balance.Load()
		if cur < 1000 {
			return false
		}
		if b.balance.CompareAndSwap(cur, cur-1000) {
			return true
		}
	}
}
