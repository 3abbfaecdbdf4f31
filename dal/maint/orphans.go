package maint

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Orphan detection is driven by the catalog, not by a hand-kept list: every
// foreign key of the current schema is checked, so a migration that adds a
// table is covered without touching this file.

// Repair says what the orphans job does with the orphans of a foreign key.
type Repair string

const (
	// RepairDelete: the foreign key is ON DELETE CASCADE (credentials and
	// derived state), so the orphans are deleted, as the parent's delete
	// would have done.
	RepairDelete Repair = "delete"
	// RepairSetNull: the foreign key is ON DELETE SET NULL (content that
	// outlives its author), so the dangling reference is cleared.
	RepairSetNull Repair = "set_null"
	// RepairReport: the schema refuses the parent's delete while children
	// exist (NO ACTION / RESTRICT, user content) or the action cannot be
	// replayed safely (SET DEFAULT, SET NULL on a NOT NULL column), so the
	// orphans are only reported for an operator to decide.
	RepairReport Repair = "report"
)

// OrphanCount is the number of rows of one foreign key whose parent row is
// missing.
type OrphanCount struct {
	// Table is the referencing table.
	Table string `json:"table"`
	// Constraint is the foreign key.
	Constraint string `json:"constraint"`
	// Columns are the referencing columns.
	Columns []string `json:"columns"`
	// Parent is the referenced table.
	Parent string `json:"parent"`
	// Rows is how many rows reference a missing parent.
	Rows int64 `json:"rows"`
	// Repair is what the orphans job does with them.
	Repair Repair `json:"repair"`
}

type foreignKey struct {
	name, table, parent string
	cols, parentCols    []string
	setCols             []string // columns ON DELETE SET NULL clears (PG15 column list, else cols)
	setColNotNull       bool
	delType             string // pg_constraint.confdeltype
	matchFull           bool
}

const foreignKeysSQL = `
SELECT con.conname::text, cl.relname::text, pcl.relname::text, con.confdeltype::text, con.confmatchtype = 'f',
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.o),
       ARRAY(SELECT a.attname::text FROM unnest(coalesce(con.confdelsetcols, con.conkey)) WITH ORDINALITY k(n, o)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.o),
       EXISTS (SELECT 1 FROM unnest(coalesce(con.confdelsetcols, con.conkey)) k(n)
               JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n WHERE a.attnotnull)
FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid
JOIN pg_namespace ns ON ns.oid = cl.relnamespace
JOIN pg_class pcl ON pcl.oid = con.confrelid
WHERE con.contype = 'f' AND ns.nspname = current_schema()
ORDER BY cl.relname, con.conname`

func loadForeignKeys(ctx context.Context, q pgxQuerier) ([]foreignKey, error) {
	rows, err := q.Query(ctx, foreignKeysSQL)
	if err != nil {
		return nil, fmt.Errorf("list foreign keys: %w", err)
	}
	fks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (foreignKey, error) {
		var fk foreignKey
		err := r.Scan(&fk.name, &fk.table, &fk.parent, &fk.delType, &fk.matchFull,
			&fk.cols, &fk.parentCols, &fk.setCols, &fk.setColNotNull)
		return fk, err
	})
	if err != nil {
		return nil, fmt.Errorf("list foreign keys: %w", err)
	}
	return fks, nil
}

// pgxQuerier is what the read-only helpers need; *pgx.Conn and
// *pgxpool.Pool satisfy it.
type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func (fk foreignKey) repair() Repair {
	switch fk.delType {
	case "c":
		return RepairDelete
	case "n":
		if fk.setColNotNull {
			return RepairReport
		}
		return RepairSetNull
	default:
		return RepairReport
	}
}

// orphanCond is the SQL condition, on alias x, that x's foreign key fk is
// set (MATCH SIMPLE: every column non-NULL; MATCH FULL likewise) and no
// parent row matches it.
func (fk foreignKey) orphanCond(x string) string {
	var nn, eq []string
	for i, c := range fk.cols {
		qc := pgx.Identifier{c}.Sanitize()
		nn = append(nn, x+"."+qc+" IS NOT NULL")
		eq = append(eq, "p."+pgx.Identifier{fk.parentCols[i]}.Sanitize()+" = "+x+"."+qc)
	}
	return fmt.Sprintf("%s AND NOT EXISTS (SELECT 1 FROM %s p WHERE %s)",
		strings.Join(nn, " AND "), pgx.Identifier{fk.parent}.Sanitize(), strings.Join(eq, " AND "))
}

