package maint

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// walk applies a data-modifying statement to table in keyset chunks of
// BatchSize rows ordered by the key columns (the primary key), one short
// autocommit statement per chunk, so the whole table is visited once with
// index range scans and no statement touches more than BatchSize rows.
//
// dml is a DELETE or UPDATE without RETURNING that refers to the chunk as
// the CTE c (holding the key columns) and to $2, $3, … which are args. It must
// re-check its own condition on the target row, so a row changed since the
// chunk was read is judged on its current version. walk returns the number
// of rows dml affected.
func (m *Maintainer) walk(ctx context.Context, conn *pgx.Conn, table string, keys []string, dml string, args ...any) (int64, error) {
	keyList := strings.Join(keys, ", ")
	cKeys := make([]string, len(keys))
	cDesc := make([]string, len(keys))
	for i, k := range keys {
		cKeys[i] = "c." + k
		cDesc[i] = "c." + k + " DESC"
	}
	ph := make([]string, len(keys))
	for i := range keys {
		ph[i] = fmt.Sprintf("$%d", i+2+len(args))
	}
	first := fmt.Sprintf(`WITH c AS (SELECT %[1]s FROM %[2]s ORDER BY %[1]s LIMIT $1),
d AS (%[3]s RETURNING 1)
SELECT %[4]s, (SELECT count(*) FROM d) FROM c ORDER BY %[5]s LIMIT 1`,
		keyList, table, dml, strings.Join(cKeys, ", "), strings.Join(cDesc, ", "))
	next := fmt.Sprintf(`WITH c AS (SELECT %[1]s FROM %[2]s WHERE (%[1]s) > (%[6]s) ORDER BY %[1]s LIMIT $1),
d AS (%[3]s RETURNING 1)
SELECT %[4]s, (SELECT count(*) FROM d) FROM c ORDER BY %[5]s LIMIT 1`,
		keyList, table, dml, strings.Join(cKeys, ", "), strings.Join(cDesc, ", "), strings.Join(ph, ", "))

	var (
		total int64
		last  []any
	)
	for {
		sql, all := first, append([]any{m.cfg.BatchSize}, args...)
		if last != nil {
			sql = next
			all = append(all, last...)
		}
		rows, err := conn.Query(ctx, sql, all...)
		if err != nil {
			return total, fmt.Errorf("%s: %w", table, err)
		}
		var vals []any
		for rows.Next() {
			vals, err = rows.Values()
			if err != nil {
				rows.Close()
				return total, fmt.Errorf("%s: %w", table, err)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return total, fmt.Errorf("%s: %w", table, err)
		}
		if vals == nil { // empty chunk: the walk is over
			return total, nil
		}
		n, ok := vals[len(keys)].(int64)
		if !ok {
			return total, fmt.Errorf("%s: unexpected count %T", table, vals[len(keys)])
		}
		total += n
		last = vals[:len(keys)]
		if err := m.pause(ctx); err != nil {
			return total, err
		}
	}
}

// repeat runs a statement that changes at most BatchSize rows ($1 is the
// batch size) until it changes fewer than that, and returns the total. The
// statement's own WHERE clause must make it converge (typically
// "ctid = ANY(ARRAY(SELECT ctid FROM … WHERE <cond> LIMIT $1)) AND <cond>").
func (m *Maintainer) repeat(ctx context.Context, conn *pgx.Conn, what, sql string, args ...any) (int64, error) {
	var total int64
	all := append([]any{m.cfg.BatchSize}, args...)
	for {
		tag, err := conn.Exec(ctx, sql, all...)
		if err != nil {
			return total, fmt.Errorf("%s: %w", what, err)
		}
		n := tag.RowsAffected()
		total += n
		if n < int64(m.cfg.BatchSize) {
			return total, nil
		}
		if err := m.pause(ctx); err != nil {
			return total, err
		}
	}
}
