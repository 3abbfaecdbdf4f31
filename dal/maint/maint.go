package maint

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// Job names.
const (
	JobExpiredTokens = "expired_tokens"
	JobOrphans       = "orphans"
	JobPurgeDeleted  = "purge_deleted"
	JobVacuum        = "vacuum"
	JobReindex       = "reindex"
)

// Errors returned by this package; test them with errors.Is.
var (
	// ErrStandby means the connection reached a hot standby (a server in
	// recovery). Maintenance writes, VACUUM, ANALYZE and REINDEX are refused
	// there; run them against the primary.
	ErrStandby = errors.New("maint: the server is a hot standby (in recovery); maintenance runs only on the primary")
	// ErrUnknownJob means a job name is not one of the Job* constants.
	ErrUnknownJob = errors.New("maint: unknown job")
)

// Outcome says how a job run ended when it returned no error.
type Outcome string

const (
	// Done means the job ran to completion on this instance.
	Done Outcome = "done"
	// Skipped means another instance was running the same job (its advisory
	// lock was held), so this run did nothing.
	Skipped Outcome = "skipped"
)

// Action kinds recorded in Result.Actions.
const (
	ActionDeleted   = "deleted"   // rows deleted
	ActionScrubbed  = "scrubbed"  // rows whose personal columns were cleared
	ActionSetNull   = "set_null"  // dangling references set to NULL
	ActionFound     = "found"     // orphans found (before any repair)
	ActionReported  = "reported"  // orphans left alone: only an operator may decide
	ActionVacuumed  = "vacuumed"  // table vacuumed
	ActionFrozen    = "frozen"    // table vacuumed with FREEZE
	ActionReindexed = "reindexed" // index rebuilt concurrently
	ActionFailed    = "failed"    // one object failed; the job went on with the others
)

// Action is one thing a job did (or found) on one table.
type Action struct {
	// Kind is one of the Action* constants.
	Kind string `json:"kind"`
	// Table is the table acted on.
	Table string `json:"table"`
	// Object is the index or constraint involved, when there is one.
	Object string `json:"object,omitempty"`
	// Rows is how many rows were affected or found (0 for VACUUM/REINDEX).
	Rows int64 `json:"rows"`
	// Detail is a human sentence with the measurements behind the action.
	Detail string `json:"detail,omitempty"`
}

// Result is the outcome of one job run.
type Result struct {
	// Job is the job's name.
	Job string `json:"job"`
	// Outcome is Done or Skipped.
	Outcome Outcome `json:"outcome"`
	// Started is when the run began (Config.Now).
	Started time.Time `json:"started"`
	// Duration is how long the run took.
	Duration time.Duration `json:"duration_ns"`
	// Actions lists what the job did, in order.
	Actions []Action `json:"actions,omitempty"`
}

// Rows sums Rows over the actions of the given kind, optionally restricted to
// one table ("" means every table).
func (r Result) Rows(kind, table string) int64 {
	var n int64
	for _, a := range r.Actions {
		if a.Kind == kind && (table == "" || a.Table == table) {
			n += a.Rows
		}
	}
	return n
}

// Has reports whether some action of the kind touched object (an index or
// constraint name) or, when object is "", table.
func (r Result) Has(kind, tableOrObject string) bool {
	for _, a := range r.Actions {
		if a.Kind == kind && (a.Object == tableOrObject || a.Table == tableOrObject) {
			return true
		}
	}
	return false
}

// BloatMethod selects how index bloat is measured.
type BloatMethod string

const (
	// BloatAuto uses pgstattuple's pgstatindex() when the extension is
	// installed in the database (it reads the whole index: exact, costs
	// I/O), and BloatEstimate otherwise. The default.
	BloatAuto BloatMethod = ""
	// BloatPgstattuple requires the pgstattuple extension.
	BloatPgstattuple BloatMethod = "pgstattuple"
	// BloatEstimate estimates from planner statistics only (no index read):
	// the expected size of a freshly built B-tree holding pg_class.reltuples
	// entries of the average key width from pg_stats, compared with the
	// index's actual pages. Cheap; needs recent ANALYZE; unavailable for
	// expression indexes.
	BloatEstimate BloatMethod = "estimate"
)

