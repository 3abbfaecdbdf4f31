package maint

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Purge of soft-deleted rows. Order matters for the foreign keys: leaves
// (tokens, events, aliases, messages) first, then devices (whose delete
// cascades to their tokens), then parents with all their content (rooms,
// private sessions), and users last, scrubbed rather than deleted.

// purgeLeaves are tables whose soft-deleted rows are deleted on their own.
// Statements get $1 = the batch size, $2 = the table's cutoff (Unix ms) and,
// when withNow is set, $3 = now (Unix ms).
var purgeLeaves = []struct {
	table   string
	keys    []string // keyset walk along these (the primary key); nil: use sql with repeat
	withNow bool
	sql     string
}{
	{"access_tokens", []string{"id"}, false, `DELETE FROM access_tokens t USING c
		WHERE t.id = c.id AND t.deleted_at < $2`},
	// A revoked refresh token is kept while a live, unexpired access token
	// minted with it exists (the delete would cascade to that token).
	{"refresh_tokens", []string{"id"}, true, `DELETE FROM refresh_tokens t USING c
		WHERE t.id = c.id AND t.deleted_at < $2
		  AND NOT EXISTS (SELECT 1 FROM access_tokens a
		                  WHERE a.refresh_token_id = t.id AND a.deleted_at IS NULL
		                    AND (a.expires_ts IS NULL OR a.expires_ts >= $3))`},
	// room_events_purge_idx and private_messages_purge_idx hold exactly the
	// soft-deleted rows, so these batches are index scans, not walks.
	{"room_events", nil, false, `DELETE FROM room_events t
		WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM room_events WHERE deleted_at < $2 LIMIT $1))
		  AND t.deleted_at < $2`},
	{"room_aliases", []string{"id"}, false, `DELETE FROM room_aliases t USING c
		WHERE t.id = c.id AND t.deleted_at < $2`},
	{"private_messages", nil, false, `DELETE FROM private_messages t
		WHERE t.ctid = ANY(ARRAY(SELECT ctid FROM private_messages WHERE deleted_at < $2 LIMIT $1))
		  AND t.deleted_at < $2`},
	// A device's delete cascades to its tokens, as its logout meant.
	{"devices", []string{"user_id", "device_id"}, false, `DELETE FROM devices t USING c
		WHERE t.user_id = c.user_id AND t.device_id = c.device_id AND t.deleted_at < $2`},
}

// purgeParent describes a soft-deletable parent whose content goes with it.
type purgeParent struct {
	table, key string
	children   []purgeChild
}

type purgeChild struct{ table, col string }

var purgeParents = []purgeParent{
	// A soft-deleted room hides its content through joins; purging it
	// removes that content (the foreign keys are NO ACTION, so the room's
	// own delete is refused until it is gone).
	{"rooms", "room_id", []purgeChild{
		{"room_events", "room_id"},
		{"room_memberships", "room_id"},
		{"room_membership_history", "room_id"},
		{"room_aliases", "room_id"},
	}},
	// Read markers go by ON DELETE CASCADE with the session.
	{"private_sessions", "id", []purgeChild{
		{"private_messages", "session_id"},
	}},
}

// scrubUsers clears the profile and the password hash of users soft-deleted
// before the cutoff. The row stays: a Matrix user ID must never be
// registered again.
const scrubUsers = `UPDATE users t SET displayname = NULL, avatar_url = NULL, password_hash = NULL FROM c
	WHERE t.user_id = c.user_id AND t.deleted_at < $2
	  AND (t.displayname IS NOT NULL OR t.avatar_url IS NOT NULL OR t.password_hash IS NOT NULL)`

func (m *Maintainer) purgeDeleted(ctx context.Context, conn *pgx.Conn, res *Result) error {
	now := m.cfg.Now()
	cutoff := func(table string) (int64, string, bool) {
		r := m.cfg.retention(table)
		if r < 0 {
			return 0, "", false
		}
		c := now.Add(-r)
		return c.UnixMilli(), "deleted before " + c.UTC().Format(time.RFC3339), true
	}
	nowMs := now.UnixMilli()

	for _, s := range purgeLeaves {
		ms, detail, ok := cutoff(s.table)
		if !ok {
			continue
		}
		var (
			n   int64
			err error
		)
		args := []any{ms}
		if s.withNow {
			args = append(args, nowMs)
		}
		if s.keys != nil {
			n, err = m.walk(ctx, conn, s.table, s.keys, s.sql, args...)
		} else {
			n, err = m.repeat(ctx, conn, "purge "+s.table, s.sql, args...)
		}
		if err != nil {
			return fmt.Errorf("purge %w", err)
		}
		res.Actions = append(res.Actions, Action{Kind: ActionDeleted, Table: s.table, Rows: n, Detail: detail})
	}

	for _, p := range purgeParents {
		ms, detail, ok := cutoff(p.table)
		if !ok {
			continue
		}
		if err := m.purgeParentRows(ctx, conn, p, ms, detail, res); err != nil {
			return err
		}
	}

	if ms, detail, ok := cutoff("users"); ok {
		n, err := m.walk(ctx, conn, "users", []string{"user_id"}, scrubUsers, ms)
		if err != nil {
			return fmt.Errorf("scrub %w", err)
		}
		res.Actions = append(res.Actions, Action{Kind: ActionScrubbed, Table: "users", Rows: n,
			Detail: detail + "; profile cleared, user ID kept reserved"})
	}
	return nil
}

