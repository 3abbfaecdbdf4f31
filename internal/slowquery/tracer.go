// Package slowquery is a pgx tracer that counts every statement and records
// the slow ones — statements that took longer than a threshold — as
// OpenTelemetry metrics, as an event on the caller's span, and as a slog
// warning.
//
// It never records parameter values: pgx hands them to tracers, and this
// package drops them unread. The SQL text itself is normalised (comments and
// whitespace squeezed, and by default string and numeric literals replaced
// with "?") so that values an application inlined into its text do not leak
// either.
//
//	t, err := slowquery.New(slowquery.Config{Threshold: 200 * time.Millisecond, Logger: logger})
//	cfg, _ := pgxpool.ParseConfig(dsn)
//	cfg.ConnConfig.Tracer = t
//
// pgx takes one tracer per connection; combine it with others through
// github.com/jackc/pgx/v5/multitracer.
package slowquery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a Tracer. The zero value is usable.
type Config struct {
	// Threshold is the duration above which a statement is slow. Default
	// 100ms (the maintenance plan's warning bound for the mean query time:
	// one statement slower than the mean may be is worth a look).
	Threshold time.Duration
	// MaxSQLLength caps the recorded SQL text, in bytes. Default 2048.
	MaxSQLLength int
	// KeepLiterals keeps string and numeric literals in the recorded SQL
	// text. Default false: they are replaced with "?". Parameter values
	// ($1, $2, …) are never recorded either way.
	KeepLiterals bool
	// Logger receives one Warn record per slow statement. Nil means
	// slog.Default().
	Logger *slog.Logger
	// MeterProvider receives hsdal.db.query.duration (every statement) and
	// hsdal.db.query.slow (slow statements). Nil means no metrics.
	MeterProvider metric.MeterProvider
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Stats are cumulative counters since the Tracer was created.
type Stats struct {
	// Count is the number of finished statements (batch entries count one
	// each; a COPY counts one).
	Count int64
	// Total is their summed duration.
	Total time.Duration
	// Slow is how many took longer than the threshold.
	Slow int64
	// Errors is how many failed.
	Errors int64
}

// Tracer implements pgx.QueryTracer, pgx.BatchTracer and pgx.CopyFromTracer.
// It is safe for concurrent use by any number of connections.
type Tracer struct {
	threshold    time.Duration
	maxLen       int
	keepLiterals bool
	logger       *slog.Logger
	now          func() time.Time

	duration metric.Float64Histogram
	slow     metric.Int64Counter
	// opts holds the measurement options per operation (and "OTHER"),
	// built once so the per-statement path does not allocate them.
	opts map[string]opOptions

	count, totalNs, slowN, errs atomic.Int64
}

var (
	_ pgx.QueryTracer    = (*Tracer)(nil)
	_ pgx.BatchTracer    = (*Tracer)(nil)
	_ pgx.CopyFromTracer = (*Tracer)(nil)
)

// New returns a Tracer. It fails only when creating the metric instruments
// fails.
func New(cfg Config) (*Tracer, error) {
	t := &Tracer{threshold: cfg.Threshold, maxLen: cfg.MaxSQLLength, keepLiterals: cfg.KeepLiterals,
		logger: cfg.Logger, now: cfg.Now}
	if t.threshold <= 0 {
		t.threshold = 100 * time.Millisecond
	}
	if t.maxLen <= 0 {
		t.maxLen = 2048
	}
	if t.logger == nil {
		t.logger = slog.Default()
	}
	if t.now == nil {
		t.now = time.Now
	}
	mp := cfg.MeterProvider
	if mp == nil {
		mp = noop.NewMeterProvider()
	}
	t.opts = buildOptions()
	m := mp.Meter("github.com/hsdal/hsdal/internal/slowquery")
	var err error
	t.duration, err = m.Float64Histogram("hsdal.db.query.duration",
		metric.WithDescription("Duration of every statement, by operation and outcome."), metric.WithUnit("s"))
	if err != nil {
		return nil, fmt.Errorf("slowquery: metrics: %w", err)
	}
	t.slow, err = m.Int64Counter("hsdal.db.query.slow",
		metric.WithDescription("Statements slower than the slow-query threshold."))
	if err != nil {
		return nil, fmt.Errorf("slowquery: metrics: %w", err)
	}
	return t, nil
}

// Threshold returns the slow-query threshold in effect.
func (t *Tracer) Threshold() time.Duration { return t.threshold }

// Stats returns the cumulative counters.
func (t *Tracer) Stats() Stats {
	return Stats{
		Count:  t.count.Load(),
		Total:  time.Duration(t.totalNs.Load()),
		Slow:   t.slowN.Load(),
		Errors: t.errs.Load(),
	}
}

type opOptions struct {
	ok, failed, slow metric.MeasurementOption
}

func buildOptions() map[string]opOptions {
	m := make(map[string]opOptions, len(operations)+1)
	for _, op := range append(slices.Clone(operations), "OTHER") {
		a := attribute.String("db.operation", op)
		m[op] = opOptions{
			ok:     metric.WithAttributeSet(attribute.NewSet(a, attribute.String("outcome", "ok"))),
			failed: metric.WithAttributeSet(attribute.NewSet(a, attribute.String("outcome", "error"))),
			slow:   metric.WithAttributeSet(attribute.NewSet(a)),
		}
	}
	return m
}

type ctxKey int

const (
	queryKey ctxKey = iota
	batchKey
	copyKey
)

type queryStart struct {
	sql   string // raw; normalised only when slow
	start time.Time
}

// TraceQueryStart records the start time. The statement's arguments are
// ignored.
func (t *Tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, queryKey, &queryStart{sql: data.SQL, start: t.now()})
}

