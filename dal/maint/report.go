package maint

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReportOptions selects the optional, more expensive parts of a Report.
type ReportOptions struct {
	// Orphans adds per-foreign-key orphan counts (one anti-join scan of
	// every referencing table).
	Orphans bool
	// ExactBloat measures B-tree bloat with pgstattuple when the extension
	// is installed (reads every index). Default: the statistics estimate.
	ExactBloat bool
}

// TableStats describes one table of the current schema.
type TableStats struct {
	// Table is the table's name.
	Table string `json:"table"`
	// TotalBytes is table + indexes + TOAST (pg_total_relation_size).
	TotalBytes int64 `json:"total_bytes"`
	// HeapBytes is the main fork (pg_relation_size).
	HeapBytes int64 `json:"heap_bytes"`
	// IndexBytes is all its indexes (pg_indexes_size).
	IndexBytes int64 `json:"index_bytes"`
	// Live is pg_stat_user_tables.n_live_tup (an estimate).
	Live int64 `json:"live_tuples"`
	// Dead is pg_stat_user_tables.n_dead_tup: row versions VACUUM can
	// reclaim.
	Dead int64 `json:"dead_tuples"`
	// LastVacuum is the later of the last manual and automatic VACUUM; nil
	// when never.
	LastVacuum *time.Time `json:"last_vacuum,omitempty"`
	// LastAnalyze is the later of the last manual and automatic ANALYZE;
	// nil when never.
	LastAnalyze *time.Time `json:"last_analyze,omitempty"`
	// XIDAge is greatest(age(relfrozenxid)) of the table and its TOAST
	// table: transactions since its rows were last frozen.
	XIDAge int64 `json:"xid_age"`
	// MXIDAge is mxid_age(relminmxid).
	MXIDAge int64 `json:"mxid_age"`
}

// DeadRatio is Dead / (Live + Dead), 0 for an empty table.
func (t TableStats) DeadRatio() float64 { return deadRatio(t.Live, t.Dead) }

// DatabaseXID is the transaction-ID wraparound state of one database.
type DatabaseXID struct {
	// Database is the database's name.
	Database string `json:"database"`
	// Age is age(datfrozenxid): the oldest unfrozen XID's age in the
	// database. PostgreSQL warns 40 million transactions before, and stops
	// accepting commands 3 million transactions before, 2^31 − 1.
	Age int64 `json:"age"`
	// MXIDAge is mxid_age(datminmxid).
	MXIDAge int64 `json:"mxid_age"`
}

// Remaining is how many transactions are left before wraparound (2^31 − 1 −
// Age).
func (d DatabaseXID) Remaining() int64 { return 1<<31 - 1 - d.Age }

// Slot is one replication slot.
type Slot struct {
	// Name is slot_name (testcluster and pg_basebackup name it after the
	// standby).
	Name string `json:"name"`
	// Type is "physical" or "logical".
	Type string `json:"type"`
	// Active reports whether a receiver is streaming from the slot now; an
	// inactive slot still holds WAL back.
	Active bool `json:"active"`
	// RestartLSN is the oldest WAL position the slot still needs.
	RestartLSN string `json:"restart_lsn,omitempty"`
	// RetainedBytes is pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn):
	// WAL kept on disk for this slot. Nil when the slot has no restart LSN.
	RetainedBytes *int64 `json:"retained_bytes,omitempty"`
	// WALStatus is pg_replication_slots.wal_status (reserved, extended,
	// unreserved, lost).
	WALStatus string `json:"wal_status,omitempty"`
}

