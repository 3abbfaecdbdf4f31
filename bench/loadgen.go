package main

import (
	"context"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// op is one benchmark operation. worker identifies the calling goroutine so an
// op can keep per-worker state (a simulated user's consistency token); rng is
// that worker's own deterministic generator.
type op func(ctx context.Context, worker int, rng *rand.Rand) error

// loadResult is what a closed-loop run measured.
type loadResult struct {
	ops      int
	errors   int
	elapsed  time.Duration
	lat      []time.Duration // every successful op's latency, sorted
	firstErr error
}

func (r loadResult) opsPerSec() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ops) / r.elapsed.Seconds()
}

// percentile returns the p-th percentile (0 < p <= 100) of the latencies, by
// the nearest-rank method; 0 when nothing succeeded.
func (r loadResult) percentile(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(r.lat))+0.999999) - 1
	rank = max(0, min(rank, len(r.lat)-1))
	return r.lat[rank]
}

// runLoad runs fn from `workers` goroutines back to back until d has passed
// (or maxOps operations completed, when maxOps > 0), and reports throughput and
// latencies. Each worker's rng is seeded from seed and its index, so a run's
// key sequence is reproducible.
func runLoad(ctx context.Context, workers int, d time.Duration, maxOps int, seed uint64, fn op) loadResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type partial struct {
		lat      []time.Duration
		errors   int
		firstErr error
	}
	parts := make([]partial, workers)
	var remaining chan struct{}
	if maxOps > 0 {
		remaining = make(chan struct{}, maxOps)
		for range maxOps {
			remaining <- struct{}{}
		}
		close(remaining)
	}
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
			p := &parts[w]
			p.lat = make([]time.Duration, 0, 4096)
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if remaining != nil {
					if _, ok := <-remaining; !ok {
						return
					}
				}
				t0 := time.Now()
				err := fn(ctx, w, rng)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					p.errors++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.lat = append(p.lat, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start)}
	for _, p := range parts {
		res.lat = append(res.lat, p.lat...)
		res.errors += p.errors
		if res.firstErr == nil {
			res.firstErr = p.firstErr
		}
	}
	res.ops = len(res.lat)
	slices.Sort(res.lat)
	return res
}

// zipf draws keys in [0, n) with Zipf popularity (s = 1.1 by default): a few
// keys are hot, most are cold, as in a homeserver's token and profile lookups.
type zipf struct {
	n   uint64
	cdf []float64
}

func newZipf(n int, s float64) *zipf {
	z := &zipf{n: uint64(n), cdf: make([]float64, n)}
	var sum float64
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		z.cdf[i] = sum
	}
	for i := range z.cdf {
		z.cdf[i] /= sum
	}
	return z
}

func (z *zipf) next(rng *rand.Rand) int {
	u := rng.Float64()
	i, _ := slices.BinarySearch(z.cdf, u)
	return min(i, int(z.n)-1)
}