// TraceQueryEnd counts the statement and records it if it was slow.
func (t *Tracer) TraceQueryEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryEndData) {
	qs, ok := ctx.Value(queryKey).(*queryStart)
	if !ok {
		return
	}
	t.finish(ctx, conn, qs.sql, t.now().Sub(qs.start), data.CommandTag.RowsAffected(), data.Err)
}

// TraceBatchStart marks the batch; each query is timed from when pgx began
// reading its result.
func (t *Tracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return context.WithValue(ctx, batchKey, t.now())
}

// TraceBatchQuery counts one statement of a batch and records it if slow.
func (t *Tracer) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, data pgx.TraceBatchQueryData) {
	start := data.ReadStartTime
	if start.IsZero() {
		s, ok := ctx.Value(batchKey).(time.Time)
		if !ok {
			return
		}
		start = s
	}
	t.finish(ctx, conn, data.SQL, t.now().Sub(start), data.CommandTag.RowsAffected(), data.Err)
}

// TraceBatchEnd does nothing: the batch's statements were counted one by one.
func (t *Tracer) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// TraceCopyFromStart records the start time of a COPY.
func (t *Tracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	return context.WithValue(ctx, copyKey, &queryStart{sql: "COPY " + data.TableName.Sanitize() + " FROM STDIN", start: t.now()})
}

// TraceCopyFromEnd counts the COPY and records it if slow.
func (t *Tracer) TraceCopyFromEnd(ctx context.Context, conn *pgx.Conn, data pgx.TraceCopyFromEndData) {
	qs, ok := ctx.Value(copyKey).(*queryStart)
	if !ok {
		return
	}
	t.finish(ctx, conn, qs.sql, t.now().Sub(qs.start), data.CommandTag.RowsAffected(), data.Err)
}