// purgeParentRows deletes every parent row of p soft-deleted before cutoff,
// with all its children. Each child batch runs in its own short transaction
// that first locks the parent row and re-checks it is still deleted past
// the cutoff, so a parent restored concurrently keeps the rest of its
// content (what earlier batches removed was past retention already).
func (m *Maintainer) purgeParentRows(ctx context.Context, conn *pgx.Conn, p purgeParent, cutoff int64, detail string, res *Result) error {
	pt := pgx.Identifier{p.table}.Sanitize()
	pk := pgx.Identifier{p.key}.Sanitize()
	childRows := make([]int64, len(p.children))
	var parents, failed int64
	var last any
	for {
		q := fmt.Sprintf("SELECT %s FROM %s WHERE deleted_at < $1 ORDER BY %s LIMIT 100", pk, pt, pk)
		args := []any{cutoff}
		if last != nil {
			q = fmt.Sprintf("SELECT %s FROM %s WHERE deleted_at < $1 AND %s > $2 ORDER BY %s LIMIT 100", pk, pt, pk, pk)
			args = append(args, last)
		}
		rows, err := conn.Query(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("purge %s: %w", p.table, err)
		}
		keys, err := pgx.CollectRows(rows, pgx.RowTo[any])
		if err != nil {
			return fmt.Errorf("purge %s: %w", p.table, err)
		}
		if len(keys) == 0 {
			break
		}
		last = keys[len(keys)-1]
		for _, key := range keys {
			gone, err := m.purgeOne(ctx, conn, p, key, cutoff, childRows)
			if err != nil {
				var pgErr *pgconn.PgError
				if errors.As(err, &pgErr) && pgErr.Code == "23503" { // new content appeared meanwhile
					failed++
					m.cfg.Logger.WarnContext(ctx, "purge: parent still referenced, kept for the next run",
						"table", p.table, "error", err.Error())
					continue
				}
				return fmt.Errorf("purge %s: %w", p.table, err)
			}
			if gone {
				parents++
			}
		}
	}
	for i, c := range p.children {
		res.Actions = append(res.Actions, Action{Kind: ActionDeleted, Table: c.table, Rows: childRows[i],
			Detail: fmt.Sprintf("content of %s %s", p.table, detail)})
	}
	res.Actions = append(res.Actions, Action{Kind: ActionDeleted, Table: p.table, Rows: parents, Detail: detail})
	if failed > 0 {
		res.Actions = append(res.Actions, Action{Kind: ActionFailed, Table: p.table, Rows: failed,
			Detail: "still referenced by rows written during the purge; retried next run"})
	}
	return nil
}

// purgeOne removes one parent's children in batches and then the parent.
// It reports false when the parent was restored (or vanished) meanwhile.
func (m *Maintainer) purgeOne(ctx context.Context, conn *pgx.Conn, p purgeParent, key any, cutoff int64, childRows []int64) (bool, error) {
	pt := pgx.Identifier{p.table}.Sanitize()
	pk := pgx.Identifier{p.key}.Sanitize()
	lockParent := fmt.Sprintf("SELECT 1 FROM %s WHERE %s = $1 AND deleted_at < $2 FOR UPDATE", pt, pk)
	for i, c := range p.children {
		ct := pgx.Identifier{c.table}.Sanitize()
		del := fmt.Sprintf("DELETE FROM %s WHERE ctid = ANY(ARRAY(SELECT ctid FROM %s WHERE %s = $1 LIMIT $2))",
			ct, ct, pgx.Identifier{c.col}.Sanitize())
		for {
			var n int64
			still := true
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				var one int
				if err := tx.QueryRow(ctx, lockParent, key, cutoff).Scan(&one); err != nil {
					if errors.Is(err, pgx.ErrNoRows) {
						still = false
						return nil
					}
					return err
				}
				tag, err := tx.Exec(ctx, del, key, m.cfg.BatchSize)
				n = tag.RowsAffected()
				return err
			})
			if err != nil {
				return false, err
			}
			if !still {
				return false, nil
			}
			childRows[i] += n
			if n < int64(m.cfg.BatchSize) {
				break
			}
			if err := m.pause(ctx); err != nil {
				return false, err
			}
		}
	}
	tag, err := conn.Exec(ctx, fmt.Sprintf("DELETE FROM %s WHERE %s = $1 AND deleted_at < $2", pt, pk), key, cutoff)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}