// Replica is one walsender: a standby streaming from this primary.
type Replica struct {
	// Name is the standby's application_name.
	Name string `json:"name"`
	// ClientAddr is the standby's address as the primary sees it.
	ClientAddr string `json:"client_addr,omitempty"`
	// State is the walsender state ("streaming", "catchup", …).
	State string `json:"state"`
	// SyncState is "async", "sync", "potential" or "quorum".
	SyncState string `json:"sync_state"`
	// SentLagBytes is WAL the primary wrote but has not sent yet.
	SentLagBytes int64 `json:"sent_lag_bytes"`
	// WriteLagBytes is WAL not yet written by the standby.
	WriteLagBytes int64 `json:"write_lag_bytes"`
	// FlushLagBytes is WAL not yet flushed by the standby.
	FlushLagBytes int64 `json:"flush_lag_bytes"`
	// ReplayLagBytes is WAL not yet replayed by the standby: its reads
	// do not see those commits.
	ReplayLagBytes int64 `json:"replay_lag_bytes"`
	// WriteLag is pg_stat_replication.write_lag (nil once the standby is
	// caught up and idle).
	WriteLag *time.Duration `json:"write_lag_ns,omitempty"`
	// FlushLag is pg_stat_replication.flush_lag (nil when caught up).
	FlushLag *time.Duration `json:"flush_lag_ns,omitempty"`
	// ReplayLag is pg_stat_replication.replay_lag (nil when caught up). It
	// is measured by the walsender and is not updated while replay is
	// paused; dal/health measures lag from WAL positions instead.
	ReplayLag *time.Duration `json:"replay_lag_ns,omitempty"`
}

// Report is a snapshot of the primary's maintenance state. It is a plain
// value, safe to marshal as JSON.
type Report struct {
	// At is when the report was taken (Config.Now).
	At time.Time `json:"at"`
	// Server is host:port of the primary (never credentials).
	Server string `json:"server"`
	// Database is the database name.
	Database string `json:"database"`
	// ServerVersion is server_version.
	ServerVersion string `json:"server_version"`
	// StatsSince is when this database's statistics were last reset (nil:
	// since the server's statistics began); index scan counts are since then.
	StatsSince *time.Time `json:"stats_since,omitempty"`
	// Tables are the current schema's tables, largest first.
	Tables []TableStats `json:"tables"`
	// Indexes are the current schema's indexes, by table and name.
	Indexes []IndexStats `json:"indexes"`
	// Unused are indexes never scanned that enforce nothing.
	Unused []IndexStats `json:"unused_indexes"`
	// Redundant are duplicate and prefix-covered indexes.
	Redundant []RedundantIndex `json:"redundant_indexes"`
	// Databases is the XID wraparound state of every database.
	Databases []DatabaseXID `json:"databases"`
	// FreezeMaxAge is autovacuum_freeze_max_age.
	FreezeMaxAge int64 `json:"autovacuum_freeze_max_age"`
	// Slots are the replication slots.
	Slots []Slot `json:"replication_slots"`
	// Replicas are the connected standbys.
	Replicas []Replica `json:"replicas"`
	// Orphans are per-foreign-key orphan counts (only with
	// ReportOptions.Orphans).
	Orphans []OrphanCount `json:"orphans,omitempty"`
}

const tablesSQL = `
SELECT c.relname::text, pg_total_relation_size(c.oid), pg_relation_size(c.oid), pg_indexes_size(c.oid),
       coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       greatest(s.last_vacuum, s.last_autovacuum), greatest(s.last_analyze, s.last_autoanalyze),
       greatest(age(c.relfrozenxid), age(t.relfrozenxid))::bigint, mxid_age(c.relminmxid)::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')
ORDER BY 2 DESC, 1`

const replicasSQL = `
SELECT coalesce(application_name, ''), coalesce(client_addr::text, ''), coalesce(state, ''), coalesce(sync_state, ''),
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn), 0)::bigint,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn), 0)::bigint,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn), 0)::bigint,
       coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint,
       extract(epoch FROM write_lag)::float8, extract(epoch FROM flush_lag)::float8, extract(epoch FROM replay_lag)::float8
FROM pg_stat_replication
ORDER BY application_name, client_addr`

const slotsSQL = `
SELECT slot_name::text, slot_type, active, coalesce(restart_lsn::text, ''),
       pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, coalesce(wal_status, '')
FROM pg_replication_slots
ORDER BY slot_name`

