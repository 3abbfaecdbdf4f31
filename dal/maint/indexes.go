package maint

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// IndexStats describes one index of the current schema.
type IndexStats struct {
	// Table is the indexed table.
	Table string `json:"table"`
	// Index is the index's name.
	Index string `json:"index"`
	// AccessMethod is "btree", "gin", …
	AccessMethod string `json:"access_method"`
	// Bytes is the index's size on disk.
	Bytes int64 `json:"bytes"`
	// Scans is pg_stat_user_indexes.idx_scan: index scans since the
	// statistics were last reset (Report.StatsSince).
	Scans int64 `json:"scans"`
	// Unique is pg_index.indisunique.
	Unique bool `json:"unique"`
	// Primary is pg_index.indisprimary.
	Primary bool `json:"primary"`
	// Valid is pg_index.indisvalid: false for a failed CREATE INDEX
	// CONCURRENTLY or REINDEX CONCURRENTLY leftover, which costs writes
	// and serves no query.
	Valid bool `json:"valid"`
	// Constraint is the constraint the index implements (primary key,
	// unique, exclusion), if any.
	Constraint string `json:"constraint,omitempty"`
	// ForeignKey names a foreign key of the table whose columns lead this
	// index: the index keeps the parent's deletes from scanning the table,
	// even when it shows no scans.
	ForeignKey string `json:"foreign_key,omitempty"`
	// Definition is pg_get_indexdef.
	Definition string `json:"definition"`
	// Bloat is the estimated wasted fraction of the index's pages, in [0,1];
	// nil when it could not be measured (non-B-tree, expression index
	// without pgstattuple, never analyzed).
	Bloat *float64 `json:"bloat,omitempty"`
	// BloatMethod is how Bloat was measured: "pgstattuple" or "estimate".
	BloatMethod BloatMethod `json:"bloat_method,omitempty"`

	oid        uint32
	tableOID   uint32
	keys       []int16 // pg_index.indkey: key and INCLUDE columns, 0 = expression
	nKeyAtts   int
	classes    []uint32
	options    []int16
	collations []uint32
	exprs      string
	pred       string
	relTuples  float64
	fillfactor int
	avgWidth   *float64 // sum of pg_stats.avg_width of the columns; nil: missing stats
	hasNulls   bool
}

// Unused reports an index that was never scanned since the statistics reset
// and does not enforce a constraint or serve a foreign key: a candidate for
// DROP INDEX after checking the application's rare queries.
func (s IndexStats) Unused() bool {
	return s.Scans == 0 && !s.Unique && !s.Primary && s.Constraint == "" && s.ForeignKey == ""
}

const indexesSQL = `
SELECT ic.oid, tc.oid, tc.relname::text, ic.relname::text, am.amname::text, pg_relation_size(ic.oid),
       coalesce(s.idx_scan, 0), i.indisunique, i.indisprimary, i.indisvalid,
       coalesce((SELECT conname::text FROM pg_constraint WHERE conindid = ic.oid AND contype IN ('p','u','x') LIMIT 1), ''),
       pg_get_indexdef(ic.oid),
       i.indkey::int2[], i.indnkeyatts, i.indclass::oid[], i.indoption::int2[], i.indcollation::oid[],
       coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), coalesce(pg_get_expr(i.indpred, i.indrelid), ''),
       ic.reltuples::float8,
       coalesce((SELECT option_value::int FROM pg_options_to_table(ic.reloptions) WHERE option_name = 'fillfactor'), 90),
       (SELECT CASE WHEN count(st.avg_width) = count(*) THEN sum(st.avg_width)::float8 END
          FROM unnest(i.indkey::int2[]) k(n)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
          LEFT JOIN pg_stats st ON st.schemaname = ns.nspname AND st.tablename = tc.relname AND st.attname = a.attname),
       coalesce((SELECT bool_or(st.null_frac > 0)
          FROM unnest(i.indkey::int2[]) k(n)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n
          JOIN pg_stats st ON st.schemaname = ns.nspname AND st.tablename = tc.relname AND st.attname = a.attname), false)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace ns ON ns.oid = tc.relnamespace
JOIN pg_am am ON am.oid = ic.relam
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = i.indexrelid
WHERE ns.nspname = current_schema()
ORDER BY tc.relname, ic.relname`

