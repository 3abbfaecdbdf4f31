package repos

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// Memberships is the repository of room memberships: the current membership
// of each (room, user) pair plus the append-only history of transitions.
// Memberships of a soft-deleted room are hidden from every read path and
// cannot change until the room is restored. Safe for concurrent use.
type Memberships struct{ c *core }

// MembershipState is a Matrix membership value.
type MembershipState string

// The Matrix membership values.
const (
	Join   MembershipState = "join"
	Invite MembershipState = "invite"
	Leave  MembershipState = "leave"
	Ban    MembershipState = "ban"
	Knock  MembershipState = "knock"
)

func (m MembershipState) valid() bool {
	switch m {
	case Join, Invite, Leave, Ban, Knock:
		return true
	}
	return false
}

// Membership is the current membership of a user in a live room.
type Membership struct {
	RoomID     string          `db:"room_id"`
	UserID     string          `db:"user_id"`
	Membership MembershipState `db:"membership"`
	// Sender caused the latest transition (the user, or e.g. a moderator).
	Sender         string  `db:"sender"`
	EventID        *string `db:"event_id"`
	StreamOrdering *int64  `db:"stream_ordering"`
	// MembershipTS is when the current membership value began (for joined
	// members: when they joined); a join → join update keeps it.
	MembershipTS int64 `db:"membership_ts"`
	UpdatedTS    int64 `db:"updated_ts"`
}

// MembershipTransition is one entry of a membership history.
type MembershipTransition struct {
	ID             int64            `db:"id"`
	RoomID         string           `db:"room_id"`
	UserID         string           `db:"user_id"`
	Membership     MembershipState  `db:"membership"`
	PrevMembership *MembershipState `db:"prev_membership"` // nil: first membership
	Sender         string           `db:"sender"`
	EventID        *string          `db:"event_id"`
	StreamOrdering *int64           `db:"stream_ordering"`
	Reason         *string          `db:"reason"`
	CreatedTS      int64            `db:"created_ts"`
}

// MembershipChange asks for a transition of UserID's membership in RoomID,
// caused by Sender.
type MembershipChange struct {
	RoomID string
	// UserID is the target (the Matrix state key).
	UserID string
	Sender string
	// Membership is the new value.
	Membership MembershipState
	// EventID and StreamOrdering link the m.room.member event, if stored
	// ("" and 0 for none).
	EventID        string
	StreamOrdering int64
	// Reason is an optional free-text reason (kicks, bans).
	Reason string
}

// MemberCounts counts a live room's members per membership value.
type MemberCounts struct {
	Joined, Invited, Left, Banned, Knocked int64
}

