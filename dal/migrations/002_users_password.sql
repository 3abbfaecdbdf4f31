-- hsdal schema, migration 2: password logins for local users.
--
-- users.password_hash is the homeserver's encoded password hash (bcrypt, argon2id, ...: the
-- hash string carries its own algorithm and salt; hashing and verification are the
-- homeserver's job). NULL means the account has no password (guests, SSO-only accounts,
-- application services). Not indexed: it is read only by primary key at login, and
-- changing it is then a HOT update. The maintenance purge must scrub it along with the
-- other profile columns of a purged user.
ALTER TABLE users
    ADD COLUMN password_hash TEXT NULL,
    ADD CONSTRAINT users_password_hash_check CHECK (octet_length(password_hash) <= 1024);

---- create above / drop below ----

ALTER TABLE users DROP COLUMN password_hash;
