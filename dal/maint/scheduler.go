package maint

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// DefaultSchedule is the interval of each job when SchedulerConfig.Jobs is
// nil, following the maintenance plan: token cleanup, orphan cleanup and
// the purge daily; vacuum hourly (it only acts on tables past its
// thresholds, so checking often is cheap and keeps hot tables lean);
// reindex weekly with the index review.
func DefaultSchedule() map[string]time.Duration {
	return map[string]time.Duration{
		JobExpiredTokens: 24 * time.Hour,
		JobOrphans:       24 * time.Hour,
		JobPurgeDeleted:  24 * time.Hour,
		JobVacuum:        time.Hour,
		JobReindex:       7 * 24 * time.Hour,
	}
}

// SchedulerConfig configures a Scheduler. The zero value runs
// DefaultSchedule.
type SchedulerConfig struct {
	// Jobs maps job names to run intervals. Nil means DefaultSchedule();
	// a job with a non-positive interval is not scheduled.
	Jobs map[string]time.Duration
	// Jitter spreads runs: each wait is the interval times a random factor
	// in [1-Jitter, 1+Jitter], so instances started together do not all
	// wake at once. Default 0.1; at most 0.5 is used.
	Jitter float64
	// StartDelay bounds the random delay before each job's first run
	// (uniform in [0, min(StartDelay, interval)]). Default 1 minute.
	StartDelay time.Duration
	// Rand returns uniform floats in [0,1) for the jitter. Nil means
	// math/rand/v2. Must be safe for concurrent use.
	Rand func() float64
	// Logger receives run failures. Nil means slog.Default().
	Logger *slog.Logger
	// OnRun, when set, receives every run's result and error (on the job's
	// goroutine).
	OnRun func(Result, error)
}

// Scheduler runs a Maintainer's jobs periodically. Each job has its own
// loop, so a long job does not delay the others; the advisory lock makes
// sure that, across every process running a Scheduler against the same
// database, one job runs at most once at a time (the others' attempts are
// skipped). Safe for concurrent use; Run may be called once at a time.
type Scheduler struct {
	m   *Maintainer
	cfg SchedulerConfig
}

// NewScheduler returns a Scheduler for m.
func NewScheduler(m *Maintainer, cfg SchedulerConfig) *Scheduler {
	if cfg.Jobs == nil {
		cfg.Jobs = DefaultSchedule()
	}
	if cfg.Jitter <= 0 {
		cfg.Jitter = 0.1
	}
	if cfg.Jitter > 0.5 {
		cfg.Jitter = 0.5
	}
	if cfg.StartDelay <= 0 {
		cfg.StartDelay = time.Minute
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Scheduler{m: m, cfg: cfg}
}

// Run runs the schedule until ctx is cancelled, then waits for running jobs
// to return (they see the cancelled context) and returns nil. It fails at
// once, running nothing, with ErrUnknownJob if the schedule names an
// unknown job. Job failures are logged (and passed to OnRun) and the job is
// tried again at its next interval.
func (s *Scheduler) Run(ctx context.Context) error {
	for job := range s.cfg.Jobs {
		if _, ok := s.m.jobs[job]; !ok {
			return fmt.Errorf("maint: scheduler: %w %q", ErrUnknownJob, job)
		}
	}
	var wg sync.WaitGroup
	for job, every := range s.cfg.Jobs {
		if every <= 0 {
			continue
		}
		wg.Go(func() { s.loop(ctx, job, every) })
	}
	wg.Wait()
	return nil
}

func (s *Scheduler) loop(ctx context.Context, job string, every time.Duration) {
	wait := time.Duration(s.cfg.Rand() * float64(min(s.cfg.StartDelay, every)))
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := s.m.Run(ctx, job)
		if err != nil && ctx.Err() == nil {
			s.cfg.Logger.ErrorContext(ctx, "maint: scheduled job failed", "job", job, "error", err.Error())
		}
		if s.cfg.OnRun != nil {
			s.cfg.OnRun(res, err)
		}
		t.Reset(NextDelay(every, s.cfg.Jitter, s.cfg.Rand()))
	}
}

// NextDelay is the wait before a job's next run: every scaled by a factor
// uniform in [1-jitter, 1+jitter] as r goes over [0,1). Jitter is clamped
// to [0, 0.5]; the result is never below 1ms.
func NextDelay(every time.Duration, jitter, r float64) time.Duration {
	jitter = max(0, min(jitter, 0.5))
	r = max(0, min(r, 1))
	d := time.Duration(float64(every) * (1 - jitter + 2*jitter*r))
	return max(d, time.Millisecond)
}