// MemberPageRequest asks for one page of a room's members with one
// membership value, keyset on (membership_ts, user_id): in the order they
// took that membership.
type MemberPageRequest struct {
	RoomID string
	// Membership selects which members; zero means Join. ListJoinedMembers
	// ignores it.
	Membership MembershipState
	From       string
	// Dir defaults to Forward (earliest first).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

// UserRoomsRequest asks for one page of the live rooms in which a user has
// one membership value, keyset on room_id.
type UserRoomsRequest struct {
	UserID string
	// Membership zero means Join.
	Membership MembershipState
	From       string
	// Dir defaults to Forward (ascending room ID).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

// HistoryRequest asks for one page of a user's membership history in a
// room, keyset on the history ID (the order transitions happened).
type HistoryRequest struct {
	RoomID, UserID string
	From           string
	// Dir defaults to Forward (oldest first).
	Dir         Direction
	Limit       int
	Consistency router.Consistency
}

// MaxReasonBytes bounds a membership change's reason.
const MaxReasonBytes = 4096

const membershipColumns = `m.room_id, m.user_id, m.membership, m.sender, m.event_id, m.stream_ordering, m.membership_ts, m.updated_ts`

const historyColumns = `h.id, h.room_id, h.user_id, h.membership, h.prev_membership, h.sender, h.event_id, h.stream_ordering, h.reason, h.created_ts`

const (
	// Locks the live room row: FOR NO KEY UPDATE serialises the room's
	// membership changes and event appends and does not block foreign-key
	// checks of other writers. No row: room absent or deleted.
	sqlLockRoom = `SELECT room_id FROM rooms WHERE room_id = $1 AND deleted_at IS NULL FOR NO KEY UPDATE`

	// Run as its own statement after sqlLockRoom, so that (in READ
	// COMMITTED) its snapshot is taken after the lock was granted and sees
	// the change of whoever held the lock before; in the locking statement
	// itself the subqueries would read the snapshot from before the wait.
	sqlCurrentMemberships = `
SELECT (SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $2) AS target,
       (SELECT membership FROM room_memberships WHERE room_id = $1 AND user_id = $3) AS sender`

	sqlSetMembership = `
WITH cur AS (
    INSERT INTO room_memberships AS m
        (room_id, user_id, membership, sender, event_id, stream_ordering, membership_ts, updated_ts)
    VALUES ($1, $2, $3, $4, NULLIF($5, ''), NULLIF($6::bigint, 0), $7, $7)
    ON CONFLICT (room_id, user_id) DO UPDATE SET
        membership      = EXCLUDED.membership,
        sender          = EXCLUDED.sender,
        event_id        = EXCLUDED.event_id,
        stream_ordering = EXCLUDED.stream_ordering,
        membership_ts   = CASE WHEN m.membership = EXCLUDED.membership THEN m.membership_ts
                               ELSE EXCLUDED.membership_ts END,
        updated_ts      = EXCLUDED.updated_ts
    RETURNING ` + membershipColumns + `
), hist AS (
    INSERT INTO room_membership_history
        (room_id, user_id, membership, prev_membership, sender, event_id, stream_ordering, reason, created_ts)
    VALUES ($1, $2, $3, NULLIF($8, ''), $4, NULLIF($5, ''), NULLIF($6::bigint, 0), NULLIF($9, ''), $7)
)
SELECT * FROM cur m`

	sqlGetMembership = `
SELECT ` + membershipColumns + `
FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id AND r.deleted_at IS NULL
WHERE m.room_id = $1 AND m.user_id = $2`

	// One primary-key probe of room_memberships plus one of rooms.
	sqlIsJoined = `
SELECT EXISTS (
    SELECT 1 FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id AND r.deleted_at IS NULL
    WHERE m.room_id = $1 AND m.user_id = $2 AND m.membership = 'join')`

	// Keyset on room_memberships_room_members_idx
	// (room_id, membership, membership_ts, user_id).
	sqlListMembersAsc = `
SELECT ` + membershipColumns + ` FROM room_memberships m
WHERE m.room_id = $1 AND m.membership = $2 AND (m.membership_ts, m.user_id) > ($3, $4)
ORDER BY m.membership_ts, m.user_id
LIMIT $5`

	sqlListMembersDesc = `
SELECT ` + membershipColumns + ` FROM room_memberships m
WHERE m.room_id = $1 AND m.membership = $2 AND (m.membership_ts, m.user_id) < ($3, $4)
ORDER BY m.membership_ts DESC, m.user_id DESC
LIMIT $5`

	// The cached list: a room's joined members, up to a bound.
	sqlListJoinedAll = `
SELECT ` + membershipColumns + ` FROM room_memberships m
WHERE m.room_id = $1 AND m.membership = 'join'
ORDER BY m.membership_ts, m.user_id
LIMIT $2`

	// Keyset on room_memberships_user_rooms_idx (user_id, membership,
	// room_id); rooms that are deleted are skipped by the join.
	sqlUserRoomsAsc = `
SELECT ` + membershipColumns + `
FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id AND r.deleted_at IS NULL
WHERE m.user_id = $1 AND m.membership = $2 AND m.room_id > $3
ORDER BY m.room_id
LIMIT $4`

	sqlUserRoomsDesc = `
SELECT ` + membershipColumns + `
FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id AND r.deleted_at IS NULL
WHERE m.user_id = $1 AND m.membership = $2 AND m.room_id < $3
ORDER BY m.room_id DESC
LIMIT $4`

	sqlUserRoomsLast = `
SELECT ` + membershipColumns + `
FROM room_memberships m JOIN rooms r ON r.room_id = m.room_id AND r.deleted_at IS NULL
WHERE m.user_id = $1 AND m.membership = $2
ORDER BY m.room_id DESC
LIMIT $3`

	// Index-only scan of room_memberships_room_members_idx.
	sqlCountMembers = `
SELECT m.membership, count(*) FROM room_memberships m WHERE m.room_id = $1 GROUP BY m.membership`

	sqlHistoryAsc = `
SELECT ` + historyColumns + ` FROM room_membership_history h
WHERE h.room_id = $1 AND h.user_id = $2 AND h.id > $3
ORDER BY h.id LIMIT $4`

	sqlHistoryDesc = `
SELECT ` + historyColumns + ` FROM room_membership_history h
WHERE h.room_id = $1 AND h.user_id = $2 AND h.id < $3
ORDER BY h.id DESC LIMIT $4`
)

// ChangeMembership applies a membership transition atomically: it locks the
// room (serialising the room's membership changes and event appends), checks
// the transition against the Matrix membership rules (CheckTransition),
// updates the current membership and appends the history entry, in one
// transaction.
//
// Errors: ErrInvalidArgument; ErrNotFound if the room is absent or
// soft-deleted; ErrConflict for an illegal transition (the error says
// which); ErrUnavailable.
func (ms *Memberships) ChangeMembership(ctx context.Context, ch MembershipChange) (Membership, router.Token, error) {
	if err := checkMembershipChange(ch); err != nil {
		return Membership{}, router.Token{}, err
	}
	var out Membership
	tok, err := write(ctx, ms.c, "memberships.change", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var locked string
		if err := tx.QueryRow(ctx, sqlLockRoom, ch.RoomID).Scan(&locked); err != nil {
			return nil, err
		}
		var target, sender *MembershipState
		if err := tx.QueryRow(ctx, sqlCurrentMemberships, ch.RoomID, ch.UserID, ch.Sender).
			Scan(&target, &sender); err != nil {
			return nil, err
		}
		var prev, senderState MembershipState
		if target != nil {
			prev = *target
		}
		if sender != nil {
			senderState = *sender
		}
		if err := CheckTransition(prev, senderState, ch.Sender == ch.UserID, ch.Membership); err != nil {
			return nil, err
		}
		rows, _ := tx.Query(ctx, sqlSetMembership, ch.RoomID, ch.UserID, string(ch.Membership), ch.Sender,
			ch.EventID, ch.StreamOrdering, ms.c.nowMS(), string(prev), ch.Reason)
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Membership])
		return []Change{{Kind: ChangeMembership, Key: ch.RoomID, Key2: ch.UserID}}, err
	})
	return out, tok, err
}

