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
// # Caching
//
// With Config.Cache set (dal.Open does it when the DAL has Redis), the hot
// reads are cache-aside: LookupToken (token hash → owner), GetUser,
// ListDevices (a user's whole device list), GetRoom, ListJoinedMembers (a
// room's whole joined list; ListMembers with Join) and IsJoined. Values use
// compact Binary codecs; absent rows are cached as short-lived negative
// entries. Lists are bounded: a user with more than CacheMaxDevices devices
// or a room with more than CacheMaxMembers joined members is cached only as
// "large" and its pages are read from PostgreSQL, so a 50 000-member room
// never becomes one giant value rewritten on every join. Pages are cut from
// a cached list by locating the cursor's row in it (the list is in the
// database's order, so no collation is needed in Go); a cursor whose row
// is gone reads the page from PostgreSQL.
//
// Consistency:
//
//   - Strong reads, and BoundedStaleness reads with an explicit bound, bypass
//     the cache (the cache proves WAL positions, not ages; the router
//     measures replica lag in time).
//   - A cached entry serves a read only if it was read at a WAL position
//     above the read's token (the session token merged with a
//     ReadYourWrites token), or the token is below the relay's watermark
//     (every write below it has been invalidated, so a current entry holds
//     it); otherwise the read loads from PostgreSQL and offers the result
//     to the cache, which stores it only if no invalidation at or above its
//     position happened meanwhile (a Lua-checked marker per key). Loads
//     run at the router's default staleness bound plus the token, so one
//     load shared by concurrent reads of a key (singleflight) satisfies
//     each of them.
//   - Default-consistency reads take any current entry. Entries
//     are invalidated right after each write commits (the fast path, this
//     package) and again from the durable outbox (the relay, package dal),
//     so an entry is older than the newest write only for the time between
//     a commit and its invalidation: microseconds to milliseconds for hsdal's
//     own writes, the relay's lag (a Health check and a metric) for writes
//     made by plain SQL, and never more than the cache TTL (5 minutes by
//     default) even if the relay stops.
//   - Every read through a cached path records an upper bound of its
//     snapshot in the ctx's session (router.MergeSession), so later reads in
//     the session never return older data: monotonic reads across
//     instances. Config.CacheNoReadPositions turns this off.
//   - Token owners are cached with their expiry and checked against the
//     clock at every use. Deactivating, deleting or restoring a user, and
//     deleting, restoring or seeing a device, invalidates the lookups of
//     all its tokens (found by a query on the primary after the commit);
//     token creation takes share locks on the user and device rows so a
//     concurrent deactivation cannot miss a token.
//
// Every write reports the entities it changed, with its commit token, to
// Config.AfterCommit; InvalidateCached applies such changes (the relay's
// path); WarmCache preloads users' entries.
package repos