// Report reads sizes, dead tuples, index usage, redundant indexes, XID
// wraparound ages, replication slots and replicas from the primary. It only
// reads. Errors: ErrStandby on a standby (slot, lag and LSN functions
// describe the primary's side); otherwise the failing query's error.
func (m *Maintainer) Report(ctx context.Context, opts ReportOptions) (*Report, error) {
	pc, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("maint: report: %w", err)
	}
	defer pc.Release()
	conn := pc.Conn()
	if err := checkPrimary(ctx, conn); err != nil {
		return nil, fmt.Errorf("maint: report: %w", err)
	}
	r, err := m.report(ctx, conn, opts)
	if err != nil {
		return nil, fmt.Errorf("maint: report: %w", err)
	}
	return r, nil
}

func (m *Maintainer) report(ctx context.Context, conn *pgx.Conn, opts ReportOptions) (*Report, error) {
	r := &Report{At: m.cfg.Now(), Server: serverName(conn)}
	if err := conn.QueryRow(ctx, `SELECT current_database()::text, current_setting('server_version'),
		current_setting('autovacuum_freeze_max_age')::bigint,
		(SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())`).
		Scan(&r.Database, &r.ServerVersion, &r.FreezeMaxAge, &r.StatsSince); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}

	rows, err := conn.Query(ctx, tablesSQL)
	if err != nil {
		return nil, fmt.Errorf("tables: %w", err)
	}
	r.Tables, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (TableStats, error) {
		var t TableStats
		return t, row.Scan(&t.Table, &t.TotalBytes, &t.HeapBytes, &t.IndexBytes, &t.Live, &t.Dead,
			&t.LastVacuum, &t.LastAnalyze, &t.XIDAge, &t.MXIDAge)
	})
	if err != nil {
		return nil, fmt.Errorf("tables: %w", err)
	}

	r.Indexes, err = loadIndexes(ctx, conn)
	if err != nil {
		return nil, err
	}
	method := BloatEstimate
	if opts.ExactBloat {
		method = BloatAuto
	}
	if err := measureBloat(ctx, conn, r.Indexes, method, nil); err != nil {
		return nil, err
	}
	r.Unused = []IndexStats{}
	for _, s := range r.Indexes {
		if s.Unused() {
			r.Unused = append(r.Unused, s)
		}
	}
	r.Redundant = redundantIndexes(r.Indexes)
	if r.Redundant == nil {
		r.Redundant = []RedundantIndex{}
	}

	rows, err = conn.Query(ctx, `SELECT datname::text, age(datfrozenxid)::bigint, mxid_age(datminmxid)::bigint
		FROM pg_database WHERE datallowconn ORDER BY 2 DESC, 1`)
	if err != nil {
		return nil, fmt.Errorf("databases: %w", err)
	}
	r.Databases, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (DatabaseXID, error) {
		var d DatabaseXID
		return d, row.Scan(&d.Database, &d.Age, &d.MXIDAge)
	})
	if err != nil {
		return nil, fmt.Errorf("databases: %w", err)
	}

	rows, err = conn.Query(ctx, slotsSQL)
	if err != nil {
		return nil, fmt.Errorf("replication slots: %w", err)
	}
	r.Slots, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Slot, error) {
		var s Slot
		return s, row.Scan(&s.Name, &s.Type, &s.Active, &s.RestartLSN, &s.RetainedBytes, &s.WALStatus)
	})
	if err != nil {
		return nil, fmt.Errorf("replication slots: %w", err)
	}

	rows, err = conn.Query(ctx, replicasSQL)
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}
	r.Replicas, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Replica, error) {
		var (
			rep     Replica
			w, f, p *float64
		)
		err := row.Scan(&rep.Name, &rep.ClientAddr, &rep.State, &rep.SyncState, &rep.SentLagBytes,
			&rep.WriteLagBytes, &rep.FlushLagBytes, &rep.ReplayLagBytes, &w, &f, &p)
		rep.WriteLag, rep.FlushLag, rep.ReplayLag = seconds(w), seconds(f), seconds(p)
		return rep, err
	})
	if err != nil {
		return nil, fmt.Errorf("replicas: %w", err)
	}

	if opts.Orphans {
		if r.Orphans, err = m.countOrphans(ctx, conn); err != nil {
			return nil, err
		}
	}
	return r, nil
}

func seconds(v *float64) *time.Duration {
	if v == nil {
		return nil
	}
	d := time.Duration(*v * float64(time.Second))
	return &d
}
