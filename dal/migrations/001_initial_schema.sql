-- hsdal schema, migration 1: the tables the repositories serve.
--
-- Conventions (apply to every table below; table comments only note exceptions):
--
-- * Time is BIGINT Unix milliseconds (UTC), never TIMESTAMP[TZ]: one type everywhere, no
--   time-zone conversion, cheap comparisons. hsdal_now_ms() is the default for creation
--   times so rows written by plain SQL are stamped too; the repositories normally pass the
--   time from their injected clock.
-- * Soft delete: soft-deletable tables carry deleted_at BIGINT NULL (NULL = live, otherwise
--   the time of deletion). Every read path filters deleted_at IS NULL and is served by a
--   partial index with that predicate. Restoring sets deleted_at back to NULL. A maintenance
--   purge hard-deletes rows whose deleted_at is older than the retention period.
-- * Uniqueness that must ignore deleted rows is a partial unique index (WHERE deleted_at IS
--   NULL); uniqueness that must hold forever (Matrix identifiers) is a primary key.
-- * Matrix identifiers are TEXT of at most 255 bytes with their sigil checked here as a last
--   line of defence; the repositories validate the full grammar before any SQL runs.
-- * Keyset pagination only: every paginated order ends in a unique column so a cursor
--   names exactly one position.
-- * Foreign keys: ON DELETE CASCADE only for credentials and derived state (devices,
--   tokens, read markers) which mean nothing without their parent. User content (events,
--   memberships, aliases, private messages) is never removed implicitly: its parent's hard
--   delete is refused (NO ACTION) until the purge has removed the children explicitly, so
--   a stray DELETE cannot wipe history. Content that outlives its author keeps the row and
--   loses the reference (ON DELETE SET NULL). Every foreign key's referencing columns lead
--   some index that covers all rows (not only live ones), so a parent's delete never scans
--   a child table.
-- * Users of other homeservers (federation) have no users row, so columns that may name a
--   remote user (room creator, event sender, membership user) have no foreign key to users.
-- * Nothing here runs functions that write when a query reads: every index and default is
--   usable on hot-standby replicas, which receive this schema through WAL replay.