func (fk foreignKey) count(ctx context.Context, q pgxQuerier) (int64, error) {
	var n int64
	err := q.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM %s x WHERE %s",
		pgx.Identifier{fk.table}.Sanitize(), fk.orphanCond("x"))).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count orphans of %s: %w", fk.name, err)
	}
	return n, nil
}

// Orphans counts, for every foreign key of the current schema, the rows
// whose parent is missing, and says what the orphans job would do with
// them. It only reads; it may run on the primary only (ErrStandby
// otherwise), because a standby's view can lag the repairs.
func (m *Maintainer) Orphans(ctx context.Context) ([]OrphanCount, error) {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("maint: orphans: %w", err)
	}
	defer conn.Release()
	if err := checkPrimary(ctx, conn.Conn()); err != nil {
		return nil, fmt.Errorf("maint: orphans: %w", err)
	}
	return m.countOrphans(ctx, conn.Conn())
}

func (m *Maintainer) countOrphans(ctx context.Context, q pgxQuerier) ([]OrphanCount, error) {
	fks, err := loadForeignKeys(ctx, q)
	if err != nil {
		return nil, err
	}
	out := make([]OrphanCount, 0, len(fks))
	for _, fk := range fks {
		n, err := fk.count(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, OrphanCount{Table: fk.table, Constraint: fk.name, Columns: fk.cols,
			Parent: fk.parent, Rows: n, Repair: fk.repair()})
	}
	return out, nil
}

// orphans counts orphans per foreign key, then repairs the ones whose
// foreign key says what to do (see Repair). Deleting a CASCADE orphan
// fires its own cascades as a normal delete would.
func (m *Maintainer) orphans(ctx context.Context, conn *pgx.Conn, res *Result) error {
	fks, err := loadForeignKeys(ctx, conn)
	if err != nil {
		return err
	}
	found := make([]int64, len(fks))
	for i, fk := range fks {
		if found[i], err = fk.count(ctx, conn); err != nil {
			return err
		}
		res.Actions = append(res.Actions, Action{Kind: ActionFound, Table: fk.table, Object: fk.name, Rows: found[i],
			Detail: fmt.Sprintf("%s(%s) → missing %s; repair: %s", fk.table, strings.Join(fk.cols, ", "), fk.parent, fk.repair())})
	}
	for i, fk := range fks {
		if found[i] == 0 {
			continue
		}
		t := pgx.Identifier{fk.table}.Sanitize()
		pick := fmt.Sprintf("ctid = ANY(ARRAY(SELECT x.ctid FROM %s x WHERE %s LIMIT $1)) AND %s",
			t, fk.orphanCond("x"), fk.orphanCond("t"))
		switch fk.repair() {
		case RepairDelete:
			n, err := m.repeat(ctx, conn, "delete orphans of "+fk.name,
				fmt.Sprintf("DELETE FROM %s t WHERE t.%s", t, pick))
			if err != nil {
				return err
			}
			res.Actions = append(res.Actions, Action{Kind: ActionDeleted, Table: fk.table, Object: fk.name, Rows: n,
				Detail: "ON DELETE CASCADE orphans"})
		case RepairSetNull:
			sets := make([]string, len(fk.setCols))
			for j, c := range fk.setCols {
				sets[j] = pgx.Identifier{c}.Sanitize() + " = NULL"
			}
			n, err := m.repeat(ctx, conn, "clear orphan references of "+fk.name,
				fmt.Sprintf("UPDATE %s t SET %s WHERE t.%s", t, strings.Join(sets, ", "), pick))
			if err != nil {
				return err
			}
			res.Actions = append(res.Actions, Action{Kind: ActionSetNull, Table: fk.table, Object: fk.name, Rows: n,
				Detail: "ON DELETE SET NULL references to missing " + fk.parent})
		default:
			res.Actions = append(res.Actions, Action{Kind: ActionReported, Table: fk.table, Object: fk.name, Rows: found[i],
				Detail: fmt.Sprintf("left in place: the schema never removes %s rows implicitly (missing %s)", fk.table, fk.parent)})
			m.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "orphan rows left for an operator",
				slog.String("table", fk.table), slog.String("constraint", fk.name),
				slog.String("parent", fk.parent), slog.Int64("rows", found[i]))
		}
	}
	return nil
}
