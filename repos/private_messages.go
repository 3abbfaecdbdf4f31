package repos

import (
	"context"
	"encoding/json"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// PrivateMessages is the repository of one-to-one chats between local users:
// sessions (one live session per unordered pair of users, whoever starts
// it), their messages, and per-participant read markers.
//
// Messages of a session are ordered by (created_ts, id). Sends to one
// session are serialised (the session row's FOR NO KEY UPDATE lock, held to
// COMMIT) and created_ts never goes below the session's latest message, so
// within a session the order is commit order: a follower paginating forward
// never skips a message that commits later (the same argument as for
// Events). Authorization (who may read a session) is the caller's job;
// participant checks here only guard writes and read markers.
//
// Safe for concurrent use.
type PrivateMessages struct{ c *core }

// PrivateSession is a live session. A participant whose account was hard
// deleted shows as nil.
type PrivateSession struct {
	ID        int64   `db:"id"`
	UserLow   *string `db:"user_low"`
	UserHigh  *string `db:"user_high"`
	CreatedTS int64   `db:"created_ts"`
	UpdatedTS int64   `db:"updated_ts"`
}

// PrivateMessage is a live message of a live session.
type PrivateMessage struct {
	ID        int64 `db:"id"`
	SessionID int64 `db:"session_id"`
	// SenderID is nil when the sender's account was hard deleted (the
	// message outlives its author).
	SenderID  *string         `db:"sender_id"`
	Content   json.RawMessage `db:"content"`
	CreatedTS int64           `db:"created_ts"`
}

// MessagePageRequest asks for one page of a session's messages.
type MessagePageRequest struct {
	SessionID int64
	From      string
	// Dir defaults to the cursor's direction, else Backward (newest first).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

const sessionColumns = `s.id, s.user_low, s.user_high, s.created_ts, s.updated_ts`

const messageColumns = `m.id, m.session_id, m.sender_id, m.content, m.created_ts`

const (
	sqlCountLiveUsers = `SELECT count(*) FROM users WHERE user_id = ANY($1) AND deleted_at IS NULL`

	sqlInsertSession = `
INSERT INTO private_sessions AS s (user_low, user_high, created_ts, updated_ts)
VALUES ($1, $2, $3, $3)
ON CONFLICT (user_low, user_high) WHERE deleted_at IS NULL DO NOTHING
RETURNING ` + sessionColumns

	sqlGetSessionByPair = `
SELECT ` + sessionColumns + ` FROM private_sessions s
WHERE s.user_low = $1 AND s.user_high = $2 AND s.deleted_at IS NULL`

	sqlGetSession = `SELECT ` + sessionColumns + ` FROM private_sessions s WHERE s.id = $1 AND s.deleted_at IS NULL`

	sqlDeleteSession  = `UPDATE private_sessions SET deleted_at = $2, updated_ts = $2 WHERE id = $1 AND deleted_at IS NULL`
	sqlRestoreSession = `UPDATE private_sessions SET deleted_at = NULL, updated_ts = $2 WHERE id = $1 AND deleted_at IS NOT NULL`

	// Locks a live session the sender takes part in; serialises sends.
	sqlLockSession = `
SELECT id FROM private_sessions
WHERE id = $1 AND deleted_at IS NULL AND $2 IN (user_low, user_high)
FOR NO KEY UPDATE`

	// Its own statement after sqlLockSession, so its snapshot sees the
	// previous sender's commit: created_ts is never below the session's
	// latest live message, whatever the clocks of other instances say.
	sqlInsertMessage = `
INSERT INTO private_messages AS m (session_id, sender_id, content, created_ts)
VALUES ($1, $2, $3, GREATEST($4, COALESCE(
    (SELECT l.created_ts FROM private_messages l
     WHERE l.session_id = $1 AND l.deleted_at IS NULL
     ORDER BY l.created_ts DESC, l.id DESC LIMIT 1), $4)))
RETURNING ` + messageColumns

	sqlGetMessage = `
SELECT ` + messageColumns + `
FROM private_messages m JOIN private_sessions s ON s.id = m.session_id AND s.deleted_at IS NULL
WHERE m.id = $1 AND m.deleted_at IS NULL`

	// Keyset on private_messages_session_page_idx
	// (session_id, created_ts, id) WHERE deleted_at IS NULL.
	sqlMessagesAfter = `
SELECT ` + messageColumns + ` FROM private_messages m
WHERE m.session_id = $1 AND m.deleted_at IS NULL AND (m.created_ts, m.id) > ($2, $3)
ORDER BY m.created_ts, m.id
LIMIT $4`

	sqlMessagesBefore = `
SELECT ` + messageColumns + ` FROM private_messages m
WHERE m.session_id = $1 AND m.deleted_at IS NULL AND (m.created_ts, m.id) < ($2, $3)
ORDER BY m.created_ts DESC, m.id DESC
LIMIT $4`

	// The message to mark read: live, in a live session of which the user
	// is a participant.
	sqlReadTarget = `
SELECT m.created_ts, m.id
FROM private_messages m JOIN private_sessions s ON s.id = m.session_id AND s.deleted_at IS NULL
WHERE m.id = $3 AND m.session_id = $1 AND m.deleted_at IS NULL AND $2 IN (s.user_low, s.user_high)`

	// Moves the marker forward only.
	sqlUpsertReadMarker = `
INSERT INTO private_session_read_markers AS k (session_id, user_id, last_read_ts, last_read_id, updated_ts)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (session_id, user_id) DO UPDATE SET
    last_read_ts = EXCLUDED.last_read_ts, last_read_id = EXCLUDED.last_read_id, updated_ts = EXCLUDED.updated_ts
WHERE (k.last_read_ts, k.last_read_id) < (EXCLUDED.last_read_ts, EXCLUDED.last_read_id)`

	// Live messages after the user's marker not sent by the user: an
	// index-only range scan of private_messages_session_page_idx (sender_id
	// is INCLUDEd). No row: session absent, deleted, or not the user's.
	sqlUnreadCount = `
SELECT (SELECT count(*) FROM private_messages m
        WHERE m.session_id = s.id AND m.deleted_at IS NULL AND m.sender_id IS DISTINCT FROM $2
          AND (m.created_ts, m.id) > (COALESCE(k.last_read_ts, -9223372036854775808),
                                      COALESCE(k.last_read_id, -9223372036854775808)))
FROM private_sessions s
LEFT JOIN private_session_read_markers k ON k.session_id = s.id AND k.user_id = $2
WHERE s.id = $1 AND s.deleted_at IS NULL AND $2 IN (s.user_low, s.user_high)`

	sqlDeleteMessage  = `UPDATE private_messages SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL`
	sqlRestoreMessage = `UPDATE private_messages SET deleted_at = NULL WHERE id = $1 AND deleted_at IS NOT NULL`
)

// orderPair returns the pair in the order the schema stores it (byte order,
// the same as PostgreSQL's COLLATE "C").
func orderPair(a, b string) (string, string) {
	if b < a {
		return b, a
	}
	return a, b
}

func checkPair(a, b string) (string, string, error) {
	if err := checkUserID("user_a", a, false); err != nil {
		return "", "", err
	}
	if err := checkUserID("user_b", b, false); err != nil {
		return "", "", err
	}
	if a == b {
		return "", "", invalid("user_b", "a session needs two different users")
	}
	lo, hi := orderPair(a, b)
	return lo, hi, nil
}

// GetOrCreateSession returns the live session of two live local users,
// creating it if there is none; created says which. (a, b) and (b, a) name
// the same session.
//
// Errors: ErrInvalidArgument (malformed or equal IDs); ErrNotFound if a
// user is absent or soft-deleted; ErrUnavailable.
func (p *PrivateMessages) GetOrCreateSession(ctx context.Context, a, b string) (s PrivateSession, created bool, tok router.Token, err error) {
	lo, hi, err := checkPair(a, b)
	if err != nil {
		return PrivateSession{}, false, router.Token{}, err
	}
	tok, err = write(ctx, p.c, "private_messages.get_or_create_session", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var n int
		if err := tx.QueryRow(ctx, sqlCountLiveUsers, []string{lo, hi}).Scan(&n); err != nil {
			return nil, err
		}
		if n != 2 {
			return nil, pgx.ErrNoRows
		}
		rows, _ := tx.Query(ctx, sqlInsertSession, lo, hi, p.c.nowMS())
		list, err := pgx.CollectRows(rows, pgx.RowToStructByName[PrivateSession])
		if err != nil {
			return nil, err
		}
		if len(list) == 1 {
			s, created = list[0], true
			return nil, nil
		}
		// A live session exists (perhaps committed by a concurrent call
		// after this statement's snapshot: the next statement sees it).
		rows, _ = tx.Query(ctx, sqlGetSessionByPair, lo, hi)
		s, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[PrivateSession])
		return nil, err
	})
	if err != nil {
		return PrivateSession{}, false, tok, err
	}
	return s, created, tok, nil
}

