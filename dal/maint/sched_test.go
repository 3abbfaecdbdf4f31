package maint_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hsdal/hsdal/dal/maint"
)

func TestSecondInstanceSkipsWhileFirstRuns(t *testing.T) {
	ctx := testCtx(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	first := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 2), maint.Config{
		OnJobStart: func(job string) {
			if job == maint.JobVacuum {
				close(entered)
				<-release
			}
		},
	})
	second := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 2), maint.Config{})

	done := make(chan error, 1)
	go func() {
		_, err := first.Run(ctx, maint.JobVacuum)
		done <- err
	}()
	<-entered
	res, err := second.Run(ctx, maint.JobVacuum)
	if err != nil {
		t.Fatalf("second instance: %v (a busy lock must not be an error)", err)
	}
	if res.Outcome != maint.Skipped {
		t.Errorf("second instance outcome = %s, want skipped", res.Outcome)
	}
	// Other jobs are not blocked by this one's lock.
	if res, err := second.Run(ctx, maint.JobExpiredTokens); err != nil || res.Outcome != maint.Done {
		t.Errorf("another job while vacuum runs: %s, %v", res.Outcome, err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Released: the second instance may run it now.
	if res, err := second.Run(ctx, maint.JobVacuum); err != nil || res.Outcome != maint.Done {
		t.Errorf("after release: %s, %v", res.Outcome, err)
	}
}

// overlapTracker records, per job, how many runs are inside their locked
// section at once, across instances.
type overlapTracker struct {
	mu       sync.Mutex
	cond     *sync.Cond
	inflight map[string]int
	maxIn    map[string]int
	runs     map[string]int
	skips    map[string]int
}

func newOverlapTracker() *overlapTracker {
	o := &overlapTracker{inflight: map[string]int{}, maxIn: map[string]int{}, runs: map[string]int{}, skips: map[string]int{}}
	o.cond = sync.NewCond(&o.mu)
	return o
}

// start is OnJobStart: it counts the run in, then holds the lock until some
// other instance has been turned away from this job (or a deadline passes),
// so the test really exercises contention rather than lucky timing.
func (o *overlapTracker) start(job string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inflight[job]++
	o.maxIn[job] = max(o.maxIn[job], o.inflight[job])
	skipsBefore := o.skips[job]
	deadline := time.Now().Add(2 * time.Second)
	timer := time.AfterFunc(2*time.Second, o.cond.Broadcast)
	defer timer.Stop()
	for o.skips[job] == skipsBefore && time.Now().Before(deadline) {
		o.cond.Wait()
	}
}

// end is OnJobEnd.
func (o *overlapTracker) end(r maint.Result) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Outcome == maint.Skipped {
		o.skips[r.Job]++
		o.cond.Broadcast()
		return
	}
	o.inflight[r.Job]--
	o.runs[r.Job]++
}

func (o *overlapTracker) enough(jobs []string, runs int) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, j := range jobs {
		if o.runs[j] < runs || o.skips[j] < 1 {
			return false
		}
	}
	return true
}

func TestTwoSchedulersNeverRunTheSameJobAtOnce(t *testing.T) {
	ctx := testCtx(t)
	tr := newOverlapTracker()
	jobs := []string{maint.JobExpiredTokens, maint.JobVacuum, maint.JobOrphans}
	schedule := map[string]time.Duration{}
	for _, j := range jobs {
		schedule[j] = 5 * time.Millisecond
	}
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failures []error
	for range 2 {
		m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 4), maint.Config{
			OnJobStart: tr.start, OnJobEnd: tr.end,
			// Keep the jobs light: nothing in this database is past these.
			DefaultRetention: 1000 * 24 * time.Hour,
		})
		s := maint.NewScheduler(m, maint.SchedulerConfig{
			Jobs: schedule, StartDelay: time.Millisecond,
			OnRun: func(_ maint.Result, err error) {
				if err != nil && runCtx.Err() == nil {
					failMu.Lock()
					failures = append(failures, err)
					failMu.Unlock()
				}
			},
		})
		wg.Go(func() {
			if err := s.Run(runCtx); err != nil {
				t.Error(err)
			}
		})
	}
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	for !tr.enough(jobs, 3) && time.Now().Before(deadline) {
		<-tick.C
	}
	tick.Stop()
	cancel()
	tr.mu.Lock()
	tr.cond.Broadcast()
	tr.mu.Unlock()
	wg.Wait()

	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, j := range jobs {
		if tr.maxIn[j] > 1 {
			t.Errorf("job %s ran %d times at once", j, tr.maxIn[j])
		}
		if tr.runs[j] < 3 || tr.skips[j] < 1 {
			t.Errorf("job %s: %d runs, %d skips; want contention (>= 3 runs, >= 1 skip)", j, tr.runs[j], tr.skips[j])
		}
	}
	for _, err := range failures {
		t.Errorf("scheduled run failed: %v", err)
	}
}

func TestSchedulerRejectsUnknownJob(t *testing.T) {
	m := mustMaintainer(t, mustPool(t, cluster.PrimaryDSN(), 2), maint.Config{})
	s := maint.NewScheduler(m, maint.SchedulerConfig{Jobs: map[string]time.Duration{"defrag": time.Hour}})
	if err := s.Run(testCtx(t)); !errors.Is(err, maint.ErrUnknownJob) {
		t.Errorf("Run = %v, want ErrUnknownJob", err)
	}
}

func TestNextDelay(t *testing.T) {
	tests := []struct {
		name   string
		every  time.Duration
		jitter float64
		r      float64
		want   time.Duration
	}{
		{"no jitter", time.Hour, 0, 0.7, time.Hour},
		{"lowest", time.Hour, 0.1, 0, 54 * time.Minute},
		{"middle", time.Hour, 0.1, 0.5, time.Hour},
		{"highest", time.Hour, 0.1, 1, 66 * time.Minute},
		{"jitter clamped to 0.5", time.Hour, 3, 0, 30 * time.Minute},
		{"negative jitter is none", time.Hour, -1, 0, time.Hour},
		{"never below 1ms", 0, 0.1, 0, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := maint.NextDelay(tc.every, tc.jitter, tc.r); got != tc.want {
				t.Errorf("NextDelay(%s, %g, %g) = %s, want %s", tc.every, tc.jitter, tc.r, got, tc.want)
			}
		})
	}
}

func TestDefaultScheduleCoversEveryJob(t *testing.T) {
	d := maint.DefaultSchedule()
	for _, j := range maint.Jobs() {
		if d[j] <= 0 {
			t.Errorf("job %s has no default interval", j)
		}
	}
}
