package repos

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// Rooms is the repository of room metadata and room aliases. A soft-deleted
// room hides its aliases, memberships and events from every read path
// without touching them, so RestoreRoom brings all of them back. Safe for
// concurrent use.
type Rooms struct{ c *core }

// Room is a live room's metadata.
type Room struct {
	RoomID    string  `db:"room_id"`
	Creator   string  `db:"creator"`
	IsPublic  bool    `db:"is_public"`
	Name      *string `db:"name"`
	Topic     *string `db:"topic"`
	CreatedTS int64   `db:"created_ts"`
	UpdatedTS int64   `db:"updated_ts"`
}

// NewRoom describes a room to create.
type NewRoom struct {
	RoomID   string
	Creator  string // may be a remote user
	IsPublic bool
	Name     *string
	Topic    *string
}

// RoomUpdate changes the non-nil fields; a pointer to "" clears Name/Topic.
type RoomUpdate struct {
	Name     *string
	Topic    *string
	IsPublic *bool
}

// RoomPageRequest asks for one page of the public room directory, keyset on
// room_id.
type RoomPageRequest struct {
	From string
	// Dir defaults to Forward (ascending room ID).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

// Bounds of room metadata.
const (
	MaxRoomNameBytes  = 1024
	MaxRoomTopicBytes = 65536
	// MaxAliasesPerRoom bounds ListAliases' answer (aliases of one room are
	// few; the bound keeps the call's cost fixed).
	MaxAliasesPerRoom = 100
)

const roomColumns = `room_id, creator, is_public, name, topic, created_ts, updated_ts`

const (
	sqlInsertRoom = `
INSERT INTO rooms (room_id, creator, is_public, name, topic, created_ts, updated_ts)
VALUES ($1, $2, $3, $4, $5, $6, $6)
RETURNING ` + roomColumns

	sqlGetRoom = `SELECT ` + roomColumns + ` FROM rooms WHERE room_id = $1 AND deleted_at IS NULL`

	sqlGetRooms = `SELECT ` + roomColumns + ` FROM rooms WHERE room_id = ANY($1) AND deleted_at IS NULL`

	sqlUpdateRoom = `
UPDATE rooms SET
    name       = CASE WHEN $2::boolean THEN NULLIF($3, '') ELSE name END,
    topic      = CASE WHEN $4::boolean THEN NULLIF($5, '') ELSE topic END,
    is_public  = COALESCE($6, is_public),
    updated_ts = $7
WHERE room_id = $1 AND deleted_at IS NULL
RETURNING ` + roomColumns

	sqlDeleteRoom  = `UPDATE rooms SET deleted_at = $2, updated_ts = $2 WHERE room_id = $1 AND deleted_at IS NULL`
	sqlRestoreRoom = `UPDATE rooms SET deleted_at = NULL, updated_ts = $2 WHERE room_id = $1 AND deleted_at IS NOT NULL`

	sqlListPublicRoomsAsc = `
SELECT ` + roomColumns + ` FROM rooms
WHERE is_public AND deleted_at IS NULL AND room_id > $1
ORDER BY room_id LIMIT $2`

	sqlListPublicRoomsDesc = `
SELECT ` + roomColumns + ` FROM rooms
WHERE is_public AND deleted_at IS NULL AND room_id < $1
ORDER BY room_id DESC LIMIT $2`

	sqlListPublicRoomsLast = `
SELECT ` + roomColumns + ` FROM rooms
WHERE is_public AND deleted_at IS NULL
ORDER BY room_id DESC LIMIT $1`

	// The alias is created only for a live room (else nothing is inserted
	// → ErrNotFound); a live duplicate is a unique violation → ErrConflict.
	sqlInsertAlias = `
INSERT INTO room_aliases (room_alias, room_id, creator, created_ts)
SELECT $1, r.room_id, $3, $4 FROM rooms r WHERE r.room_id = $2 AND r.deleted_at IS NULL
RETURNING id`

	sqlResolveAlias = `
SELECT a.room_id FROM room_aliases a
JOIN rooms r ON r.room_id = a.room_id AND r.deleted_at IS NULL
WHERE a.room_alias = $1 AND a.deleted_at IS NULL`

	sqlListAliases = `
SELECT a.room_alias FROM room_aliases a
WHERE a.room_id = $1 AND a.deleted_at IS NULL
  AND EXISTS (SELECT 1 FROM rooms r WHERE r.room_id = $1 AND r.deleted_at IS NULL)
ORDER BY a.room_alias LIMIT $2`

	sqlDeleteAlias = `UPDATE room_aliases SET deleted_at = $2 WHERE room_alias = $1 AND deleted_at IS NULL`
)

// CreateRoom stores a new room.
//
// Errors: ErrInvalidArgument; ErrConflict if the room ID exists (even
// soft-deleted); ErrUnavailable.
func (r *Rooms) CreateRoom(ctx context.Context, nr NewRoom) (Room, router.Token, error) {
	if err := checkRoomID("room_id", nr.RoomID); err != nil {
		return Room{}, router.Token{}, err
	}
	if err := checkUserID("creator", nr.Creator, false); err != nil {
		return Room{}, router.Token{}, err
	}
	if err := checkRoomText(nr.Name, nr.Topic); err != nil {
		return Room{}, router.Token{}, err
	}
	var out Room
	tok, err := write(ctx, r.c, "rooms.create", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlInsertRoom, nr.RoomID, nr.Creator, nr.IsPublic, nonEmpty(nr.Name),
			nonEmpty(nr.Topic), r.c.nowMS())
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Room])
		return []Change{{Kind: ChangeRoom, Key: nr.RoomID}}, err
	})
	return out, tok, err
}