// Join makes userID join roomID (a join → join update is allowed).
// See ChangeMembership for errors.
func (ms *Memberships) Join(ctx context.Context, roomID, userID string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: userID, Sender: userID, Membership: Join})
}

// Invite makes sender (who must be joined) invite target.
// See ChangeMembership for errors.
func (ms *Memberships) Invite(ctx context.Context, roomID, sender, target string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: target, Sender: sender, Membership: Invite})
}

// Leave makes userID leave roomID (also rejects an invite or withdraws a
// knock). See ChangeMembership for errors.
func (ms *Memberships) Leave(ctx context.Context, roomID, userID string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: userID, Sender: userID, Membership: Leave})
}

// Kick makes sender (joined) remove target (membership leave).
// See ChangeMembership for errors.
func (ms *Memberships) Kick(ctx context.Context, roomID, sender, target, reason string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: target, Sender: sender, Membership: Leave, Reason: reason})
}

// Ban makes sender (joined) ban target. See ChangeMembership for errors.
func (ms *Memberships) Ban(ctx context.Context, roomID, sender, target, reason string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: target, Sender: sender, Membership: Ban, Reason: reason})
}

// Knock makes userID knock on roomID. See ChangeMembership for errors.
func (ms *Memberships) Knock(ctx context.Context, roomID, userID string) (Membership, router.Token, error) {
	return ms.ChangeMembership(ctx, MembershipChange{RoomID: roomID, UserID: userID, Sender: userID, Membership: Knock})
}