-- hsdal_now_ms returns the current wall-clock time in Unix milliseconds. clock_timestamp()
-- (not now()) so that several rows stamped in one long transaction still differ.
CREATE FUNCTION hsdal_now_ms() RETURNS BIGINT
    LANGUAGE sql VOLATILE PARALLEL SAFE
    RETURN (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT;

------------------------------------------------------------------------------------------
-- Users and their credentials
------------------------------------------------------------------------------------------

-- users: local accounts only.
--
-- user_id is the primary key, not a partial unique index: Matrix user IDs must never be
-- reused, so a soft-deleted (or deactivated) user's ID cannot be registered again, and the
-- maintenance purge must scrub a user's profile columns rather than DELETE the row (a hard
-- DELETE, e.g. an operator's erasure request, frees the ID; avoid it). Deactivation is a
-- Matrix state (the account exists but cannot log in) and is separate from soft deletion
-- (the row is hidden from every read path and restorable).
CREATE TABLE users (
    user_id      TEXT    NOT NULL,
    displayname  TEXT    NULL,
    avatar_url   TEXT    NULL,
    is_admin     BOOLEAN NOT NULL DEFAULT false,
    is_guest     BOOLEAN NOT NULL DEFAULT false,
    deactivated  BOOLEAN NOT NULL DEFAULT false,
    created_ts   BIGINT  NOT NULL DEFAULT hsdal_now_ms(),
    updated_ts   BIGINT  NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at   BIGINT  NULL,
    CONSTRAINT users_pkey PRIMARY KEY (user_id),
    CONSTRAINT users_user_id_check CHECK (user_id LIKE '@%:%' AND octet_length(user_id) <= 255),
    CONSTRAINT users_displayname_check CHECK (octet_length(displayname) <= 1024),
    CONSTRAINT users_avatar_url_check CHECK (octet_length(avatar_url) <= 2048)
);

-- Admin listing, keyset on (created_ts, user_id), live users only. Point lookups use the
-- primary key.
CREATE INDEX users_created_idx ON users (created_ts, user_id) WHERE deleted_at IS NULL;

-- devices: a user's logged-in devices. The primary key (user_id, device_id) serves
-- "devices of a user" (prefix scan) and the foreign key from users. Because it is a real
-- key, a soft-deleted device ID is not a free slot: logging in again with the same device
-- ID upserts the existing row and clears its deleted_at (Matrix lets clients reuse a device
-- ID). last_seen_ts/last_seen_ip are deliberately not indexed, so touching them is a HOT
-- update (no index writes); fillfactor leaves room on each page for those updates.
CREATE TABLE devices (
    user_id       TEXT   NOT NULL,
    device_id     TEXT   NOT NULL,
    display_name  TEXT   NULL,
    last_seen_ts  BIGINT NULL,
    last_seen_ip  TEXT   NULL,
    created_ts    BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at    BIGINT NULL,
    CONSTRAINT devices_pkey PRIMARY KEY (user_id, device_id),
    CONSTRAINT devices_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT devices_device_id_check CHECK (octet_length(device_id) BETWEEN 1 AND 255),
    CONSTRAINT devices_display_name_check CHECK (octet_length(display_name) <= 1024),
    CONSTRAINT devices_last_seen_ip_check CHECK (octet_length(last_seen_ip) <= 64)
) WITH (fillfactor = 80);

-- refresh_tokens: Matrix refresh tokens, stored only as SHA-256 hashes of the raw token
-- (32 bytes), so a leaked dump or cache snapshot opens no session. Using a refresh token
-- soft-deletes it (deleted_at) and mints a new pair. Gone with their user or device.
CREATE TABLE refresh_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    token_hash  BYTEA  NOT NULL,
    user_id     TEXT   NOT NULL,
    device_id   TEXT   NOT NULL,
    created_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    expires_ts  BIGINT NULL, -- NULL: never expires
    deleted_at  BIGINT NULL,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT refresh_tokens_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_token_hash_check CHECK (octet_length(token_hash) = 32)
);

-- Lookup by hash among live tokens. Partial: a revoked token's hash leaves the index (the
-- hashes are of server-generated random tokens, so a live duplicate is a bug, not a user).
CREATE UNIQUE INDEX refresh_tokens_token_hash_key ON refresh_tokens (token_hash)
    WHERE deleted_at IS NULL;
-- A user's or device's refresh tokens (revocation on logout), and the two foreign keys.
CREATE INDEX refresh_tokens_user_device_idx ON refresh_tokens (user_id, device_id);

-- access_tokens: stored only as SHA-256 hashes (32 bytes) of the raw token; the lookup by
-- hash is the hottest query of a homeserver. expires_ts NULL means no expiry; lookups
-- compare it with the caller's clock. device_id is NULL for tokens not bound to a device
-- (e.g. admin or application-service tokens); the (user_id, device_id) foreign key is then
-- not checked and the user_id foreign key still ties the token to its user.
CREATE TABLE access_tokens (
    id                BIGINT GENERATED ALWAYS AS IDENTITY,
    token_hash        BYTEA  NOT NULL,
    user_id           TEXT   NOT NULL,
    device_id         TEXT   NULL,
    refresh_token_id  BIGINT NULL, -- the refresh token this access token was minted with
    created_ts        BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    expires_ts        BIGINT NULL, -- NULL: never expires
    deleted_at        BIGINT NULL,
    CONSTRAINT access_tokens_pkey PRIMARY KEY (id),
    CONSTRAINT access_tokens_user_id_fkey FOREIGN KEY (user_id)
        REFERENCES users (user_id) ON DELETE CASCADE,
    CONSTRAINT access_tokens_device_fkey FOREIGN KEY (user_id, device_id)
        REFERENCES devices (user_id, device_id) ON DELETE CASCADE,
    CONSTRAINT access_tokens_refresh_token_id_fkey FOREIGN KEY (refresh_token_id)
        REFERENCES refresh_tokens (id) ON DELETE CASCADE,
    CONSTRAINT access_tokens_token_hash_check CHECK (octet_length(token_hash) = 32)
);

