package maint_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hsdal/hsdal/dal/maint"
)

// A homeserver process runs the scheduler next to its DAL; every instance
// may run one, the advisory locks make each job run once at a time.
func ExampleScheduler() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool, err := pgxpool.New(ctx, os.Getenv("HSDAL_PRIMARY_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	m, err := maint.New(pool, maint.Config{
		Retention: map[string]time.Duration{"room_events": 90 * 24 * time.Hour},
	})
	if err != nil {
		log.Fatal(err)
	}
	s := maint.NewScheduler(m, maint.SchedulerConfig{}) // maint.DefaultSchedule()
	go func() { _ = s.Run(ctx) }()
}

// An operator's one-off run and report (what `hsdal maint run` and
// `hsdal maint report` do).
func ExampleMaintainer_Run() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("HSDAL_PRIMARY_DSN"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	m, err := maint.New(pool, maint.Config{})
	if err != nil {
		log.Fatal(err)
	}
	res, err := m.Run(ctx, maint.JobExpiredTokens)
	if err != nil {
		log.Fatal(err) // errors.Is(err, maint.ErrStandby) when pointed at a replica
	}
	fmt.Println(res.Outcome, res.Rows(maint.ActionDeleted, "access_tokens"))

	rep, err := m.Report(ctx, maint.ReportOptions{})
	if err != nil {
		log.Fatal(err)
	}
	_ = rep.WriteText(os.Stdout)
}

func ExampleNextDelay() {
	// A daily job with the default 10% jitter waits between 21.6h and 26.4h.
	fmt.Println(maint.NextDelay(24*time.Hour, 0.1, 0), maint.NextDelay(24*time.Hour, 0.1, 1))
	// Output: 21h36m0s 26h24m0s
}