// GetSession returns the live session of two users.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) GetSession(ctx context.Context, a, b string, opts ...router.Consistency) (PrivateSession, error) {
	cons, err := consistency(opts)
	if err != nil {
		return PrivateSession{}, err
	}
	lo, hi, err := checkPair(a, b)
	if err != nil {
		return PrivateSession{}, err
	}
	v, _, err := read(ctx, p.c, "private_messages.get_session", cons, false, func(ctx context.Context, q router.Querier) (PrivateSession, error) {
		rows, _ := q.Query(ctx, sqlGetSessionByPair, lo, hi)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[PrivateSession])
	})
	return v, err
}

// GetSessionByID returns a live session.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) GetSessionByID(ctx context.Context, sessionID int64, opts ...router.Consistency) (PrivateSession, error) {
	cons, err := consistency(opts)
	if err != nil {
		return PrivateSession{}, err
	}
	if err := checkSessionID(sessionID); err != nil {
		return PrivateSession{}, err
	}
	v, _, err := read(ctx, p.c, "private_messages.get_session_by_id", cons, false, func(ctx context.Context, q router.Querier) (PrivateSession, error) {
		rows, _ := q.Query(ctx, sqlGetSession, sessionID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[PrivateSession])
	})
	return v, err
}

// DeleteSession soft-deletes a live session: it and its messages disappear
// from every read path, and the pair may start a new session.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) DeleteSession(ctx context.Context, sessionID int64) (router.Token, error) {
	return p.setDeleted(ctx, "private_messages.delete_session", sqlDeleteSession, sessionID, true)
}