// Config configures a Maintainer. The zero value means every documented
// default.
type Config struct {
	// BatchSize is the most rows one statement deletes or updates (and the
	// keyset chunk a scan walks). Default 1000.
	BatchSize int
	// BatchPause is slept between batches to leave I/O to the application.
	// Default 0.
	BatchPause time.Duration
	// LockTimeout is set as lock_timeout on the job's connection, so no job
	// statement waits long for (or makes others queue behind) a lock.
	// Default 5s.
	LockTimeout time.Duration

	// TokenGrace keeps tokens for this long past their expiry before
	// expired_tokens deletes them. Default 0.
	TokenGrace time.Duration

	// Retention is how long soft-deleted rows of each table stay restorable
	// before purge_deleted removes them, by table name (access_tokens,
	// refresh_tokens, devices, room_events, room_aliases, private_messages,
	// rooms, private_sessions, users). Tables not in the map get
	// DefaultRetention. A negative value never purges that table.
	Retention map[string]time.Duration
	// DefaultRetention is the retention of tables missing from Retention.
	// Default 30 days.
	DefaultRetention time.Duration

	// Tables restricts vacuum and reindex to these tables of the current
	// schema. Nil means every table of the schema: the thresholds below pick
	// the hot ones.
	Tables []string
	// VacuumDeadRatio is the dead-tuple ratio n_dead/(n_live+n_dead) above
	// which vacuum runs VACUUM (ANALYZE) on a table. Default 0.1 (below
	// autovacuum's default 0.2, so busy tables are cleaned before
	// autovacuum would).
	VacuumDeadRatio float64
	// VacuumMinDeadTuples is the fewest dead tuples worth a VACUUM. Default
	// 1000.
	VacuumMinDeadTuples int64
	// FreezeAge is the age(relfrozenxid) above which vacuum runs
	// VACUUM (FREEZE, ANALYZE) on a table, ahead of the anti-wraparound
	// autovacuum (autovacuum_freeze_max_age defaults to 200 million).
	// Default 150 million; negative disables.
	FreezeAge int64

	// ReindexBloatRatio is the estimated bloat (wasted fraction of the
	// index's pages) above which reindex rebuilds an index. Default 0.4.
	ReindexBloatRatio float64
	// ReindexMinSize skips smaller indexes (bytes). Default 1 MiB; negative
	// means no minimum.
	ReindexMinSize int64
	// BloatMethod selects the bloat measurement. Default BloatAuto.
	BloatMethod BloatMethod

	// Now is the clock for expiry and retention cutoffs (compared with the
	// BIGINT Unix-millisecond columns). Nil means time.Now.
	Now func() time.Time
	// Logger receives one record per job run and per failure. Nil means
	// slog.Default().
	Logger *slog.Logger
	// TracerProvider receives a span per job run. Nil means no tracing.
	TracerProvider trace.TracerProvider
	// MeterProvider receives hsdal.maint.job.runs, hsdal.maint.job.duration
	// and hsdal.maint.rows. Nil means no metrics.
	MeterProvider metric.MeterProvider

	// OnJobStart, when set, is called after a job took its advisory lock and
	// before it does any work, on the job's goroutine.
	OnJobStart func(job string)
	// OnJobEnd, when set, is called after every run that returned no
	// error, skipped ones included, before the lock is released (so an
	// observer never sees two overlapping runs of one job).
	OnJobEnd func(Result)
}