// CheckTransition reports whether a membership change is legal under the
// Matrix membership authorization rules, restricted to what a data layer can
// know: membership states, not power levels or join rules (the homeserver's
// event authorization checks those). prev and senderState are the target's
// and the sender's current memberships ("" for none); self says whether
// the sender is the target.
//
//   - join: only by the user themself; never while banned.
//   - invite: the sender must be joined; the target must not be joined or
//     banned.
//   - leave by the user themself: only from invite (reject), join (leave)
//     or knock (withdraw).
//   - leave by another user (kick, unban, invite withdrawal): the sender
//     must be joined.
//   - ban: the sender must be joined and not the target.
//   - knock: only by the user themself; not while banned, invited or
//     joined.
//
// An illegal change returns an error wrapping ErrConflict that names both
// states; an unknown value returns ErrInvalidArgument.
func CheckTransition(prev, senderState MembershipState, self bool, next MembershipState) error {
	if !next.valid() {
		return invalid("membership", "unknown value %q", string(next))
	}
	if prev != "" && !prev.valid() {
		return invalid("membership", "unknown current value %q", string(prev))
	}
	illegal := func(why string) error {
		from := string(prev)
		if from == "" {
			from = "none"
		}
		return fmt.Errorf("%w: membership %s → %s: %s", ErrConflict, from, next, why)
	}
	switch next {
	case Join:
		if !self {
			return illegal("only the user can join")
		}
		if prev == Ban {
			return illegal("the user is banned")
		}
	case Invite:
		if senderState != Join {
			return illegal("the inviter is not joined")
		}
		if prev == Join || prev == Ban {
			return illegal("the invitee is joined or banned")
		}
	case Leave:
		if self {
			if prev != Invite && prev != Join && prev != Knock {
				return illegal("the user is not invited, joined or knocking")
			}
		} else if senderState != Join {
			return illegal("the sender is not joined")
		}
	case Ban:
		if self {
			return illegal("a user cannot ban themself")
		}
		if senderState != Join {
			return illegal("the sender is not joined")
		}
	case Knock:
		if !self {
			return illegal("only the user can knock")
		}
		if prev == Ban || prev == Invite || prev == Join {
			return illegal("the user is banned, invited or joined")
		}
	}
	return nil
}

func checkMembershipChange(ch MembershipChange) error {
	if err := checkRoomID("room_id", ch.RoomID); err != nil {
		return err
	}
	if err := checkUserID("user_id", ch.UserID, false); err != nil {
		return err
	}
	if err := checkUserID("sender", ch.Sender, false); err != nil {
		return err
	}
	if !ch.Membership.valid() {
		return invalid("membership", "must be join, invite, leave, ban or knock")
	}
	if ch.EventID != "" {
		if err := checkEventID("event_id", ch.EventID); err != nil {
			return err
		}
	}
	if ch.StreamOrdering < 0 {
		return invalid("stream_ordering", "negative")
	}
	return checkText("reason", ch.Reason, MaxReasonBytes)
}

// GetMembership returns the current membership of userID in a live room.
//
// Errors: ErrInvalidArgument; ErrNotFound if the user never had a membership
// there or the room is absent or deleted; ErrUnavailable.
func (ms *Memberships) GetMembership(ctx context.Context, roomID, userID string, opts ...router.Consistency) (Membership, error) {
	cons, err := consistency(opts)
	if err != nil {
		return Membership{}, err
	}
	if err := checkRoomAndUser(roomID, userID); err != nil {
		return Membership{}, err
	}
	v, _, err := read(ctx, ms.c, "memberships.get", cons, false, func(ctx context.Context, q router.Querier) (Membership, error) {
		rows, _ := q.Query(ctx, sqlGetMembership, roomID, userID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[Membership])
	})
	return v, err
}