// GetRoom returns a live room.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (r *Rooms) GetRoom(ctx context.Context, roomID string, opts ...router.Consistency) (Room, error) {
	cons, err := consistency(opts)
	if err != nil {
		return Room{}, err
	}
	if err := checkRoomID("room_id", roomID); err != nil {
		return Room{}, err
	}
	if cs := r.c.caches; cs != nil {
		v, found, err := cachedGet(ctx, cs, cs.room, cons, roomID, loadRoom(r.c, roomID))
		if err == nil && !found {
			err = notFound("rooms.get")
		}
		return v, err
	}
	v, _, err := r.fetchRoom(ctx, cons, roomID)
	return v, err
}

// loadRoom is the cached read behind GetRoom (and IsJoined's room check).
func loadRoom(c *core, roomID string) stampedLoad[Room] {
	return func(ctx context.Context, cons router.Consistency) (Room, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "rooms.get", cons,
			func(b *pgx.Batch) { b.Queue(sqlGetRoom, roomID) },
			func(br pgx.BatchResults) (Room, bool, error) { return collectOne(br, pgx.RowToStructByName[Room]) })
	}
}

// fetchRoom is the cacheable read behind GetRoom.
func (r *Rooms) fetchRoom(ctx context.Context, cons router.Consistency, roomID string) (Room, router.ReadInfo, error) {
	return read(ctx, r.c, "rooms.get", cons, false, func(ctx context.Context, q router.Querier) (Room, error) {
		rows, _ := q.Query(ctx, sqlGetRoom, roomID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Room])
	})
}

// GetRooms returns the live rooms among ids in one round trip, keyed by room
// ID; absent and deleted rooms are missing from the map. At most
// MaxBatchIDs IDs.
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (r *Rooms) GetRooms(ctx context.Context, roomIDs []string, opts ...router.Consistency) (map[string]Room, error) {
	cons, err := consistency(opts)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("room_ids", roomIDs, func(f, id string, _ bool) error { return checkRoomID(f, id) }); err != nil {
		return nil, err
	}
	if len(roomIDs) == 0 {
		return map[string]Room{}, nil
	}
	list, _, err := read(ctx, r.c, "rooms.get_many", cons, false, func(ctx context.Context, q router.Querier) ([]Room, error) {
		rows, _ := q.Query(ctx, sqlGetRooms, roomIDs)
		return pgx.CollectRows(rows, pgx.RowToStructByName[Room])
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]Room, len(list))
	for _, x := range list {
		out[x.RoomID] = x
	}
	return out, nil
}

// UpdateRoom changes the non-nil fields of a live room.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (r *Rooms) UpdateRoom(ctx context.Context, roomID string, u RoomUpdate) (Room, router.Token, error) {
	if err := checkRoomID("room_id", roomID); err != nil {
		return Room{}, router.Token{}, err
	}
	if err := checkRoomText(u.Name, u.Topic); err != nil {
		return Room{}, router.Token{}, err
	}
	var out Room
	tok, err := write(ctx, r.c, "rooms.update", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlUpdateRoom, roomID, u.Name != nil, deref(u.Name), u.Topic != nil,
			deref(u.Topic), u.IsPublic, r.c.nowMS())
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Room])
		return []Change{{Kind: ChangeRoom, Key: roomID}}, err
	})
	return out, tok, err
}

// DeleteRoom soft-deletes a live room; its aliases, memberships and events
// disappear from every read path with it, and appends and membership
// changes to it fail with ErrNotFound until RestoreRoom.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (r *Rooms) DeleteRoom(ctx context.Context, roomID string) (router.Token, error) {
	return r.setDeleted(ctx, "rooms.delete", sqlDeleteRoom, roomID)
}

// RestoreRoom undoes DeleteRoom.
//
// Errors: ErrInvalidArgument, ErrNotFound (no soft-deleted room),
// ErrUnavailable.
func (r *Rooms) RestoreRoom(ctx context.Context, roomID string) (router.Token, error) {
	return r.setDeleted(ctx, "rooms.restore", sqlRestoreRoom, roomID)
}

