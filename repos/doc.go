// Package repos holds hsdal's typed repositories for users, devices, access
// tokens, rooms (and aliases), memberships, room events and private
// messages. One file per entity; every query runs through the router, so
// writes go to the primary in one transaction each and reads go wherever
// their consistency requirement allows.
//
//	rp, err := repos.New(r, repos.Config{CursorKey: key}) // r: *router.Router
//	if err != nil { ... }
//	u, tok, err := rp.Users.CreateUser(ctx, repos.NewUser{UserID: "@alice:example.org"})
//	page, err := rp.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: roomID, Dir: repos.Backward})
//
// Normally dal.Open builds the repositories; New is for callers that wire
// the router themselves.
//
// # Writes and reads
//
// Every write method runs one router.Write (one transaction on the primary)
// and returns the commit's router.Token, which the router also merges into
// the context's session (router.WithSession). Every read method takes an
// optional router.Consistency (list methods: a Consistency field); the
// default is bounded staleness with the router's configured bound, and
// within a session every read is at least read-your-writes. Nothing that
// must run on the primary (row locks, sequences) is ever in a read.
//
// # Validation and errors
//
// Input is validated before any SQL runs: Matrix identifiers against the
// specification's grammar (see ValidateUserID and friends), lengths, NUL
// bytes and control characters, JSON content, page sizes, cursors. A
// rejection is an *ArgumentError naming the field (errors.Is
// ErrInvalidArgument) and nothing is written; a bad cursor is
// ErrInvalidCursor. Database errors map onto ErrNotFound and ErrConflict
// (and ErrUnavailable from the router), wrapping the pgx error. Any write
// may also return router.ErrCommitUnknown when the connection died during
// COMMIT: the write may or may not have happened.
//
// # Pagination
//
// Lists are paginated by keyset only, never OFFSET (a test scans this
// package's SQL), ordered by a unique key: events by stream ordering within
// a room, private messages by (created_ts, id) within a session, members by
// (membership_ts, user_id), users by (created_ts, user_id), ID-keyed lists
// by ID. A Page carries opaque cursors signed with HMAC-SHA256
// (Config.CursorKey) that hold the list kind, a hash of its scope (room,
// session, user), the direction and the full sort key; a forged, truncated
// or foreign cursor is ErrInvalidCursor. A page's cost does not depend on
// its depth.
//
// Room timelines and private sessions can be followed forward without ever
// skipping a row committed later: appends are serialised per room (per
// session) so orderings become visible in order; see Events.
//
// # Soft delete
//
// Every read path hides soft-deleted rows and the children of soft-deleted
// parents (a device of a deleted user, a token of a deleted device, the
// memberships, aliases and events of a deleted room, the messages of a
// deleted session), backed by partial indexes on deleted_at IS NULL.
// Deletes have Restore counterparts, reversible until the maintenance purge
// (except DeleteAlias and RevokeToken: a deleted alias is free for reuse, a
// revoked token is a logout).
//
// # Caching seam
//
// Every read goes through one internal function that reports where it ran
// (router.ReadInfo, including the WAL position it covers), and the hot
// reads (token lookup, user, device list, room, IsJoined, member pages,
// timeline pages) through one per-entity fetch function each, so a cache
// can wrap them without changing any public signature. Every write reports
// the entities it changed, with its commit token, to Config.AfterCommit.
package repos