// RestoreSession undoes DeleteSession.
//
// Errors: ErrInvalidArgument; ErrNotFound (no deleted session with that
// ID); ErrConflict if the pair has started a new live session since;
// ErrUnavailable.
func (p *PrivateMessages) RestoreSession(ctx context.Context, sessionID int64) (router.Token, error) {
	return p.setDeleted(ctx, "private_messages.restore_session", sqlRestoreSession, sessionID, true)
}

// DeleteMessage soft-deletes a live message.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) DeleteMessage(ctx context.Context, messageID int64) (router.Token, error) {
	return p.setDeleted(ctx, "private_messages.delete", sqlDeleteMessage, messageID, false)
}

// RestoreMessage undoes DeleteMessage; the message reappears at its old
// position.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) RestoreMessage(ctx context.Context, messageID int64) (router.Token, error) {
	return p.setDeleted(ctx, "private_messages.restore", sqlRestoreMessage, messageID, false)
}

func (p *PrivateMessages) setDeleted(ctx context.Context, op, sql string, id int64, session bool) (router.Token, error) {
	field := "message_id"
	if session {
		field = "session_id"
	}
	if id <= 0 {
		return router.Token{}, invalid(field, "must be positive")
	}
	args := []any{id}
	if sql != sqlRestoreMessage {
		args = append(args, p.c.nowMS())
	}
	return write(ctx, p.c, op, func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return nil, execOne(ctx, tx, sql, args...)
	})
}

// SendMessage appends a message from senderID (a participant) to a live
// session. Content is a JSON object of at most MaxContentBytes.
//
// Errors: ErrInvalidArgument; ErrNotFound if the session is absent,
// deleted, or senderID is not a participant; ErrUnavailable.
func (p *PrivateMessages) SendMessage(ctx context.Context, sessionID int64, senderID string, content json.RawMessage) (PrivateMessage, router.Token, error) {
	if err := checkSessionID(sessionID); err != nil {
		return PrivateMessage{}, router.Token{}, err
	}
	if err := checkUserID("sender_id", senderID, false); err != nil {
		return PrivateMessage{}, router.Token{}, err
	}
	if err := checkJSONObject("content", content, MaxContentBytes); err != nil {
		return PrivateMessage{}, router.Token{}, err
	}
	var out PrivateMessage
	tok, err := write(ctx, p.c, "private_messages.send", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var id int64
		if err := tx.QueryRow(ctx, sqlLockSession, sessionID, senderID).Scan(&id); err != nil {
			return nil, err
		}
		rows, _ := tx.Query(ctx, sqlInsertMessage, sessionID, senderID, content, p.c.nowMS())
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[PrivateMessage])
		return nil, err
	})
	return out, tok, err
}