func (c Config) withDefaults() Config {
	if c.BatchSize <= 0 {
		c.BatchSize = 1000
	}
	if c.LockTimeout <= 0 {
		c.LockTimeout = 5 * time.Second
	}
	if c.DefaultRetention == 0 {
		c.DefaultRetention = 30 * 24 * time.Hour
	}
	if c.VacuumDeadRatio <= 0 {
		c.VacuumDeadRatio = 0.1
	}
	if c.VacuumMinDeadTuples <= 0 {
		c.VacuumMinDeadTuples = 1000
	}
	if c.FreezeAge == 0 {
		c.FreezeAge = 150_000_000
	}
	if c.ReindexBloatRatio <= 0 {
		c.ReindexBloatRatio = 0.4
	}
	if c.ReindexMinSize == 0 {
		c.ReindexMinSize = 1 << 20
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.TracerProvider == nil {
		c.TracerProvider = tracenoop.NewTracerProvider()
	}
	if c.MeterProvider == nil {
		c.MeterProvider = metricnoop.NewMeterProvider()
	}
	return c
}

// retention returns the retention of table (negative: never purge).
func (c Config) retention(table string) time.Duration {
	if d, ok := c.Retention[table]; ok && d != 0 {
		return d
	}
	return c.DefaultRetention
}

// Maintainer runs maintenance jobs and reports against one primary. It is
// safe for concurrent use; runs of the same job (from this or any other
// process) are serialised by the job's advisory lock.
type Maintainer struct {
	pool *pgxpool.Pool
	cfg  Config

	tracer   trace.Tracer
	runs     metric.Int64Counter
	duration metric.Float64Histogram
	rows     metric.Int64Counter

	jobs map[string]jobFunc
}

// jobFunc does a job's work on the job's dedicated connection, appending
// actions to res.
type jobFunc func(ctx context.Context, conn *pgx.Conn, res *Result) error

// New returns a Maintainer that works through pool, which must reach the
// primary (every call checks, and refuses a standby with ErrStandby). Job
// runs take a dedicated connection out of the pool for their duration; the
// pool makes a replacement when it needs one. New fails only when
// creating the metric instruments fails.
func New(pool *pgxpool.Pool, cfg Config) (*Maintainer, error) {
	cfg = cfg.withDefaults()
	m := &Maintainer{pool: pool, cfg: cfg}
	m.tracer = cfg.TracerProvider.Tracer("github.com/hsdal/hsdal/dal/maint")
	meter := cfg.MeterProvider.Meter("github.com/hsdal/hsdal/dal/maint")
	var err error
	if m.runs, err = meter.Int64Counter("hsdal.maint.job.runs",
		metric.WithDescription("Maintenance job runs by job and outcome (done, skipped, failed).")); err != nil {
		return nil, fmt.Errorf("maint: metrics: %w", err)
	}
	if m.duration, err = meter.Float64Histogram("hsdal.maint.job.duration",
		metric.WithDescription("Duration of maintenance job runs."), metric.WithUnit("s")); err != nil {
		return nil, fmt.Errorf("maint: metrics: %w", err)
	}
	if m.rows, err = meter.Int64Counter("hsdal.maint.rows",
		metric.WithDescription("Rows affected or found by maintenance jobs, by job, table and kind.")); err != nil {
		return nil, fmt.Errorf("maint: metrics: %w", err)
	}
	m.jobs = map[string]jobFunc{
		JobExpiredTokens: m.expiredTokens,
		JobOrphans:       m.orphans,
		JobPurgeDeleted:  m.purgeDeleted,
		JobVacuum:        m.vacuum,
		JobReindex:       m.reindex,
	}
	return m, nil
}

// Jobs returns every job name in the order RunAll uses: cleanup first, then
// VACUUM (which reclaims what the cleanups left dead), then REINDEX.
func Jobs() []string {
	return []string{JobExpiredTokens, JobOrphans, JobPurgeDeleted, JobVacuum, JobReindex}
}

// RunAll runs the named jobs (all of Jobs() when none are named) one after
// the other and returns their results. A failing job does not stop the
// others; the returned error joins every failure. An unknown name fails
// before anything runs.
func (m *Maintainer) RunAll(ctx context.Context, jobs ...string) ([]Result, error) {
	if len(jobs) == 0 {
		jobs = Jobs()
	}
	for _, j := range jobs {
		if _, ok := m.jobs[j]; !ok {
			return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownJob, j, Jobs())
		}
	}
	var (
		out  []Result
		errs []error
	)
	for _, j := range jobs {
		r, err := m.Run(ctx, j)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		out = append(out, r)
	}
	return out, errors.Join(errs...)
}