// loadIndexes reads every index of the current schema with its usage and
// the inputs of the bloat estimate; bloat is filled by measureBloat.
func loadIndexes(ctx context.Context, q pgxQuerier) ([]IndexStats, error) {
	rows, err := q.Query(ctx, indexesSQL)
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (IndexStats, error) {
		var s IndexStats
		err := r.Scan(&s.oid, &s.tableOID, &s.Table, &s.Index, &s.AccessMethod, &s.Bytes,
			&s.Scans, &s.Unique, &s.Primary, &s.Valid, &s.Constraint, &s.Definition,
			&s.keys, &s.nKeyAtts, &s.classes, &s.options, &s.collations, &s.exprs, &s.pred,
			&s.relTuples, &s.fillfactor, &s.avgWidth, &s.hasNulls)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("list indexes: %w", err)
	}
	fks, err := loadForeignKeys(ctx, q)
	if err != nil {
		return nil, err
	}
	attnums, err := fkAttnums(ctx, q)
	if err != nil {
		return nil, err
	}
	for i := range idx {
		for _, fk := range fks {
			if fk.table != idx[i].Table {
				continue
			}
			cols := attnums[fk.name]
			if len(cols) > 0 && len(cols) <= idx[i].nKeyAtts && idx[i].pred == "" &&
				sameSet(cols, idx[i].keys[:len(cols)]) {
				idx[i].ForeignKey = fk.name
				break
			}
		}
	}
	return idx, nil
}

// fkAttnums maps each foreign key of the current schema to its referencing
// column numbers.
func fkAttnums(ctx context.Context, q pgxQuerier) (map[string][]int16, error) {
	rows, err := q.Query(ctx, `SELECT con.conname::text, con.conkey FROM pg_constraint con
		JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace ns ON ns.oid = cl.relnamespace
		WHERE con.contype = 'f' AND ns.nspname = current_schema()`)
	if err != nil {
		return nil, fmt.Errorf("list foreign keys: %w", err)
	}
	out := map[string][]int16{}
	var (
		name string
		keys []int16
	)
	_, err = pgx.ForEachRow(rows, []any{&name, &keys}, func() error {
		out[name] = slices.Clone(keys)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list foreign keys: %w", err)
	}
	return out, nil
}

// sameSet reports whether a and b hold the same column numbers in any order
// (a foreign key is served by an index leading with its columns in any
// order).
func sameSet(a, b []int16) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

// Redundancy kinds of RedundantIndex.
const (
	// RedundantDuplicate: same table, columns, operator classes, options,
	// collations, expressions and predicate as another index.
	RedundantDuplicate = "duplicate"
	// RedundantPrefix: a non-unique B-tree whose key columns are a leading
	// prefix of another B-tree's with the same predicate; the longer index
	// answers every query the shorter one does.
	RedundantPrefix = "prefix"
)

// RedundantIndex is an index another index makes unnecessary.
type RedundantIndex struct {
	// Table is the indexed table.
	Table string `json:"table"`
	// Index is the redundant index.
	Index string `json:"index"`
	// CoveredBy is the index that makes it redundant.
	CoveredBy string `json:"covered_by"`
	// Kind is RedundantDuplicate or RedundantPrefix.
	Kind string `json:"kind"`
	// Bytes is the redundant index's size.
	Bytes int64 `json:"bytes"`
}

// redundantIndexes finds exact duplicates and prefix-covered indexes. Of
// two duplicates the one that enforces a constraint or uniqueness (or,
// failing that, the alphabetically first) is kept, and the other reported.
func redundantIndexes(idx []IndexStats) []RedundantIndex {
	var out []RedundantIndex
	for i, a := range idx {
		for j, b := range idx {
			if i == j || a.tableOID != b.tableOID || a.AccessMethod != b.AccessMethod || !a.Valid || !b.Valid {
				continue
			}
			if a.exprs != b.exprs || a.pred != b.pred {
				continue
			}
			if slices.Equal(a.keys, b.keys) && a.nKeyAtts == b.nKeyAtts && slices.Equal(a.classes, b.classes) &&
				slices.Equal(a.options, b.options) && slices.Equal(a.collations, b.collations) {
				// Report a (the one to drop) if b is the better keeper.
				aKeeps := a.Constraint != "" || a.Unique
				bKeeps := b.Constraint != "" || b.Unique
				if aKeeps && !bKeeps || (aKeeps == bKeeps && a.Index < b.Index) {
					continue
				}
				out = append(out, RedundantIndex{Table: a.Table, Index: a.Index, CoveredBy: b.Index,
					Kind: RedundantDuplicate, Bytes: a.Bytes})
				continue
			}
			if a.AccessMethod != "btree" || a.Unique || a.Constraint != "" || a.exprs != "" {
				continue
			}
			n := a.nKeyAtts
			if n < b.nKeyAtts && len(a.keys) == n && // a has no INCLUDE columns
				slices.Equal(a.keys[:n], b.keys[:n]) && slices.Equal(a.classes[:n], b.classes[:n]) &&
				slices.Equal(a.options[:n], b.options[:n]) && slices.Equal(a.collations[:n], b.collations[:n]) {
				out = append(out, RedundantIndex{Table: a.Table, Index: a.Index, CoveredBy: b.Index,
					Kind: RedundantPrefix, Bytes: a.Bytes})
			}
		}
	}
	return out
}

// B-tree page layout constants for the statistics-based estimate.
const (
	pageHeaderBytes  = 24 // PageHeaderData
	btreeSpecial     = 16 // BTPageOpaqueData
	indexTupleHeader = 8  // IndexTupleData
	nullBitmapBytes  = 4  // IndexAttributeBitMapData
	itemIDBytes      = 4  // ItemIdData
	maxAlign         = 8
)

// estimateBloat is the statistics-based bloat estimate of a B-tree: the
// pages a freshly built index of relTuples entries of the average width
// would need (leaf pages filled to the fillfactor, plus internal pages and
// the metapage), compared with the index's actual pages.
func estimateBloat(s IndexStats, blockSize int64) (float64, bool) {
	if s.AccessMethod != "btree" || s.exprs != "" || s.avgWidth == nil || s.relTuples < 0 || blockSize <= 0 {
		return 0, false
	}
	actual := float64(s.Bytes) / float64(blockSize)
	if actual < 1 {
		return 0, false
	}
	header := indexTupleHeader
	if s.hasNulls {
		header += nullBitmapBytes
	}
	tuple := math.Ceil((float64(header)+*s.avgWidth)/maxAlign)*maxAlign + itemIDBytes
	usable := float64(blockSize - pageHeaderBytes - btreeSpecial)
	ff := float64(s.fillfactor) / 100
	if ff <= 0 || ff > 1 {
		ff = 0.9
	}
	leaf := math.Ceil(s.relTuples * tuple / (usable * ff))
	internal := math.Ceil(leaf * tuple / usable)
	expected := leaf + internal + 1
	return clamp01(1 - expected/actual), true
}

func clamp01(v float64) float64 {
	switch {
	case math.IsNaN(v) || v < 0:
		return 0
	case v > 1:
		return 1
	default:
		return v
	}
}

// pgstattupleSchema returns the schema the pgstattuple extension is
// installed in, or "" when it is not installed.
func pgstattupleSchema(ctx context.Context, q pgxQuerier) (string, error) {
	var schema string
	err := q.QueryRow(ctx, `SELECT n.nspname::text FROM pg_extension e
		JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgstattuple'`).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("look up pgstattuple: %w", err)
	}
	return schema, nil
}

