package repos

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// Events is the repository of room timelines.
//
// # Ordering and followers
//
// Each event gets a stream ordering from a sequence when it is appended.
// Sequence values are handed out when the INSERT runs but become visible at
// COMMIT, so two concurrent appends to one room could commit out of order:
// a reader paginating forward could see ordering 11 before 10 commits, hand
// out a cursor "after 11", and skip 10 forever.
//
// hsdal rules that out by serialising appends per room rather than by
// tracking a "persisted up to" position (Synapse's approach, which needs
// every writer's in-flight positions, across processes): AppendEvent takes
// the room row's FOR NO KEY UPDATE lock before nextval runs, in the same
// statement, and holds it until COMMIT. PostgreSQL makes a committed
// transaction visible before it releases its locks, so the next appender of
// the room draws its ordering only after the previous event is visible, on
// the primary; standbys replay commit records in WAL order, which is commit
// order, so the same holds there. Within a room, then, "visible" is always
// a prefix of the stream orderings: a forward page's cursor (the last
// ordering it returned) never passes a position an in-flight append could
// still fill, so a follower never skips an event. Appends to different
// rooms do not wait for each other; FOR NO KEY UPDATE does not block the
// foreign-key checks (FOR KEY SHARE) of other writers.
//
// The cost is one appender per room at a time, which matches Matrix: events
// of a room are also ordered by its DAG, which a homeserver serialises per
// room anyway. Rows inserted into room_events by other code that does not
// take the lock lose the guarantee. Restoring a soft-deleted event makes it
// visible again at its old position: a follower that already passed it
// does not see it (the same as a Matrix redaction being undone).
//
// Safe for concurrent use.
type Events struct{ c *core }

// Event is a live room event.
type Event struct {
	EventID        string          `db:"event_id"`
	StreamOrdering int64           `db:"stream_ordering"`
	RoomID         string          `db:"room_id"`
	Sender         string          `db:"sender"`
	Type           string          `db:"type"`
	StateKey       *string         `db:"state_key"`
	Content        json.RawMessage `db:"content"`
	OriginServerTS int64           `db:"origin_server_ts"`
	CreatedTS      int64           `db:"created_ts"`
}

// NewEvent is an event to append.
type NewEvent struct {
	EventID  string
	RoomID   string
	Sender   string
	Type     string
	StateKey *string
	// Content is a JSON object of at most MaxContentBytes.
	Content json.RawMessage
	// OriginServerTS is the sending server's timestamp (Unix ms); 0 means
	// now by the injected clock.
	OriginServerTS int64
}

// EventPageRequest is a Matrix /messages-style request.
type EventPageRequest struct {
	RoomID string
	// From is a cursor from a previous page's Next or Prev; "" starts at the
	// live edge (Backward) or at the room's first event (Forward).
	From string
	// Dir defaults to the cursor's direction, else Backward.
	Dir   Direction
	Limit int
	// Types, if non-empty, keeps only events of these types (at most
	// MaxTypeFilters).
	Types       []string
	Consistency router.Consistency
}

const eventColumns = `e.event_id, e.stream_ordering, e.room_id, e.sender, e.type, e.state_key, e.content, e.origin_server_ts, e.created_ts`

