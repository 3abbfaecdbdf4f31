package cache

import (
	"context"
	"sync"
	"sync/atomic"
)

// flight collapses concurrent fetches of one key within a process: the first
// caller runs fn, later callers wait for its result (or their own ctx).
// Unlike x/sync/singleflight, waiters honour their context, and a panicking
// fn reaches its own caller as a panic and the waiters as ErrLoaderPanicked.
type flight[V any] struct {
	mu    sync.Mutex
	calls map[string]*flightCall[V]
}

type flightCall[V any] struct {
	done chan struct{}
	res  result[V]
	err  error
}

func (g *flight[V]) do(ctx context.Context, key string, waiting *atomic.Int64, fn func(context.Context) (result[V], error)) (r result[V], shared bool, err error) {
	g.mu.Lock()
	if c, ok := g.calls[key]; ok {
		g.mu.Unlock()
		waiting.Add(1)
		defer waiting.Add(-1)
		select {
		case <-c.done:
			return c.res, true, c.err
		case <-ctx.Done():
			return r, true, ctx.Err()
		}
	}
	if g.calls == nil {
		g.calls = make(map[string]*flightCall[V])
	}
	c := &flightCall[V]{done: make(chan struct{})}
	g.calls[key] = c
	g.mu.Unlock()

	returned := false
	defer func() {
		if !returned {
			c.err = ErrLoaderPanicked
		}
		g.mu.Lock()
		delete(g.calls, key)
		g.mu.Unlock()
		close(c.done)
	}()
	c.res, c.err = fn(ctx)
	returned = true
	return c.res, false, c.err
}