// exactBloat measures a B-tree with pgstatindex: the leaf pages' live data
// at the fillfactor, plus internal pages and the metapage, against the
// index's pages (empty and deleted pages count as waste).
func exactBloat(ctx context.Context, q pgxQuerier, schema string, s IndexStats, blockSize int64) (float64, bool, error) {
	if s.AccessMethod != "btree" || !s.Valid {
		return 0, false, nil
	}
	var leaf, internal, size int64
	var density float64
	err := q.QueryRow(ctx, fmt.Sprintf(
		"SELECT leaf_pages, internal_pages, index_size, avg_leaf_density FROM %s.pgstatindex($1::oid::regclass)",
		pgx.Identifier{schema}.Sanitize()), s.oid).Scan(&leaf, &internal, &size, &density)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			// e.g. insufficient privilege, or the index vanished: unmeasured.
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("pgstatindex %s: %w", s.Index, err)
	}
	pages := float64(size) / float64(blockSize)
	if pages < 1 {
		return 0, false, nil
	}
	if leaf == 0 || math.IsNaN(density) {
		return clamp01(1 - float64(internal+1)/pages), true, nil
	}
	ff := float64(s.fillfactor)
	if ff <= 0 || ff > 100 {
		ff = 90
	}
	used := float64(leaf)*math.Min(density/ff, 1) + float64(internal) + 1
	return clamp01(1 - used/pages), true, nil
}