// GetMessage returns a live message of a live session.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (p *PrivateMessages) GetMessage(ctx context.Context, messageID int64, opts ...router.Consistency) (PrivateMessage, error) {
	cons, err := consistency(opts)
	if err != nil {
		return PrivateMessage{}, err
	}
	if messageID <= 0 {
		return PrivateMessage{}, invalid("message_id", "must be positive")
	}
	v, _, err := read(ctx, p.c, "private_messages.get", cons, false, func(ctx context.Context, q router.Querier) (PrivateMessage, error) {
		rows, _ := q.Query(ctx, sqlGetMessage, messageID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[PrivateMessage])
	})
	return v, err
}

// PageMessages returns one page of a live session's messages, keyset on
// (created_ts, id): Backward (default) is newest first, Forward oldest
// first. Forward pages always carry Next, for following the session.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor (forged, or from another
// session), ErrNotFound (session absent or deleted), ErrUnavailable.
func (p *PrivateMessages) PageMessages(ctx context.Context, req MessagePageRequest) (Page[PrivateMessage], error) {
	if err := checkSessionID(req.SessionID); err != nil {
		return Page[PrivateMessage]{}, err
	}
	pg, err := p.c.pageSetup("from", req.From, req.Dir, Backward, req.Limit, kindPrivateMessages,
		strconv.FormatInt(req.SessionID, 10), int64Edge)
	if err != nil {
		return Page[PrivateMessage]{}, err
	}
	sql := sqlMessagesAfter
	if pg.dir == Backward {
		sql = sqlMessagesBefore
	}
	items, _, err := read(ctx, p.c, "private_messages.page", req.Consistency, false, func(ctx context.Context, q router.Querier) ([]PrivateMessage, error) {
		return queryScoped(ctx, q, sqlSessionLive, req.SessionID, sql,
			[]any{req.SessionID, pg.start.A, pg.start.B, pg.limit + 1}, pgx.RowToStructByName[PrivateMessage])
	})
	if err != nil {
		return Page[PrivateMessage]{}, err
	}
	return finishPage(p.c, pg, items, true, func(x PrivateMessage) cursorPos {
		return cursorPos{A: x.CreatedTS, B: x.ID}
	}), nil
}

// MarkRead moves userID's read marker in a session forward to messageID
// (never backward) and reports whether it moved.
//
// Errors: ErrInvalidArgument; ErrNotFound if the message is not a live
// message of that live session or userID is not a participant;
// ErrUnavailable.
func (p *PrivateMessages) MarkRead(ctx context.Context, sessionID int64, userID string, messageID int64) (bool, router.Token, error) {
	if err := checkSessionID(sessionID); err != nil {
		return false, router.Token{}, err
	}
	if err := checkUserID("user_id", userID, false); err != nil {
		return false, router.Token{}, err
	}
	if messageID <= 0 {
		return false, router.Token{}, invalid("message_id", "must be positive")
	}
	moved := false
	tok, err := write(ctx, p.c, "private_messages.mark_read", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var ts, id int64
		if err := tx.QueryRow(ctx, sqlReadTarget, sessionID, userID, messageID).Scan(&ts, &id); err != nil {
			return nil, err
		}
		tag, err := tx.Exec(ctx, sqlUpsertReadMarker, sessionID, userID, ts, id, p.c.nowMS())
		moved = err == nil && tag.RowsAffected() > 0
		return nil, err
	})
	return moved, tok, err
}

// UnreadCount counts the live messages of a live session after userID's
// read marker that userID did not send.
//
// Errors: ErrInvalidArgument; ErrNotFound if the session is absent, deleted
// or not userID's; ErrUnavailable.
func (p *PrivateMessages) UnreadCount(ctx context.Context, sessionID int64, userID string, opts ...router.Consistency) (int64, error) {
	cons, err := consistency(opts)
	if err != nil {
		return 0, err
	}
	if err := checkSessionID(sessionID); err != nil {
		return 0, err
	}
	if err := checkUserID("user_id", userID, false); err != nil {
		return 0, err
	}
	v, _, err := read(ctx, p.c, "private_messages.unread_count", cons, false, func(ctx context.Context, q router.Querier) (int64, error) {
		rows, _ := q.Query(ctx, sqlUnreadCount, sessionID, userID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int64])
	})
	return v, err
}

func checkSessionID(id int64) error {
	if id <= 0 {
		return invalid("session_id", "must be positive")
	}
	return nil
}