// IsJoined reports whether userID is joined to roomID (false for a deleted
// room), with one indexed lookup (primary keys of room_memberships and
// rooms).
//
// Errors: ErrInvalidArgument, ErrUnavailable.
func (ms *Memberships) IsJoined(ctx context.Context, roomID, userID string, opts ...router.Consistency) (bool, error) {
	cons, err := consistency(opts)
	if err != nil {
		return false, err
	}
	if err := checkRoomAndUser(roomID, userID); err != nil {
		return false, err
	}
	if cs := ms.c.caches; cs != nil {
		v, _, err := cachedGet(ctx, cs, cs.joined, cons, joinedKey(roomID, userID), loadJoined(ms.c, roomID, userID))
		return v, err
	}
	v, _, err := ms.fetchIsJoined(ctx, cons, roomID, userID)
	return v, err
}

// loadJoined is the cached read behind IsJoined. The entry depends on the
// membership and on the room's liveness: deleting or restoring a room
// invalidates the entries of its joined members (ChangeMembership without
// a user).
func loadJoined(c *core, roomID, userID string) stampedLoad[bool] {
	return func(ctx context.Context, cons router.Consistency) (bool, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "memberships.is_joined", cons,
			func(b *pgx.Batch) { b.Queue(sqlIsJoined, roomID, userID) },
			func(br pgx.BatchResults) (bool, bool, error) {
				var ok bool
				err := br.QueryRow().Scan(&ok)
				return ok, err == nil, err
			})
	}
}

// fetchIsJoined is the cacheable read behind IsJoined.
func (ms *Memberships) fetchIsJoined(ctx context.Context, cons router.Consistency, roomID, userID string) (bool, router.ReadInfo, error) {
	return read(ctx, ms.c, "memberships.is_joined", cons, false, func(ctx context.Context, q router.Querier) (bool, error) {
		var ok bool
		err := q.QueryRow(ctx, sqlIsJoined, roomID, userID).Scan(&ok)
		return ok, err
	})
}

// ListJoinedMembers returns one page of a live room's joined members, in
// the order they joined (req.Membership is ignored).
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrNotFound (room absent or
// deleted), ErrUnavailable.
func (ms *Memberships) ListJoinedMembers(ctx context.Context, req MemberPageRequest) (Page[Membership], error) {
	req.Membership = Join
	return ms.ListMembers(ctx, req)
}

// ListMembers returns one page of a live room's members with req.Membership
// (default Join), keyset on (membership_ts, user_id), using the
// (room_id, membership, membership_ts, user_id) index.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrNotFound (room absent or
// deleted), ErrUnavailable.
func (ms *Memberships) ListMembers(ctx context.Context, req MemberPageRequest) (Page[Membership], error) {
	if err := checkRoomID("room_id", req.RoomID); err != nil {
		return Page[Membership]{}, err
	}
	state := req.Membership
	if state == "" {
		state = Join
	}
	if !state.valid() {
		return Page[Membership]{}, invalid("membership", "must be join, invite, leave, ban or knock")
	}
	pg, err := ms.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindRoomMembers,
		req.RoomID+"\x00"+string(state), int64Edge)
	if err != nil {
		return Page[Membership]{}, err
	}
	if cs := ms.c.caches; cs != nil && state == Join {
		l, live, err := cachedGet(ctx, cs, cs.members, req.Consistency, req.RoomID, loadMembers(ms.c, req.RoomID, cs.maxMembers))
		if err != nil {
			return Page[Membership]{}, err
		}
		if !live {
			return Page[Membership]{}, notFound("memberships.list_members")
		}
		if items, ok := membersPage(l, pg); ok {
			return finishPage(ms.c, pg, items, false, func(x Membership) cursorPos {
				return cursorPos{A: x.MembershipTS, S: x.UserID}
			}), nil
		}
		// A large room, or a cursor the cached list cannot place: read the
		// page itself.
	}
	items, _, err := ms.fetchMembers(ctx, req.Consistency, req.RoomID, state, pg)
	if err != nil {
		return Page[Membership]{}, err
	}
	return finishPage(ms.c, pg, items, false, func(x Membership) cursorPos {
		return cursorPos{A: x.MembershipTS, S: x.UserID}
	}), nil
}

