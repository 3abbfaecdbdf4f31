package repos

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

const (
	minInt64 = math.MinInt64
	maxInt64 = math.MaxInt64
)

// pageState is a validated page request: direction, bounded limit and the
// exclusive keyset anchor the query starts after.
type pageState struct {
	kind    cursorKind
	scope   string
	dir     Direction
	limit   int
	hasFrom bool
	start   cursorPos // exclusive anchor: the cursor's position, or the edge
	edge    func(Direction) cursorPos
}

// pageSetup validates a page request before any SQL runs: the direction (the
// zero value takes the cursor's direction, else def), the limit, and the
// cursor (signature, list kind, scope, and that its direction matches an
// explicitly requested one). edge gives, per direction, the anchor that
// precedes every row in that direction (where a page without cursor
// starts).
func (c *core) pageSetup(field, from string, dir, def Direction, limit int, kind cursorKind, scope string,
	edge func(Direction) cursorPos) (pageState, error) {
	if dir != 0 {
		if _, err := dir.resolve(def); err != nil {
			return pageState{}, err
		}
	}
	n, err := c.limit(limit)
	if err != nil {
		return pageState{}, err
	}
	pg := pageState{kind: kind, scope: scope, limit: n, edge: edge}
	if from == "" {
		pg.dir, _ = dir.resolve(def)
		pg.start = edge(pg.dir)
		return pg, nil
	}
	cdir, pos, err := c.cursors.decode(field, from, kind, scope)
	if err != nil {
		return pageState{}, err
	}
	if dir != 0 && dir != cdir {
		return pageState{}, fmt.Errorf("%w: %s: issued for dir=%s, request says dir=%s",
			ErrInvalidCursor, field, cdir, dir)
	}
	pg.dir, pg.hasFrom, pg.start = cdir, true, pos
	return pg, nil
}

func (d Direction) reverse() Direction {
	if d == Forward {
		return Backward
	}
	return Forward
}

// finishPage trims the limit+1 rows fetched to the page and signs its
// cursors. grows marks lists that gain rows at their forward end (timelines,
// messages): their forward pages always carry Next, for following.
func finishPage[T any](c *core, pg pageState, items []T, grows bool, key func(T) cursorPos) Page[T] {
	more := len(items) > pg.limit
	if more {
		items = items[:pg.limit]
	}
	out := Page[T]{Items: items}
	if items == nil {
		out.Items = []T{}
	}
	last, first := pg.start, pg.start
	if len(items) > 0 {
		last, first = key(items[len(items)-1]), key(items[0])
	} else if !pg.hasFrom {
		// Nothing at all in this direction: the reverse walk starts at its
		// own edge.
		first = pg.edge(pg.dir.reverse())
	}
	if more || grows && pg.dir == Forward {
		out.Next = c.cursors.encode(pg.kind, pg.scope, pg.dir, last)
	}
	out.Prev = c.cursors.encode(pg.kind, pg.scope, pg.dir.reverse(), first)
	return out
}

// int64Edge is the edge function of lists keyed by integers.
func int64Edge(d Direction) cursorPos {
	if d == Forward {
		return cursorPos{A: minInt64, B: minInt64}
	}
	return cursorPos{A: maxInt64, B: maxInt64}
}

// stringEdge is the edge function of lists keyed by one string (IDs, never
// empty, so "" precedes all; going backward the query has no upper bound).
func stringEdge(Direction) cursorPos { return cursorPos{} }

// execOne runs a statement that must affect exactly one row; zero rows is
// pgx.ErrNoRows (→ ErrNotFound).
func execOne(ctx context.Context, tx pgx.Tx, sql string, args ...any) error {
	tag, err := tx.Exec(ctx, sql, args...)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return pgx.ErrNoRows
	}
	return nil
}

// checkIDs validates a batch of identifiers.
func checkIDs(field string, ids []string, check func(field, id string, strict bool) error) error {
	if len(ids) > MaxBatchIDs {
		return invalid(field, "%d IDs; at most %d per call", len(ids), MaxBatchIDs)
	}
	for i, id := range ids {
		if err := check(fmt.Sprintf("%s[%d]", field, i), id, false); err != nil {
			return err
		}
	}
	return nil
}

func checkOpaqueOrEmpty(field, s string, max int) error { return checkString(field, s, max, false) }

// nonEmpty maps nil and "" to SQL NULL.
func nonEmpty(p *string) *string {
	if p == nil || *p == "" {
		return nil
	}
	return p
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func itoa(i int) string { return strconv.Itoa(i) }

// Parent checks for queryScoped: each selects one boolean, "the parent is
// live".
const (
	sqlRoomLive    = `SELECT EXISTS (SELECT 1 FROM rooms WHERE room_id = $1 AND deleted_at IS NULL)`
	sqlUserLive    = `SELECT EXISTS (SELECT 1 FROM users WHERE user_id = $1 AND deleted_at IS NULL)`
	sqlSessionLive = `SELECT EXISTS (SELECT 1 FROM private_sessions WHERE id = $1 AND deleted_at IS NULL)`
)

// queryScoped runs a list query scoped to a parent (a room, a user, a
// session) together with the parent's liveness check, in one round trip (a
// pgx batch). A missing or soft-deleted parent is pgx.ErrNoRows
// (→ ErrNotFound), so a list of a deleted room is "not found" rather than
// silently empty.
func queryScoped[T any](ctx context.Context, q router.Querier, parentSQL string, parentArg any,
	sql string, args []any, rowTo pgx.RowToFunc[T]) ([]T, error) {
	b := &pgx.Batch{}
	b.Queue(parentSQL, parentArg)
	b.Queue(sql, args...)
	br := q.SendBatch(ctx, b)
	items, err := func() ([]T, error) {
		var live bool
		if err := br.QueryRow().Scan(&live); err != nil {
			return nil, err
		}
		rows, err := br.Query()
		if err != nil {
			return nil, err
		}
		items, err := pgx.CollectRows(rows, rowTo)
		if err != nil {
			return nil, err
		}
		if !live {
			return nil, pgx.ErrNoRows
		}
		return items, nil
	}()
	if cerr := br.Close(); err == nil && cerr != nil {
		return nil, cerr
	}
	return items, err
}