// Run runs one job now and returns its result. When another instance is
// running the same job, Run returns at once with Outcome Skipped and a nil
// error.
//
// Errors: ErrUnknownJob for a bad name; ErrStandby when the pool reaches a
// hot standby; otherwise the first PostgreSQL or connection error, wrapped
// with the job's name (rows already handled stay handled: every batch
// commits on its own).
func (m *Maintainer) Run(ctx context.Context, job string) (Result, error) {
	fn, ok := m.jobs[job]
	if !ok {
		return Result{}, fmt.Errorf("%w %q (known: %v)", ErrUnknownJob, job, Jobs())
	}
	res := Result{Job: job, Started: m.cfg.Now()}
	ctx, span := m.tracer.Start(ctx, "maint."+job, trace.WithAttributes(attribute.String("maint.job", job)))
	defer span.End()
	began := time.Now()

	err := m.withJobConn(ctx, job, func(conn *pgx.Conn, locked bool) error {
		if !locked {
			res.Outcome = Skipped
			res.Duration = time.Since(began)
			if m.cfg.OnJobEnd != nil {
				m.cfg.OnJobEnd(res)
			}
			return nil
		}
		if m.cfg.OnJobStart != nil {
			m.cfg.OnJobStart(job)
		}
		if err := fn(ctx, conn, &res); err != nil {
			return err
		}
		res.Outcome = Done
		res.Duration = time.Since(began)
		if m.cfg.OnJobEnd != nil {
			m.cfg.OnJobEnd(res)
		}
		return nil
	})
	res.Duration = time.Since(began)

	outcome := string(res.Outcome)
	if err != nil {
		outcome = "failed"
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		m.cfg.Logger.LogAttrs(ctx, slog.LevelError, "maintenance job failed",
			slog.String("job", job), slog.Duration("duration", res.Duration), slog.String("error", err.Error()))
	} else {
		m.cfg.Logger.LogAttrs(ctx, slog.LevelInfo, "maintenance job",
			slog.String("job", job), slog.String("outcome", outcome), slog.Duration("duration", res.Duration),
			slog.Int("actions", len(res.Actions)))
	}
	jobAttr := attribute.String("job", job)
	span.SetAttributes(attribute.String("maint.outcome", outcome), attribute.Int("maint.actions", len(res.Actions)))
	m.runs.Add(ctx, 1, metric.WithAttributes(jobAttr, attribute.String("outcome", outcome)))
	m.duration.Record(ctx, res.Duration.Seconds(), metric.WithAttributes(jobAttr, attribute.String("outcome", outcome)))
	for _, a := range res.Actions {
		span.AddEvent(a.Kind, trace.WithAttributes(attribute.String("table", a.Table),
			attribute.String("object", a.Object), attribute.Int64("rows", a.Rows)))
		if a.Rows > 0 {
			m.rows.Add(ctx, a.Rows, metric.WithAttributes(jobAttr, attribute.String("table", a.Table),
				attribute.String("kind", a.Kind)))
		}
	}
	if err != nil {
		return res, fmt.Errorf("maint: %s: %w", job, err)
	}
	return res, nil
}

// lockKey is the advisory lock key of a job: the first 8 bytes of FNV-1a of
// "hsdal/maint/<job>", a fixed namespace so other users of advisory locks in
// the same database do not collide by accident.
func lockKey(job string) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("hsdal/maint/" + job))
	return int64(h.Sum64())
}

// withJobConn takes a dedicated connection out of the pool (hijacked: it
// never returns to the pool, so no session state or lock can leak), checks
// that it reaches the primary, tries the job's advisory lock and calls f.
// The lock is released and the connection closed afterwards.
func (m *Maintainer) withJobConn(ctx context.Context, job string, f func(conn *pgx.Conn, locked bool) error) error {
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection: %w", err)
	}
	conn := pc.Hijack()
	defer func() {
		// Closing the session releases the advisory lock even if unlock
		// below failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if err := checkPrimary(ctx, conn); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('application_name', 'hsdal-maint', false), "+
		"set_config('lock_timeout', $1, false)", strconv.FormatInt(m.cfg.LockTimeout.Milliseconds(), 10)+"ms"); err != nil {
		return fmt.Errorf("configure session: %w", err)
	}
	var locked bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", lockKey(job)).Scan(&locked); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	if !locked {
		return f(conn, false)
	}
	ferr := f(conn, true)
	if ctx.Err() == nil {
		var released bool
		if err := conn.QueryRow(ctx, "SELECT pg_advisory_unlock($1)", lockKey(job)).Scan(&released); err != nil && ferr == nil {
			return fmt.Errorf("advisory unlock: %w", err)
		}
	}
	return ferr
}

// checkPrimary returns an error wrapping ErrStandby when q is in recovery.
func checkPrimary(ctx context.Context, conn *pgx.Conn) error {
	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("check role: %w", err)
	}
	if inRecovery {
		return fmt.Errorf("%w (server %s)", ErrStandby, serverName(conn))
	}
	return nil
}

// serverName is host:port of conn's server (never credentials).
func serverName(conn *pgx.Conn) string {
	cfg := conn.Config()
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// nowMillis is Config.Now in Unix milliseconds, the schema's time unit.
func (m *Maintainer) nowMillis() int64 { return m.cfg.Now().UnixMilli() }

// pause sleeps BatchPause between batches, returning early when ctx ends.
func (m *Maintainer) pause(ctx context.Context) error {
	if m.cfg.BatchPause <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(m.cfg.BatchPause)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// tableSelected reports whether table is in Config.Tables (or the list is
// nil).
func (m *Maintainer) tableSelected(table string) bool {
	return m.cfg.Tables == nil || slices.Contains(m.cfg.Tables, table)
}