// fetchMembers is the cacheable read behind ListMembers.
func (ms *Memberships) fetchMembers(ctx context.Context, cons router.Consistency, roomID string, state MembershipState, pg pageState) ([]Membership, router.ReadInfo, error) {
	sql := sqlListMembersAsc
	if pg.dir == Backward {
		sql = sqlListMembersDesc
	}
	return read(ctx, ms.c, "memberships.list_members", cons, false, func(ctx context.Context, q router.Querier) ([]Membership, error) {
		return queryScoped(ctx, q, sqlRoomLive, roomID, sql,
			[]any{roomID, string(state), pg.start.A, pg.start.S, pg.limit + 1}, pgx.RowToStructByName[Membership])
	})
}

// loadMembers is the cached read behind ListJoinedMembers: the room's
// liveness and up to max+1 joined members (more than max: cached as large).
func loadMembers(c *core, roomID string, max int) stampedLoad[memberList] {
	return func(ctx context.Context, cons router.Consistency) (memberList, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "memberships.list_members", cons,
			func(b *pgx.Batch) {
				b.Queue(sqlRoomLive, roomID)
				b.Queue(sqlListJoinedAll, roomID, max+1)
			},
			func(br pgx.BatchResults) (memberList, bool, error) {
				var live bool
				if err := br.QueryRow().Scan(&live); err != nil {
					return memberList{}, false, err
				}
				rows, err := br.Query()
				if err != nil {
					return memberList{}, false, err
				}
				items, err := pgx.CollectRows(rows, pgx.RowToStructByName[Membership])
				switch {
				case err != nil:
					return memberList{}, false, err
				case !live:
					return memberList{}, false, nil
				case len(items) > max:
					return memberList{Large: true}, true, nil
				}
				return memberList{Members: items}, true, nil
			})
	}
}

// membersPage cuts one page (up to limit+1 rows, like the page queries)
// from a cached member list, in the database's (membership_ts, user_id)
// order, copying the rows (the list may be shared by the in-process tier). The cursor is placed by its membership_ts (an integer: no
// collation involved) and, among members with that same timestamp, by
// finding its user ID in the list; ok is false when the list is large or
// the cursor ties with members it cannot order without the database's
// collation.
func membersPage(l memberList, pg pageState) (items []Membership, ok bool) {
	if l.Large {
		return nil, false
	}
	list := l.Members
	a := pg.start.A
	lo := sort.Search(len(list), func(i int) bool { return list[i].MembershipTS >= a })
	hi := sort.Search(len(list), func(i int) bool { return list[i].MembershipTS > a })
	before, after := lo, lo // list[:before] precede the cursor, list[after:] follow it
	if lo < hi {
		at := -1
		for i := lo; i < hi; i++ {
			if list[i].UserID == pg.start.S {
				at = i
				break
			}
		}
		if at < 0 {
			return nil, false
		}
		before, after = at, at+1
	}
	n := pg.limit + 1
	if pg.dir == Forward {
		src := list[after:min(after+n, len(list))]
		items = make([]Membership, len(src))
		for i := range src {
			items[i] = cloneMembership(src[i])
		}
		return items, true
	}
	items = make([]Membership, 0, min(n, before))
	for i := before - 1; i >= 0 && len(items) < n; i-- {
		items = append(items, cloneMembership(list[i]))
	}
	return items, true
}