-- Token lookup: one unique probe among live tokens; the query adds
-- "deleted_at IS NULL AND (expires_ts IS NULL OR expires_ts > $now)".
CREATE UNIQUE INDEX access_tokens_token_hash_key ON access_tokens (token_hash)
    WHERE deleted_at IS NULL;
-- Tokens of a user / of a device (logout, "log out all devices") and both foreign keys.
CREATE INDEX access_tokens_user_device_idx ON access_tokens (user_id, device_id);
-- Foreign key to refresh_tokens (most access tokens have none).
CREATE INDEX access_tokens_refresh_token_idx ON access_tokens (refresh_token_id)
    WHERE refresh_token_id IS NOT NULL;

------------------------------------------------------------------------------------------
-- Rooms
------------------------------------------------------------------------------------------

-- rooms: room metadata. creator may be a remote user, hence no foreign key. A soft-deleted
-- room hides itself and, through joins, its memberships, aliases and events from every
-- read path, without touching those rows, so restoring the room restores all of them.
CREATE TABLE rooms (
    room_id     TEXT    NOT NULL,
    creator     TEXT    NOT NULL,
    is_public   BOOLEAN NOT NULL DEFAULT false,
    name        TEXT    NULL,
    topic       TEXT    NULL,
    created_ts  BIGINT  NOT NULL DEFAULT hsdal_now_ms(),
    updated_ts  BIGINT  NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at  BIGINT  NULL,
    CONSTRAINT rooms_pkey PRIMARY KEY (room_id),
    CONSTRAINT rooms_room_id_check CHECK (room_id LIKE '!%:%' AND octet_length(room_id) <= 255),
    CONSTRAINT rooms_creator_check CHECK (creator LIKE '@%:%' AND octet_length(creator) <= 255),
    CONSTRAINT rooms_name_check CHECK (octet_length(name) <= 1024),
    CONSTRAINT rooms_topic_check CHECK (octet_length(topic) <= 65536)
);

-- Public room directory, keyset on room_id.
CREATE INDEX rooms_public_idx ON rooms (room_id) WHERE is_public AND deleted_at IS NULL;

-- room_aliases: '#alias:server' → room. An alias names one live room at a time; once
-- deleted it may be created again (for the same or another room), which Matrix allows,
-- hence a surrogate key plus a partial unique index rather than alias as primary key.
CREATE TABLE room_aliases (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    room_alias  TEXT   NOT NULL,
    room_id     TEXT   NOT NULL,
    creator     TEXT   NOT NULL,
    created_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at  BIGINT NULL,
    CONSTRAINT room_aliases_pkey PRIMARY KEY (id),
    CONSTRAINT room_aliases_room_id_fkey FOREIGN KEY (room_id) REFERENCES rooms (room_id),
    CONSTRAINT room_aliases_room_alias_check
        CHECK (room_alias LIKE '#%:%' AND octet_length(room_alias) <= 255),
    CONSTRAINT room_aliases_creator_check
        CHECK (creator LIKE '@%:%' AND octet_length(creator) <= 255)
);

-- Resolve an alias (live aliases are unique).
CREATE UNIQUE INDEX room_aliases_room_alias_key ON room_aliases (room_alias)
    WHERE deleted_at IS NULL;
-- Aliases of a room, and the foreign key to rooms (all rows).
CREATE INDEX room_aliases_room_idx ON room_aliases (room_id);