const (
	// The CTE locks the live room row first; the INSERT's rows come from it,
	// so nextval (the column default) is evaluated only once the lock is
	// held. No room row → nothing inserted → ErrNotFound.
	sqlAppendEvent = `
WITH r AS (
    SELECT room_id FROM rooms WHERE room_id = $2 AND deleted_at IS NULL FOR NO KEY UPDATE
)
INSERT INTO room_events AS e (event_id, room_id, sender, type, state_key, content, origin_server_ts, created_ts)
SELECT $1, r.room_id, $3, $4, $5, $6, $7, $8 FROM r
RETURNING ` + eventColumns

	sqlGetEvent = `
SELECT ` + eventColumns + `
FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.deleted_at IS NULL
WHERE e.event_id = $1 AND e.deleted_at IS NULL`

	sqlGetEvents = `
SELECT ` + eventColumns + `
FROM room_events e JOIN rooms r ON r.room_id = e.room_id AND r.deleted_at IS NULL
WHERE e.event_id = ANY($1) AND e.deleted_at IS NULL`

	// Timeline pages: keyset on room_events_room_stream_idx
	// (room_id, stream_ordering) WHERE deleted_at IS NULL.
	sqlEventsBefore = `
SELECT ` + eventColumns + ` FROM room_events e
WHERE e.room_id = $1 AND e.deleted_at IS NULL AND e.stream_ordering < $2
ORDER BY e.stream_ordering DESC
LIMIT $3`

	sqlEventsAfter = `
SELECT ` + eventColumns + ` FROM room_events e
WHERE e.room_id = $1 AND e.deleted_at IS NULL AND e.stream_ordering > $2
ORDER BY e.stream_ordering
LIMIT $3`

	sqlEventsBeforeTyped = `
SELECT ` + eventColumns + ` FROM room_events e
WHERE e.room_id = $1 AND e.deleted_at IS NULL AND e.stream_ordering < $2 AND e.type = ANY($4)
ORDER BY e.stream_ordering DESC
LIMIT $3`

	sqlEventsAfterTyped = `
SELECT ` + eventColumns + ` FROM room_events e
WHERE e.room_id = $1 AND e.deleted_at IS NULL AND e.stream_ordering > $2 AND e.type = ANY($4)
ORDER BY e.stream_ordering
LIMIT $3`

	sqlDeleteEvent  = `UPDATE room_events SET deleted_at = $2 WHERE event_id = $1 AND deleted_at IS NULL RETURNING room_id`
	sqlRestoreEvent = `UPDATE room_events SET deleted_at = NULL WHERE event_id = $1 AND deleted_at IS NOT NULL RETURNING room_id`
)

// AppendEvent appends an event to a live room and returns it with its
// stream ordering. Appends to one room are serialised (see the type's
// documentation), so its stream orderings become visible in order.
//
// Errors: ErrInvalidArgument; ErrNotFound if the room is absent or deleted;
// ErrConflict if the event ID exists (Matrix event IDs are never reused,
// even after a soft delete); ErrUnavailable.
func (e *Events) AppendEvent(ctx context.Context, ne NewEvent) (Event, router.Token, error) {
	if err := checkNewEvent(ne); err != nil {
		return Event{}, router.Token{}, err
	}
	now := e.c.nowMS()
	ts := ne.OriginServerTS
	if ts == 0 {
		ts = now
	}
	var out Event
	tok, err := write(ctx, e.c, "events.append", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlAppendEvent, ne.EventID, ne.RoomID, ne.Sender, ne.Type, ne.StateKey,
			ne.Content, ts, now)
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Event])
		return nil, err
	})
	return out, tok, err
}

func checkNewEvent(ne NewEvent) error {
	if err := checkEventID("event_id", ne.EventID); err != nil {
		return err
	}
	if err := checkRoomID("room_id", ne.RoomID); err != nil {
		return err
	}
	if err := checkUserID("sender", ne.Sender, false); err != nil {
		return err
	}
	if err := checkOpaque("type", ne.Type, MaxEventTypeBytes); err != nil {
		return err
	}
	if ne.StateKey != nil {
		if err := checkOpaqueOrEmpty("state_key", *ne.StateKey, MaxStateKeyBytes); err != nil {
			return err
		}
	}
	if ne.OriginServerTS < 0 {
		return invalid("origin_server_ts", "negative")
	}
	return checkJSONObject("content", ne.Content, MaxContentBytes)
}

// GetEvent returns a live event of a live room.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (e *Events) GetEvent(ctx context.Context, eventID string, opts ...router.Consistency) (Event, error) {
	cons, err := consistency(opts)
	if err != nil {
		return Event{}, err
	}
	if err := checkEventID("event_id", eventID); err != nil {
		return Event{}, err
	}
	v, _, err := read(ctx, e.c, "events.get", cons, false, func(ctx context.Context, q router.Querier) (Event, error) {
		rows, _ := q.Query(ctx, sqlGetEvent, eventID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Event])
	})
	return v, err
}

// GetEvents returns the live events (of live rooms) among ids in one round
// trip, keyed by event ID; others are missing from the map. At most
// MaxBatchIDs IDs.
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (e *Events) GetEvents(ctx context.Context, eventIDs []string, opts ...router.Consistency) (map[string]Event, error) {
	cons, err := consistency(opts)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("event_ids", eventIDs, func(f, id string, _ bool) error { return checkEventID(f, id) }); err != nil {
		return nil, err
	}
	if len(eventIDs) == 0 {
		return map[string]Event{}, nil
	}
	list, _, err := read(ctx, e.c, "events.get_many", cons, false, func(ctx context.Context, q router.Querier) ([]Event, error) {
		rows, _ := q.Query(ctx, sqlGetEvents, eventIDs)
		return pgx.CollectRows(rows, pgx.RowToStructByName[Event])
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]Event, len(list))
	for _, x := range list {
		out[x.EventID] = x
	}
	return out, nil
}

