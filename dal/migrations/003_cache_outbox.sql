-- hsdal schema, migration 3: the durable change feed of the Redis cache.
--
-- Every insert, update or delete of a row the cache holds a view of (users, devices,
-- access_tokens, rooms, room_memberships) writes, from a trigger and so in the same
-- transaction, a row naming what changed into cache_outbox, and wakes the relay with
-- NOTIFY. Writes made outside hsdal (an operator's SQL, a migration, the maintenance purge)
-- are therefore seen exactly like hsdal's own: a change and its outbox row commit or roll
-- back together. NOTIFY alone would not do: it is lost while the relay is disconnected,
-- whereas the relay reads the whole table after every (re)connect.
--
-- The relay (one active per database, elected with an advisory lock) reads the rows in id
-- order, invalidates the cache keys they name and deletes them; a row is deleted only after
-- its invalidation succeeded, so nothing is skipped when Redis or the relay fails halfway.
-- Rows of transactions still in progress are invisible until they commit, which is why the
-- relay consumes by deleting instead of remembering the highest id seen (ids are assigned
-- at insert, not in commit order). Rows older than the relay's retention are pruned even if
-- no relay applied them (e.g. no instance runs a cache); the pruning leaves a 'flush' row
-- behind so a relay that comes later gives the whole cache a new epoch.
--
-- kind / key1 / key2:
--   user        user_id         the user's profile row changed
--   user_auth   user_id         something a token lookup or device list depends on changed
--                               (creation, deletion, deactivation, is_admin, is_guest)
--   device      user_id         device_id   a device row changed
--   token       hex(token_hash)             an access token row changed
--   room        room_id                     a room row changed
--   room_members  room_id                   a room's liveness changed (creation, deletion,
--                                           restore): its members' IsJoined answers change
--   membership  room_id         user_id     a membership row changed
--   flush                                   everything (TRUNCATE, pruned rows)
CREATE TABLE cache_outbox (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    kind        TEXT   NOT NULL,
    key1        TEXT   NOT NULL DEFAULT '',
    key2        TEXT   NOT NULL DEFAULT '',
    created_ts  BIGINT NOT NULL DEFAULT hsdal_now_ms(),
    CONSTRAINT cache_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT cache_outbox_kind_check
        CHECK (kind IN ('user', 'user_auth', 'device', 'token', 'room', 'room_members', 'membership', 'flush'))
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);
-- Rows live for milliseconds: vacuum on an absolute number of dead rows, not a fraction of
-- a table that is nearly always empty.

-- One statement's worth of NOTIFYs collapses into one per transaction (PostgreSQL drops
-- duplicate notifications of a transaction), delivered at commit.
CREATE FUNCTION hsdal_cache_notify() RETURNS void
    LANGUAGE sql VOLATILE
    RETURN pg_notify('hsdal_cache_outbox', '');

CREATE FUNCTION hsdal_outbox_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('user', NEW.user_id), ('user_auth', NEW.user_id);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('user', OLD.user_id), ('user_auth', OLD.user_id);
    ELSE
        INSERT INTO cache_outbox (kind, key1) VALUES ('user', OLD.user_id);
        IF NEW.user_id <> OLD.user_id
           OR (NEW.is_admin, NEW.is_guest, NEW.deactivated, NEW.deleted_at)
              IS DISTINCT FROM (OLD.is_admin, OLD.is_guest, OLD.deactivated, OLD.deleted_at) THEN
            INSERT INTO cache_outbox (kind, key1) VALUES ('user_auth', OLD.user_id);
        END IF;
        IF NEW.user_id <> OLD.user_id THEN
            INSERT INTO cache_outbox (kind, key1) VALUES ('user', NEW.user_id), ('user_auth', NEW.user_id);
        END IF;
    END IF;
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

CREATE FUNCTION hsdal_outbox_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cache_outbox (kind, key1, key2) VALUES ('device', OLD.user_id, OLD.device_id);
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE'
       AND (NEW.user_id, NEW.device_id) IS DISTINCT FROM (OLD.user_id, OLD.device_id) THEN
        INSERT INTO cache_outbox (kind, key1, key2) VALUES ('device', NEW.user_id, NEW.device_id);
    END IF;
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

