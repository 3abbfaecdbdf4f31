package maint

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

type vacuumCandidate struct {
	table      string
	live, dead int64
	xidAge     int64
}

// vacuumCandidatesSQL reads dead tuples (statistics) and the transaction-ID
// age of each table of the current schema, its TOAST table included.
const vacuumCandidatesSQL = `
SELECT c.relname::text, coalesce(s.n_live_tup, 0), coalesce(s.n_dead_tup, 0),
       greatest(age(c.relfrozenxid), age(t.relfrozenxid))::bigint
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')
ORDER BY c.relname`

// deadRatio is n_dead / (n_live + n_dead), 0 for an empty table.
func deadRatio(live, dead int64) float64 {
	if live+dead <= 0 {
		return 0
	}
	return float64(dead) / float64(live+dead)
}

// vacuum runs VACUUM (FREEZE, ANALYZE) on tables whose XID age passed
// FreezeAge and VACUUM (ANALYZE) on tables whose dead-tuple ratio passed
// VacuumDeadRatio with at least VacuumMinDeadTuples dead tuples. A table
// whose VACUUM fails (e.g. lock_timeout behind a schema change) is recorded
// as failed and the others go on.
func (m *Maintainer) vacuum(ctx context.Context, conn *pgx.Conn, res *Result) error {
	rows, err := conn.Query(ctx, vacuumCandidatesSQL)
	if err != nil {
		return fmt.Errorf("table statistics: %w", err)
	}
	cands, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (vacuumCandidate, error) {
		var c vacuumCandidate
		return c, r.Scan(&c.table, &c.live, &c.dead, &c.xidAge)
	})
	if err != nil {
		return fmt.Errorf("table statistics: %w", err)
	}
	for _, c := range cands {
		if !m.tableSelected(c.table) {
			continue
		}
		ratio := deadRatio(c.live, c.dead)
		var stmt, kind, detail string
		switch {
		case m.cfg.FreezeAge > 0 && c.xidAge > m.cfg.FreezeAge:
			stmt, kind = "VACUUM (FREEZE, ANALYZE) ", ActionFrozen
			detail = fmt.Sprintf("age(relfrozenxid) %d > %d", c.xidAge, m.cfg.FreezeAge)
		case c.dead >= m.cfg.VacuumMinDeadTuples && ratio > m.cfg.VacuumDeadRatio:
			stmt, kind = "VACUUM (ANALYZE) ", ActionVacuumed
			detail = fmt.Sprintf("%d dead of %d tuples (%.1f%% > %.1f%%)", c.dead, c.live+c.dead, ratio*100,
				m.cfg.VacuumDeadRatio*100)
		default:
			continue
		}
		if _, err := conn.Exec(ctx, stmt+pgx.Identifier{c.table}.Sanitize()); err != nil {
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				return fmt.Errorf("vacuum %s: %w", c.table, err)
			}
			res.Actions = append(res.Actions, Action{Kind: ActionFailed, Table: c.table,
				Detail: "VACUUM: " + pgErr.Code + " " + pgErr.Message})
			continue
		}
		res.Actions = append(res.Actions, Action{Kind: kind, Table: c.table, Detail: detail})
	}
	return nil
}