// measureBloat fills Bloat for the B-tree indexes selected by want (nil:
// all), with pgstatindex when method allows and the extension is
// installed, else with the estimate.
func measureBloat(ctx context.Context, q pgxQuerier, idx []IndexStats, method BloatMethod, want func(IndexStats) bool) error {
	var blockSize int64
	if err := q.QueryRow(ctx, "SELECT current_setting('block_size')::bigint").Scan(&blockSize); err != nil {
		return fmt.Errorf("block size: %w", err)
	}
	schema := ""
	if method != BloatEstimate {
		var err error
		if schema, err = pgstattupleSchema(ctx, q); err != nil {
			return err
		}
		if schema == "" && method == BloatPgstattuple {
			return errors.New("bloat: the pgstattuple extension is not installed in this database " +
				"(CREATE EXTENSION pgstattuple as a superuser, or use BloatEstimate)")
		}
	}
	for i := range idx {
		if want != nil && !want(idx[i]) {
			continue
		}
		if schema != "" {
			v, ok, err := exactBloat(ctx, q, schema, idx[i], blockSize)
			if err != nil {
				return err
			}
			if ok {
				idx[i].Bloat, idx[i].BloatMethod = &v, BloatPgstattuple
				continue
			}
		}
		if v, ok := estimateBloat(idx[i], blockSize); ok {
			idx[i].Bloat, idx[i].BloatMethod = &v, BloatEstimate
		}
	}
	return nil
}

// reindex rebuilds, with REINDEX INDEX CONCURRENTLY, every valid B-tree of
// the selected tables that is at least ReindexMinSize and whose bloat passes
// ReindexBloatRatio. Readers and writers of the table continue meanwhile
// (the command takes SHARE UPDATE EXCLUSIVE). A failed rebuild leaves an
// invalid "<index>_ccnew" copy, which is dropped; the job goes on with the
// next index.
func (m *Maintainer) reindex(ctx context.Context, conn *pgx.Conn, res *Result) error {
	idx, err := loadIndexes(ctx, conn)
	if err != nil {
		return err
	}
	eligible := func(s IndexStats) bool {
		return s.AccessMethod == "btree" && s.Valid && m.tableSelected(s.Table) &&
			(m.cfg.ReindexMinSize < 0 || s.Bytes >= m.cfg.ReindexMinSize) && !strings.Contains(s.Index, "_ccnew")
	}
	if err := measureBloat(ctx, conn, idx, m.cfg.BloatMethod, eligible); err != nil {
		return err
	}
	for _, s := range idx {
		if !eligible(s) || s.Bloat == nil || *s.Bloat <= m.cfg.ReindexBloatRatio {
			continue
		}
		name := pgx.Identifier{s.Index}.Sanitize()
		if _, err := conn.Exec(ctx, "REINDEX INDEX CONCURRENTLY "+name); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return fmt.Errorf("reindex %s: %w", s.Index, err)
			}
			res.Actions = append(res.Actions, Action{Kind: ActionFailed, Table: s.Table, Object: s.Index,
				Detail: "REINDEX CONCURRENTLY: " + pgErr.Code + " " + pgErr.Message})
			if derr := m.dropLeftovers(ctx, conn, s); derr != nil {
				return derr
			}
			continue
		}
		var after int64
		if err := conn.QueryRow(ctx, "SELECT pg_relation_size($1::regclass)", name).Scan(&after); err != nil {
			return fmt.Errorf("reindex %s: size: %w", s.Index, err)
		}
		res.Actions = append(res.Actions, Action{Kind: ActionReindexed, Table: s.Table, Object: s.Index,
			Detail: fmt.Sprintf("bloat %.0f%% (%s, threshold %.0f%%); size %s → %s", *s.Bloat*100, s.BloatMethod,
				m.cfg.ReindexBloatRatio*100, bytesText(s.Bytes), bytesText(after))})
	}
	return nil
}

// dropLeftovers drops the invalid copies a failed REINDEX CONCURRENTLY of s
// left behind.
func (m *Maintainer) dropLeftovers(ctx context.Context, conn *pgx.Conn, s IndexStats) error {
	rows, err := conn.Query(ctx, `SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = $1 AND NOT i.indisvalid AND c.relname LIKE $2`, s.tableOID,
		strings.ReplaceAll(s.Index, "_", `\_`)+`\_ccnew%`)
	if err != nil {
		return fmt.Errorf("reindex %s: find leftovers: %w", s.Index, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("reindex %s: find leftovers: %w", s.Index, err)
	}
	for _, n := range names {
		if _, err := conn.Exec(ctx, "DROP INDEX CONCURRENTLY IF EXISTS "+pgx.Identifier{n}.Sanitize()); err != nil {
			return fmt.Errorf("reindex %s: drop leftover %s: %w", s.Index, n, err)
		}
	}
	return nil
}

// bytesText formats n with a binary unit.
func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