func (r *Rooms) setDeleted(ctx context.Context, op, sql, roomID string) (router.Token, error) {
	if err := checkRoomID("room_id", roomID); err != nil {
		return router.Token{}, err
	}
	return write(ctx, r.c, op, func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		// Member lists and aliases of the room are hidden/shown with it;
		// the Key2-less membership change means "the whole room".
		return []Change{{Kind: ChangeRoom, Key: roomID}, {Kind: ChangeMembership, Key: roomID}},
			execOne(ctx, tx, sql, roomID, r.c.nowMS())
	})
}

// ListPublicRooms returns one page of the live public rooms, ascending room
// ID by default.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrUnavailable.
func (r *Rooms) ListPublicRooms(ctx context.Context, req RoomPageRequest) (Page[Room], error) {
	pg, err := r.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindPublicRooms, "public", stringEdge)
	if err != nil {
		return Page[Room]{}, err
	}
	items, _, err := read(ctx, r.c, "rooms.list_public", req.Consistency, false, func(ctx context.Context, q router.Querier) ([]Room, error) {
		var rows pgx.Rows
		switch {
		case pg.dir == Forward:
			rows, _ = q.Query(ctx, sqlListPublicRoomsAsc, pg.start.S, pg.limit+1)
		case pg.hasFrom:
			rows, _ = q.Query(ctx, sqlListPublicRoomsDesc, pg.start.S, pg.limit+1)
		default:
			rows, _ = q.Query(ctx, sqlListPublicRoomsLast, pg.limit+1)
		}
		return pgx.CollectRows(rows, pgx.RowToStructByName[Room])
	})
	if err != nil {
		return Page[Room]{}, err
	}
	return finishPage(r.c, pg, items, false, func(x Room) cursorPos { return cursorPos{S: x.RoomID} }), nil
}

// CreateAlias points alias at a live room.
//
// Errors: ErrInvalidArgument; ErrNotFound if the room is absent or deleted;
// ErrConflict if the alias is in use; ErrUnavailable.
func (r *Rooms) CreateAlias(ctx context.Context, alias, roomID, creator string) (router.Token, error) {
	if err := checkSigilID("alias", alias, '#'); err != nil {
		return router.Token{}, err
	}
	if err := checkRoomID("room_id", roomID); err != nil {
		return router.Token{}, err
	}
	if err := checkUserID("creator", creator, false); err != nil {
		return router.Token{}, err
	}
	return write(ctx, r.c, "rooms.create_alias", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var id int64
		err := tx.QueryRow(ctx, sqlInsertAlias, alias, roomID, creator, r.c.nowMS()).Scan(&id)
		return []Change{{Kind: ChangeAlias, Key: alias}}, err
	})
}

// ResolveAlias returns the room a live alias points at, if that room is
// live.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (r *Rooms) ResolveAlias(ctx context.Context, alias string, opts ...router.Consistency) (string, error) {
	cons, err := consistency(opts)
	if err != nil {
		return "", err
	}
	if err := checkSigilID("alias", alias, '#'); err != nil {
		return "", err
	}
	v, _, err := read(ctx, r.c, "rooms.resolve_alias", cons, false, func(ctx context.Context, q router.Querier) (string, error) {
		rows, _ := q.Query(ctx, sqlResolveAlias, alias)
		return pgx.CollectExactlyOneRow(rows, pgx.RowTo[string])
	})
	return v, err
}

// ListAliases returns up to MaxAliasesPerRoom live aliases of a live room,
// sorted; none for a deleted room.
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (r *Rooms) ListAliases(ctx context.Context, roomID string, opts ...router.Consistency) ([]string, error) {
	cons, err := consistency(opts)
	if err != nil {
		return nil, err
	}
	if err := checkRoomID("room_id", roomID); err != nil {
		return nil, err
	}
	v, _, err := read(ctx, r.c, "rooms.list_aliases", cons, false, func(ctx context.Context, q router.Querier) ([]string, error) {
		rows, _ := q.Query(ctx, sqlListAliases, roomID, MaxAliasesPerRoom)
		return pgx.CollectRows(rows, pgx.RowTo[string])
	})
	return v, err
}

// DeleteAlias removes a live alias (soft delete); the alias may then be
// created again, for any room.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (r *Rooms) DeleteAlias(ctx context.Context, alias string) (router.Token, error) {
	if err := checkSigilID("alias", alias, '#'); err != nil {
		return router.Token{}, err
	}
	return write(ctx, r.c, "rooms.delete_alias", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return []Change{{Kind: ChangeAlias, Key: alias}}, execOne(ctx, tx, sqlDeleteAlias, alias, r.c.nowMS())
	})
}

func checkRoomText(name, topic *string) error {
	if name != nil {
		if err := checkText("name", *name, MaxRoomNameBytes); err != nil {
			return err
		}
	}
	if topic != nil {
		if err := checkText("topic", *topic, MaxRoomTopicBytes); err != nil {
			return err
		}
	}
	return nil
}