-- room_memberships: the CURRENT membership of each (room, user) pair, one row per pair,
-- updated in place on every transition; room_membership_history below keeps every
-- transition. Memberships are state, not content, so they are not soft-deleted: leaving
-- is membership 'leave', and the history is append-only. A soft-deleted room hides its
-- memberships through the join on rooms.deleted_at. user_id may be remote: no foreign key
-- to users, and a local user's hard delete leaves the room's history intact.
--
-- membership_ts is when the current membership value began (for joined members: when they
-- joined). It changes only when the membership value changes (a join → join profile update
-- keeps it), so a member's position in the listing below is stable while they stay joined.
-- stream_ordering is the room_events position of the membership event when there is one.
CREATE TABLE room_memberships (
    room_id          TEXT   NOT NULL,
    user_id          TEXT   NOT NULL,
    membership       TEXT   NOT NULL,
    sender           TEXT   NOT NULL, -- who caused the latest transition (the user or e.g. a moderator)
    event_id         TEXT   NULL,     -- the membership event, when events are stored
    stream_ordering  BIGINT NULL,
    membership_ts    BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    updated_ts       BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    CONSTRAINT room_memberships_pkey PRIMARY KEY (room_id, user_id),
    CONSTRAINT room_memberships_room_id_fkey FOREIGN KEY (room_id) REFERENCES rooms (room_id),
    CONSTRAINT room_memberships_membership_check
        CHECK (membership IN ('invite', 'join', 'leave', 'ban', 'knock')),
    CONSTRAINT room_memberships_user_id_check
        CHECK (user_id LIKE '@%:%' AND octet_length(user_id) <= 255),
    CONSTRAINT room_memberships_sender_check
        CHECK (sender LIKE '@%:%' AND octet_length(sender) <= 255)
);

-- "Is user U joined to room R" is a primary-key probe. The seed's
-- (room_id, membership, joined_ts DESC) index, corrected: membership_ts covers every
-- membership value (joined_ts would be NULL for invites, which breaks keyset comparisons)
-- and user_id is the unique tiebreaker. Serves "joined members of R" (keyset on
-- (membership_ts, user_id), either direction — a B-tree is read backwards as cheaply as
-- forwards, so no DESC is needed) and member counts per membership as index-only scans.
CREATE INDEX room_memberships_room_members_idx
    ON room_memberships (room_id, membership, membership_ts, user_id);
-- "Rooms of user U" (optionally with a given membership), keyset on room_id.
CREATE INDEX room_memberships_user_rooms_idx ON room_memberships (user_id, membership, room_id);

-- room_membership_history: every membership transition, append-only. The primary key
-- (room_id, user_id, id) gives one user's history in a room in order, and covers the
-- foreign key to rooms.
CREATE TABLE room_membership_history (
    id               BIGINT GENERATED ALWAYS AS IDENTITY,
    room_id          TEXT   NOT NULL,
    user_id          TEXT   NOT NULL,
    membership       TEXT   NOT NULL,
    prev_membership  TEXT   NULL, -- NULL: first membership of this user in this room
    sender           TEXT   NOT NULL,
    event_id         TEXT   NULL,
    stream_ordering  BIGINT NULL,
    reason           TEXT   NULL,
    created_ts       BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    CONSTRAINT room_membership_history_pkey PRIMARY KEY (room_id, user_id, id),
    CONSTRAINT room_membership_history_room_id_fkey FOREIGN KEY (room_id)
        REFERENCES rooms (room_id),
    CONSTRAINT room_membership_history_membership_check
        CHECK (membership IN ('invite', 'join', 'leave', 'ban', 'knock')),
    CONSTRAINT room_membership_history_prev_membership_check
        CHECK (prev_membership IN ('invite', 'join', 'leave', 'ban', 'knock')),
    CONSTRAINT room_membership_history_reason_check CHECK (octet_length(reason) <= 4096)
);

-- room_events: the timeline, the largest table. stream_ordering is this server's
-- monotonic position, taken from room_events_stream_ordering_seq (the column default, or
-- an explicit nextval by the writer); origin_server_ts is whatever the sending server
-- claimed and is neither unique nor monotonic, so pagination never orders by it.
--
-- Sequence values are handed out at INSERT but become visible at COMMIT, so concurrent
-- appends can commit out of order. Writers that serialise appends per room (e.g. take
-- SELECT ... FROM rooms WHERE room_id = $1 FOR NO KEY UPDATE before nextval, which does
-- not block the foreign-key checks of other writers) get per-room orderings that commit
-- in order, so a forward pagination token never jumps over an in-flight event of its room.
--
-- Soft delete here is a redaction-style hide; the event_id stays taken (Matrix event IDs
-- are never reused, hence a primary key).
CREATE SEQUENCE room_events_stream_ordering_seq AS BIGINT;