func (t *Tracer) finish(ctx context.Context, conn *pgx.Conn, sql string, d time.Duration, rows int64, err error) {
	t.count.Add(1)
	t.totalNs.Add(int64(d))
	op := Operation(sql)
	o := t.opts[op]
	if err != nil {
		t.errs.Add(1)
		t.duration.Record(ctx, d.Seconds(), o.failed)
	} else {
		t.duration.Record(ctx, d.Seconds(), o.ok)
	}
	if d <= t.threshold {
		return
	}
	t.slowN.Add(1)
	t.slow.Add(ctx, 1, o.slow)
	opAttr := attribute.String("db.operation", op)
	text := Normalize(sql, t.keepLiterals, t.maxLen)
	node := nodeOf(conn)
	attrs := []attribute.KeyValue{
		attribute.String("db.statement", text),
		opAttr,
		attribute.Float64("db.duration_ms", float64(d)/float64(time.Millisecond)),
		attribute.Int64("db.rows", rows),
		attribute.String("db.node", node),
	}
	if err != nil {
		attrs = append(attrs, attribute.String("error", errClass(err)))
	}
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent("db.slow_query", trace.WithAttributes(attrs...))
	}
	logAttrs := []slog.Attr{
		slog.String("sql", text),
		slog.String("operation", op),
		slog.Duration("duration", d),
		slog.Duration("threshold", t.threshold),
		slog.Int64("rows", rows),
		slog.String("node", node),
	}
	if err != nil {
		logAttrs = append(logAttrs, slog.String("error", errClass(err)))
	}
	t.logger.LogAttrs(ctx, slog.LevelWarn, "slow query", logAttrs...)
}

// operations are the leading keywords Operation reports; anything else is
// "OTHER", so the metric label has a small, fixed set of values.
var operations = []string{
	"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE",
	"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE",
	"PREPARE", "EXECUTE", "DEALLOCATE", "DECLARE", "FETCH", "MOVE", "CLOSE",
	"COPY", "LOCK", "LISTEN", "UNLISTEN", "NOTIFY", "SET", "RESET", "SHOW", "DISCARD",
	"EXPLAIN", "VACUUM", "ANALYZE", "REINDEX", "CLUSTER", "REFRESH", "CHECKPOINT",
	"CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT", "GRANT", "REVOKE", "DO", "CALL",
}

// Operation returns the statement's leading keyword in upper case ("SELECT",
// "INSERT", "WITH", …) when it is one of a fixed list of SQL commands, and
// "OTHER" otherwise. Leading whitespace, comments and parentheses are
// skipped. It is what metrics are labelled with: bounded cardinality, no
// text, no allocation.
func Operation(sql string) string {
	i := 0
	for i < len(sql) {
		switch c := sql[i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '(':
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			i = skipBlockComment(sql, i)
		default:
			j := i
			for j < len(sql) && (sql[j]|0x20 >= 'a' && sql[j]|0x20 <= 'z') {
				j++
			}
			word := sql[i:j]
			for _, op := range operations {
				if strings.EqualFold(word, op) {
					return op
				}
			}
			return "OTHER"
		}
	}
	return "OTHER"
}

// nodeOf names the server of conn as host:port (never credentials).
func nodeOf(conn *pgx.Conn) string {
	if conn == nil {
		return ""
	}
	pc := conn.PgConn()
	if pc == nil {
		return ""
	}
	cfg := conn.Config()
	return net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))
}

// errClass reduces an error to something safe to record. PostgreSQL's
// messages and details can quote input values ("invalid input syntax for
// type bigint: …", "Key (…)=(…) already exists"), and pgx's encoding errors
// quote arguments, so only the SQLSTATE and constraint name of a server
// error, the context errors, or the Go type of anything else is kept.
func errClass(err error) string {
	var pg *pgconn.PgError
	switch {
	case errors.As(err, &pg):
		if pg.ConstraintName != "" {
			return "SQLSTATE " + pg.Code + " (constraint " + pg.ConstraintName + ")"
		}
		return "SQLSTATE " + pg.Code
	case errors.Is(err, context.Canceled):
		return context.Canceled.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return context.DeadlineExceeded.Error()
	default:
		return fmt.Sprintf("%T", err)
	}
}