CREATE FUNCTION hsdal_outbox_access_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('token', encode(OLD.token_hash, 'hex'));
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' AND NEW.token_hash <> OLD.token_hash THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('token', encode(NEW.token_hash, 'hex'));
    END IF;
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

CREATE FUNCTION hsdal_outbox_rooms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('room', NEW.room_id), ('room_members', NEW.room_id);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO cache_outbox (kind, key1) VALUES ('room', OLD.room_id), ('room_members', OLD.room_id);
    ELSE
        INSERT INTO cache_outbox (kind, key1) VALUES ('room', OLD.room_id);
        IF NEW.room_id <> OLD.room_id OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at THEN
            INSERT INTO cache_outbox (kind, key1) VALUES ('room_members', OLD.room_id);
        END IF;
        IF NEW.room_id <> OLD.room_id THEN
            INSERT INTO cache_outbox (kind, key1) VALUES ('room', NEW.room_id), ('room_members', NEW.room_id);
        END IF;
    END IF;
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

CREATE FUNCTION hsdal_outbox_room_memberships() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO cache_outbox (kind, key1, key2) VALUES ('membership', OLD.room_id, OLD.user_id);
    END IF;
    IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE'
       AND (NEW.room_id, NEW.user_id) IS DISTINCT FROM (OLD.room_id, OLD.user_id) THEN
        INSERT INTO cache_outbox (kind, key1, key2) VALUES ('membership', NEW.room_id, NEW.user_id);
    END IF;
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

-- TRUNCATE changes everything at once: flush the whole cache.
CREATE FUNCTION hsdal_outbox_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO cache_outbox (kind) VALUES ('flush');
    PERFORM hsdal_cache_notify();
    RETURN NULL;
END $$;

CREATE TRIGGER users_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION hsdal_outbox_users();
CREATE TRIGGER devices_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION hsdal_outbox_devices();
CREATE TRIGGER access_tokens_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON access_tokens
    FOR EACH ROW EXECUTE FUNCTION hsdal_outbox_access_tokens();
CREATE TRIGGER rooms_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION hsdal_outbox_rooms();
CREATE TRIGGER room_memberships_cache_outbox AFTER INSERT OR UPDATE OR DELETE ON room_memberships
    FOR EACH ROW EXECUTE FUNCTION hsdal_outbox_room_memberships();

CREATE TRIGGER users_cache_outbox_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION hsdal_outbox_truncate();
CREATE TRIGGER devices_cache_outbox_truncate AFTER TRUNCATE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION hsdal_outbox_truncate();
CREATE TRIGGER access_tokens_cache_outbox_truncate AFTER TRUNCATE ON access_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION hsdal_outbox_truncate();
CREATE TRIGGER rooms_cache_outbox_truncate AFTER TRUNCATE ON rooms
    FOR EACH STATEMENT EXECUTE FUNCTION hsdal_outbox_truncate();
CREATE TRIGGER room_memberships_cache_outbox_truncate AFTER TRUNCATE ON room_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION hsdal_outbox_truncate();

---- create above / drop below ----

DROP TRIGGER room_memberships_cache_outbox_truncate ON room_memberships;
DROP TRIGGER rooms_cache_outbox_truncate ON rooms;
DROP TRIGGER access_tokens_cache_outbox_truncate ON access_tokens;
DROP TRIGGER devices_cache_outbox_truncate ON devices;
DROP TRIGGER users_cache_outbox_truncate ON users;
DROP TRIGGER room_memberships_cache_outbox ON room_memberships;
DROP TRIGGER rooms_cache_outbox ON rooms;
DROP TRIGGER access_tokens_cache_outbox ON access_tokens;
DROP TRIGGER devices_cache_outbox ON devices;
DROP TRIGGER users_cache_outbox ON users;
DROP FUNCTION hsdal_outbox_truncate();
DROP FUNCTION hsdal_outbox_room_memberships();
DROP FUNCTION hsdal_outbox_rooms();
DROP FUNCTION hsdal_outbox_access_tokens();
DROP FUNCTION hsdal_outbox_devices();
DROP FUNCTION hsdal_outbox_users();
DROP FUNCTION hsdal_cache_notify();
DROP TABLE cache_outbox;