CREATE TABLE room_events (
    event_id          TEXT   NOT NULL,
    stream_ordering   BIGINT NOT NULL DEFAULT nextval('room_events_stream_ordering_seq'),
    room_id           TEXT   NOT NULL,
    sender            TEXT   NOT NULL,
    type              TEXT   NOT NULL,
    state_key         TEXT   NULL, -- NULL for non-state events
    content           JSONB  NOT NULL,
    origin_server_ts  BIGINT NOT NULL,
    created_ts        BIGINT NOT NULL DEFAULT hsdal_now_ms(), -- when this server stored it
    deleted_at        BIGINT NULL,
    CONSTRAINT room_events_pkey PRIMARY KEY (event_id),
    CONSTRAINT room_events_stream_ordering_key UNIQUE (stream_ordering),
    CONSTRAINT room_events_room_id_fkey FOREIGN KEY (room_id) REFERENCES rooms (room_id),
    CONSTRAINT room_events_event_id_check
        CHECK (event_id LIKE '$%' AND octet_length(event_id) <= 255),
    CONSTRAINT room_events_sender_check CHECK (sender LIKE '@%:%' AND octet_length(sender) <= 255),
    CONSTRAINT room_events_type_check CHECK (octet_length(type) BETWEEN 1 AND 255),
    CONSTRAINT room_events_state_key_check CHECK (octet_length(state_key) <= 255)
);

ALTER SEQUENCE room_events_stream_ordering_seq OWNED BY room_events.stream_ordering;

-- The room timeline (Matrix /messages, dir=b and dir=f), keyset on stream_ordering, live
-- events only. stream_ordering is unique, so the keyset is exact.
CREATE INDEX room_events_room_stream_idx ON room_events (room_id, stream_ordering)
    WHERE deleted_at IS NULL;
-- The seed's (room_id, type, origin_server_ts DESC), corrected to stream_ordering (unique,
-- monotonic). Deliberately NOT partial: it also backs the foreign key to rooms and a
-- room's purge, which must find hidden events too, and saves a third index on the biggest
-- table. Type-filtered pages filter deleted_at on the heap row they fetch anyway.
CREATE INDEX room_events_room_type_stream_idx ON room_events (room_id, type, stream_ordering);
-- Maintenance purge of events hidden before the retention cutoff; holds hidden rows only.
CREATE INDEX room_events_purge_idx ON room_events (deleted_at) WHERE deleted_at IS NOT NULL;

------------------------------------------------------------------------------------------
-- Private sessions (one-to-one chats) and their messages
------------------------------------------------------------------------------------------

-- private_sessions: one live session per unordered pair of local users, whoever starts it.
-- The pair is stored ordered (user_low < user_high, byte order of the IDs as compared by
-- PostgreSQL with COLLATE "C") so (A, B) and (B, A) are the same row. Soft-deleting a
-- session frees the pair (a new session may start); restoring the old one then conflicts.
-- A participant's hard delete keeps the session for the other participant (SET NULL).
CREATE TABLE private_sessions (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    user_low    TEXT COLLATE "C" NULL,
    user_high   TEXT COLLATE "C" NULL,
    created_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    updated_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at  BIGINT NULL,
    CONSTRAINT private_sessions_pkey PRIMARY KEY (id),
    CONSTRAINT private_sessions_user_low_fkey FOREIGN KEY (user_low)
        REFERENCES users (user_id) ON DELETE SET NULL,
    CONSTRAINT private_sessions_user_high_fkey FOREIGN KEY (user_high)
        REFERENCES users (user_id) ON DELETE SET NULL,
    CONSTRAINT private_sessions_pair_check CHECK (user_low < user_high)
);

-- One live session per pair; also "the session of A and B" and live sessions where the
-- user sorts low.
CREATE UNIQUE INDEX private_sessions_pair_key ON private_sessions (user_low, user_high)
    WHERE deleted_at IS NULL;