// ListRoomsOfUser returns one page of the live rooms where userID has
// req.Membership (default Join), keyset on room ID. userID may be a remote
// user.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrUnavailable.
func (ms *Memberships) ListRoomsOfUser(ctx context.Context, req UserRoomsRequest) (Page[Membership], error) {
	if err := checkUserID("user_id", req.UserID, false); err != nil {
		return Page[Membership]{}, err
	}
	state := req.Membership
	if state == "" {
		state = Join
	}
	if !state.valid() {
		return Page[Membership]{}, invalid("membership", "must be join, invite, leave, ban or knock")
	}
	pg, err := ms.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindUserRooms,
		req.UserID+"\x00"+string(state), stringEdge)
	if err != nil {
		return Page[Membership]{}, err
	}
	items, _, err := read(ctx, ms.c, "memberships.list_rooms_of_user", req.Consistency, false, func(ctx context.Context, q router.Querier) ([]Membership, error) {
		var rows pgx.Rows
		switch {
		case pg.dir == Forward:
			rows, _ = q.Query(ctx, sqlUserRoomsAsc, req.UserID, string(state), pg.start.S, pg.limit+1)
		case pg.hasFrom:
			rows, _ = q.Query(ctx, sqlUserRoomsDesc, req.UserID, string(state), pg.start.S, pg.limit+1)
		default:
			rows, _ = q.Query(ctx, sqlUserRoomsLast, req.UserID, string(state), pg.limit+1)
		}
		return pgx.CollectRows(rows, pgx.RowToStructByName[Membership])
	})
	if err != nil {
		return Page[Membership]{}, err
	}
	return finishPage(ms.c, pg, items, false, func(x Membership) cursorPos { return cursorPos{S: x.RoomID} }), nil
}

// CountMembers counts a live room's members per membership value with an
// index-only scan.
//
// Errors: ErrInvalidArgument, ErrNotFound (room absent or deleted),
// ErrUnavailable.
func (ms *Memberships) CountMembers(ctx context.Context, roomID string, opts ...router.Consistency) (MemberCounts, error) {
	cons, err := consistency(opts)
	if err != nil {
		return MemberCounts{}, err
	}
	if err := checkRoomID("room_id", roomID); err != nil {
		return MemberCounts{}, err
	}
	type row struct {
		Membership MembershipState
		N          int64
	}
	rows, _, err := read(ctx, ms.c, "memberships.count", cons, false, func(ctx context.Context, q router.Querier) ([]row, error) {
		return queryScoped(ctx, q, sqlRoomLive, roomID, sqlCountMembers, []any{roomID}, pgx.RowToStructByPos[row])
	})
	if err != nil {
		return MemberCounts{}, err
	}
	var out MemberCounts
	for _, r := range rows {
		switch r.Membership {
		case Join:
			out.Joined = r.N
		case Invite:
			out.Invited = r.N
		case Leave:
			out.Left = r.N
		case Ban:
			out.Banned = r.N
		case Knock:
			out.Knocked = r.N
		}
	}
	return out, nil
}

// ListHistory returns one page of userID's membership transitions in a live
// room, oldest first by default.
//
// Errors: ErrInvalidArgument, ErrInvalidCursor, ErrNotFound (room absent or
// deleted), ErrUnavailable.
func (ms *Memberships) ListHistory(ctx context.Context, req HistoryRequest) (Page[MembershipTransition], error) {
	if err := checkRoomAndUser(req.RoomID, req.UserID); err != nil {
		return Page[MembershipTransition]{}, err
	}
	pg, err := ms.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindMembershipHistory,
		req.RoomID+"\x00"+req.UserID, int64Edge)
	if err != nil {
		return Page[MembershipTransition]{}, err
	}
	sql := sqlHistoryAsc
	if pg.dir == Backward {
		sql = sqlHistoryDesc
	}
	items, _, err := read(ctx, ms.c, "memberships.history", req.Consistency, false, func(ctx context.Context, q router.Querier) ([]MembershipTransition, error) {
		return queryScoped(ctx, q, sqlRoomLive, req.RoomID, sql,
			[]any{req.RoomID, req.UserID, pg.start.A, pg.limit + 1}, pgx.RowToStructByName[MembershipTransition])
	})
	if err != nil {
		return Page[MembershipTransition]{}, err
	}
	return finishPage(ms.c, pg, items, true, func(x MembershipTransition) cursorPos { return cursorPos{A: x.ID} }), nil
}

func checkRoomAndUser(roomID, userID string) error {
	if err := checkRoomID("room_id", roomID); err != nil {
		return err
	}
	return checkUserID("user_id", userID, false)
}