// PageEvents returns one page of a live room's timeline, like Matrix
// /messages: Backward (the default without a cursor) is newest first from
// the live edge, Forward is oldest first. The cost of a page does not depend
// on its depth in the room (keyset on the room's stream orderings, partial
// index on live events).
//
// Forward pages always carry Next, so a follower can poll it: it returns
// each event appended later exactly once, in order (see the type's
// documentation for why no in-flight append can be skipped). A Backward
// page's Prev is the forward cursor to follow the room from its newest
// event.
//
// Errors: ErrInvalidArgument (limit, direction, types); ErrInvalidCursor
// (forged, or from another room or list, or for the other direction than
// an explicit Dir); ErrNotFound (room absent or deleted); ErrUnavailable.
func (e *Events) PageEvents(ctx context.Context, req EventPageRequest) (Page[Event], error) {
	if err := checkRoomID("room_id", req.RoomID); err != nil {
		return Page[Event]{}, err
	}
	if len(req.Types) > MaxTypeFilters {
		return Page[Event]{}, invalid("types", "%d types; at most %d", len(req.Types), MaxTypeFilters)
	}
	for i, t := range req.Types {
		if err := checkOpaque("types["+itoa(i)+"]", t, MaxEventTypeBytes); err != nil {
			return Page[Event]{}, err
		}
	}
	pg, err := e.c.pageSetup("from", req.From, req.Dir, Backward, req.Limit, kindEvents, req.RoomID, int64Edge)
	if err != nil {
		return Page[Event]{}, err
	}
	items, _, err := e.fetchPage(ctx, req.Consistency, req.RoomID, req.Types, pg)
	if err != nil {
		return Page[Event]{}, err
	}
	return finishPage(e.c, pg, items, true, func(x Event) cursorPos { return cursorPos{A: x.StreamOrdering} }), nil
}

// fetchPage is the read behind PageEvents: the room's liveness check and the
// keyset query in one round trip.
func (e *Events) fetchPage(ctx context.Context, cons router.Consistency, roomID string, types []string, pg pageState) ([]Event, router.ReadInfo, error) {
	var sql string
	args := []any{roomID, pg.start.A, pg.limit + 1}
	switch {
	case pg.dir == Backward && len(types) == 0:
		sql = sqlEventsBefore
	case pg.dir == Backward:
		sql, args = sqlEventsBeforeTyped, append(args, types)
	case len(types) == 0:
		sql = sqlEventsAfter
	default:
		sql, args = sqlEventsAfterTyped, append(args, types)
	}
	return read(ctx, e.c, "events.page", cons, false, func(ctx context.Context, q router.Querier) ([]Event, error) {
		return queryScoped(ctx, q, sqlRoomLive, roomID, sql, args, pgx.RowToStructByName[Event])
	})
}

// DeleteEvent hides a live event (a redaction-style soft delete) until
// RestoreEvent.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (e *Events) DeleteEvent(ctx context.Context, eventID string) (router.Token, error) {
	return e.setDeleted(ctx, "events.delete", sqlDeleteEvent, eventID, []any{eventID, e.c.nowMS()})
}

// RestoreEvent undoes DeleteEvent; the event reappears at its old stream
// ordering.
//
// Errors: ErrInvalidArgument, ErrNotFound (no hidden event with that ID),
// ErrUnavailable.
func (e *Events) RestoreEvent(ctx context.Context, eventID string) (router.Token, error) {
	return e.setDeleted(ctx, "events.restore", sqlRestoreEvent, eventID, []any{eventID})
}

func (e *Events) setDeleted(ctx context.Context, op, sql, eventID string, args []any) (router.Token, error) {
	if err := checkEventID("event_id", eventID); err != nil {
		return router.Token{}, err
	}
	return write(ctx, e.c, op, func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var roomID string
		return nil, tx.QueryRow(ctx, sql, args...).Scan(&roomID)
	})
}