-- The foreign keys to users cover all rows (a user's hard delete must find hidden sessions
-- too, which the partial pair index cannot), and give "sessions of a user" from each side.
CREATE INDEX private_sessions_user_low_idx ON private_sessions (user_low);
CREATE INDEX private_sessions_user_high_idx ON private_sessions (user_high);

-- private_messages: messages of a session. A message outlives its sender: the sender's
-- hard delete sets sender_id to NULL ("deleted user") and keeps the message for the other
-- participant (seed 3.3). A session's hard delete is refused while messages remain.
--
-- Pagination is keyset on (created_ts, id) within a session, newest or oldest first; id
-- is the unique tiebreaker. Read state is a per-(session, user) marker in
-- private_session_read_markers, not a flag per message: marking read is one row write,
-- and "unread" is the range after the marker.
CREATE TABLE private_messages (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    session_id  BIGINT NOT NULL,
    sender_id   TEXT   NULL,
    content     JSONB  NOT NULL,
    created_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    deleted_at  BIGINT NULL,
    CONSTRAINT private_messages_pkey PRIMARY KEY (id),
    CONSTRAINT private_messages_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES private_sessions (id),
    CONSTRAINT private_messages_sender_id_fkey FOREIGN KEY (sender_id)
        REFERENCES users (user_id) ON DELETE SET NULL,
    CONSTRAINT private_messages_sender_id_check
        CHECK (sender_id LIKE '@%:%' AND octet_length(sender_id) <= 255)
);

-- The seed's (session_id, created_ts DESC, read_by_receiver), corrected: id is the unique
-- tiebreaker, no DESC (B-trees scan both ways), and the read flag is replaced by read
-- markers. sender_id is INCLUDEd so the unread count ("messages after my marker not sent
-- by me") is an index-only scan.
CREATE INDEX private_messages_session_page_idx
    ON private_messages (session_id, created_ts, id) INCLUDE (sender_id)
    WHERE deleted_at IS NULL;
-- Foreign key to private_sessions over all rows (a session's purge must find hidden
-- messages too).
CREATE INDEX private_messages_session_idx ON private_messages (session_id);
-- Foreign key to users: a user's hard delete finds their messages to SET NULL.
CREATE INDEX private_messages_sender_idx ON private_messages (sender_id)
    WHERE sender_id IS NOT NULL;
-- Maintenance purge of messages deleted before the retention cutoff; hidden rows only.
CREATE INDEX private_messages_purge_idx ON private_messages (deleted_at)
    WHERE deleted_at IS NOT NULL;

-- private_session_read_markers: how far each participant has read a session: the sort key
-- (created_ts, id) of the last message they read. Derived state: goes with its session.
-- user_id is a participant of the session (checked by the repositories), without a
-- foreign key to users: a participant's hard delete leaves a harmless marker.
CREATE TABLE private_session_read_markers (
    session_id       BIGINT NOT NULL,
    user_id          TEXT   NOT NULL,
    last_read_ts     BIGINT NOT NULL, -- created_ts of the last message read
    last_read_id     BIGINT NOT NULL, -- id of the last message read
    updated_ts       BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    CONSTRAINT private_session_read_markers_pkey PRIMARY KEY (session_id, user_id),
    CONSTRAINT private_session_read_markers_session_id_fkey FOREIGN KEY (session_id)
        REFERENCES private_sessions (id) ON DELETE CASCADE,
    CONSTRAINT private_session_read_markers_user_id_check
        CHECK (user_id LIKE '@%:%' AND octet_length(user_id) <= 255)
);

---- create above / drop below ----

DROP TABLE private_session_read_markers;
DROP TABLE private_messages;
DROP TABLE private_sessions;
DROP TABLE room_events;
DROP TABLE room_membership_history;
DROP TABLE room_memberships;
DROP TABLE room_aliases;
DROP TABLE rooms;
DROP TABLE access_tokens;
DROP TABLE refresh_tokens;
DROP TABLE devices;
DROP TABLE users;
DROP FUNCTION hsdal_now_ms();
