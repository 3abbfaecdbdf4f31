package repos

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// Users is the repository of local accounts. Safe for concurrent use.
type Users struct{ c *core }

// User is a local account as the read paths return it (live rows only).
type User struct {
	UserID      string  `db:"user_id"`
	DisplayName *string `db:"displayname"`
	AvatarURL   *string `db:"avatar_url"`
	IsAdmin     bool    `db:"is_admin"`
	IsGuest     bool    `db:"is_guest"`
	// Deactivated accounts still exist (their ID stays taken) but their
	// access tokens no longer authenticate.
	Deactivated bool  `db:"deactivated"`
	CreatedTS   int64 `db:"created_ts"`
	UpdatedTS   int64 `db:"updated_ts"`
}

// NewUser is a registration.
type NewUser struct {
	// UserID must follow the current (strict) user ID grammar; see
	// ValidateNewUserID.
	UserID      string
	DisplayName *string
	AvatarURL   *string
	IsAdmin     bool
	IsGuest     bool
	// PasswordHash is the homeserver's encoded password hash (bcrypt,
	// argon2id...; hashing is the caller's job); "" for accounts without a
	// password. Stored as given, never returned by GetUser, never logged.
	PasswordHash string
}

// MaxPasswordHashBytes bounds an encoded password hash.
const MaxPasswordHashBytes = 1024

// ProfileUpdate changes the profile fields that are non-nil; a pointer to
// "" clears the field.
type ProfileUpdate struct {
	DisplayName *string
	AvatarURL   *string
}

// UserPageRequest asks for one page of the admin user listing, ordered by
// (created_ts, user_id).
type UserPageRequest struct {
	// From is a cursor from a previous page's Next or Prev; "" starts at
	// the beginning (Forward: oldest first) or the end (Backward).
	From string
	// Dir defaults to Forward.
	Dir Direction
	// Limit: 0 means the configured default; above the maximum is rejected.
	Limit       int
	Consistency router.Consistency
}

const userColumns = `user_id, displayname, avatar_url, is_admin, is_guest, deactivated, created_ts, updated_ts`

const (
	sqlInsertUser = `
INSERT INTO users (user_id, displayname, avatar_url, is_admin, is_guest, created_ts, updated_ts, password_hash)
VALUES ($1, $2, $3, $4, $5, $6, $6, NULLIF($7, ''))
RETURNING ` + userColumns

	// Only accounts that may log in: live, not deactivated, with a password.
	sqlGetPasswordHash = `
SELECT password_hash FROM users
WHERE user_id = $1 AND deleted_at IS NULL AND NOT deactivated AND password_hash IS NOT NULL`

	sqlSetPasswordHash = `
UPDATE users SET password_hash = NULLIF($2, ''), updated_ts = $3 WHERE user_id = $1 AND deleted_at IS NULL`

	sqlGetUser = `SELECT ` + userColumns + ` FROM users WHERE user_id = $1 AND deleted_at IS NULL`

	sqlGetUsers = `SELECT ` + userColumns + ` FROM users WHERE user_id = ANY($1) AND deleted_at IS NULL`

	// COALESCE keeps a field the update leaves alone; NULLIF turns "" into
	// "cleared".
	sqlUpdateProfile = `
UPDATE users SET
    displayname = CASE WHEN $2::boolean THEN NULLIF($3, '') ELSE displayname END,
    avatar_url  = CASE WHEN $4::boolean THEN NULLIF($5, '') ELSE avatar_url END,
    updated_ts  = $6
WHERE user_id = $1 AND deleted_at IS NULL
RETURNING ` + userColumns

	sqlDeactivateUser = `
UPDATE users SET deactivated = true, updated_ts = $2
WHERE user_id = $1 AND deleted_at IS NULL
RETURNING ` + userColumns

	sqlDeleteUser = `UPDATE users SET deleted_at = $2, updated_ts = $2 WHERE user_id = $1 AND deleted_at IS NULL`

	sqlRestoreUser = `UPDATE users SET deleted_at = NULL, updated_ts = $2 WHERE user_id = $1 AND deleted_at IS NOT NULL`

	sqlListUsersAsc = `
SELECT ` + userColumns + ` FROM users
WHERE deleted_at IS NULL AND (created_ts, user_id) > ($1, $2)
ORDER BY created_ts, user_id
LIMIT $3`

	sqlListUsersDesc = `
SELECT ` + userColumns + ` FROM users
WHERE deleted_at IS NULL AND (created_ts, user_id) < ($1, $2)
ORDER BY created_ts DESC, user_id DESC
LIMIT $3`
)

// CreateUser registers a user.
//
// Errors: ErrInvalidArgument (malformed ID, over-long profile fields);
// ErrConflict if the user ID was ever registered (also when that account is
// soft-deleted or deactivated: Matrix user IDs are never reused).
func (u *Users) CreateUser(ctx context.Context, nu NewUser) (User, router.Token, error) {
	if err := checkUserID("user_id", nu.UserID, true); err != nil {
		return User{}, router.Token{}, err
	}
	if err := checkProfile(nu.DisplayName, nu.AvatarURL); err != nil {
		return User{}, router.Token{}, err
	}
	if err := checkOpaqueOrEmpty("password_hash", nu.PasswordHash, MaxPasswordHashBytes); err != nil {
		return User{}, router.Token{}, err
	}
	var out User
	tok, err := write(ctx, u.c, "users.create", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlInsertUser, nu.UserID, nonEmpty(nu.DisplayName), nonEmpty(nu.AvatarURL),
			nu.IsAdmin, nu.IsGuest, u.c.nowMS(), nu.PasswordHash)
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[User])
		return []Change{{Kind: ChangeUser, Key: nu.UserID}}, err
	})
	return out, tok, err
}

// GetUser returns a live user (not soft-deleted; deactivated users are
// returned with Deactivated set). The optional consistency defaults to
// bounded staleness.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (u *Users) GetUser(ctx context.Context, userID string, opts ...router.Consistency) (User, error) {
	cons, err := consistency(opts)
	if err != nil {
		return User{}, err
	}
	if err := checkUserID("user_id", userID, false); err != nil {
		return User{}, err
	}
	if cs := u.c.caches; cs != nil {
		v, found, err := cachedGet(ctx, cs, cs.user, cons, userID, loadUser(u.c, userID))
		if err == nil && !found {
			err = notFound("users.get")
		}
		return v, err
	}
	v, _, err := u.fetchUser(ctx, cons, userID)
	return v, err
}

// loadUser is the cached read behind GetUser.
func loadUser(c *core, userID string) stampedLoad[User] {
	return func(ctx context.Context, cons router.Consistency) (User, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "users.get", cons,
			func(b *pgx.Batch) { b.Queue(sqlGetUser, userID) },
			func(br pgx.BatchResults) (User, bool, error) { return collectOne(br, pgx.RowToStructByName[User]) })
	}
}

// fetchUser is the cacheable read behind GetUser.
func (u *Users) fetchUser(ctx context.Context, cons router.Consistency, userID string) (User, router.ReadInfo, error) {
	return read(ctx, u.c, "users.get", cons, false, func(ctx context.Context, q router.Querier) (User, error) {
		rows, _ := q.Query(ctx, sqlGetUser, userID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[User])
	})
}

// GetPasswordHash returns the stored password hash of a user who may log
// in (live, not deactivated, with a password), for the homeserver to verify
// a login against. Pass router.Strong() (or read inside the session of a
// password change) if a password changed a moment ago must not still be
// accepted from a lagging replica.
//
// Errors: ErrInvalidArgument; ErrNotFound if the user is absent, deleted,
// deactivated or has no password; ErrUnavailable.
func (u *Users) GetPasswordHash(ctx context.Context, userID string, opts ...router.Consistency) (string, error) {
	cons, err := consistency(opts)
	if err != nil {
		return "", err
	}
	if err := checkUserID("user_id", userID, false); err != nil {
		return "", err
	}
	v, _, err := read(ctx, u.c, "users.get_password_hash", cons, false, func(ctx context.Context, q router.Querier) (string, error) {
		rows, _ := q.Query(ctx, sqlGetPasswordHash, userID)
		return pgx.CollectExactlyOneRow(rows, pgx.RowTo[string])
	})
	return v, err
}

// SetPasswordHash replaces a live user's password hash ("" removes the
// password).
//
// Errors: ErrInvalidArgument (the message never contains the hash);
// ErrNotFound; ErrUnavailable.
func (u *Users) SetPasswordHash(ctx context.Context, userID, hash string) (router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return router.Token{}, err
	}
	if err := checkOpaqueOrEmpty("password_hash", hash, MaxPasswordHashBytes); err != nil {
		return router.Token{}, err
	}
	return write(ctx, u.c, "users.set_password_hash", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return []Change{{Kind: ChangeUser, Key: userID}}, execOne(ctx, tx, sqlSetPasswordHash, userID, hash, u.c.nowMS())
	})
}

// GetUsers returns the live users among ids in one round trip, keyed by
// user ID; absent and soft-deleted users are simply missing from the map.
// Duplicate IDs are allowed. At most MaxBatchIDs IDs.
//
// Errors: ErrInvalidArgument (a malformed ID, too many IDs), ErrUnavailable.
func (u *Users) GetUsers(ctx context.Context, userIDs []string, opts ...router.Consistency) (map[string]User, error) {
	cons, err := consistency(opts)
	if err != nil {
		return nil, err
	}
	if err := checkIDs("user_ids", userIDs, checkUserID); err != nil {
		return nil, err
	}
	if len(userIDs) == 0 {
		return map[string]User{}, nil
	}
	list, _, err := read(ctx, u.c, "users.get_many", cons, false, func(ctx context.Context, q router.Querier) ([]User, error) {
		rows, _ := q.Query(ctx, sqlGetUsers, userIDs)
		return pgx.CollectRows(rows, pgx.RowToStructByName[User])
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]User, len(list))
	for _, x := range list {
		out[x.UserID] = x
	}
	return out, nil
}

// UpdateProfile sets the non-nil fields of p on a live user and returns the
// updated user.
//
// Errors: ErrInvalidArgument, ErrNotFound (no live user), ErrUnavailable.
func (u *Users) UpdateProfile(ctx context.Context, userID string, p ProfileUpdate) (User, router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return User{}, router.Token{}, err
	}
	if err := checkProfile(p.DisplayName, p.AvatarURL); err != nil {
		return User{}, router.Token{}, err
	}
	var out User
	tok, err := write(ctx, u.c, "users.update_profile", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlUpdateProfile, userID,
			p.DisplayName != nil, deref(p.DisplayName), p.AvatarURL != nil, deref(p.AvatarURL), u.c.nowMS())
		var err error
		out, err = pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[User])
		return []Change{{Kind: ChangeUser, Key: userID}}, err
	})
	return out, tok, err
}

// Deactivate marks a live user deactivated: the account and its ID remain,
// its access tokens stop authenticating (AccessTokens.LookupToken hides
// them). Deactivating twice is not an error.
//
// Errors: ErrInvalidArgument, ErrNotFound, ErrUnavailable.
func (u *Users) Deactivate(ctx context.Context, userID string) (router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return router.Token{}, err
	}
	return write(ctx, u.c, "users.deactivate", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		rows, _ := tx.Query(ctx, sqlDeactivateUser, userID, u.c.nowMS())
		_, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[User])
		return []Change{{Kind: ChangeUser, Key: userID}, {Kind: ChangeTokensOfUser, Key: userID},
			{Kind: ChangeDevices, Key: userID}}, err
	})
}

// DeleteUser soft-deletes a live user: every read path hides the user, their
// devices and their access tokens until RestoreUser. The ID stays taken.
//
// Errors: ErrInvalidArgument, ErrNotFound (no live user), ErrUnavailable.
func (u *Users) DeleteUser(ctx context.Context, userID string) (router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return router.Token{}, err
	}
	return write(ctx, u.c, "users.delete", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return userChanges(userID), execOne(ctx, tx, sqlDeleteUser, userID, u.c.nowMS())
	})
}

// RestoreUser undoes DeleteUser.
//
// Errors: ErrInvalidArgument, ErrNotFound (no soft-deleted user with that
// ID), ErrUnavailable.
func (u *Users) RestoreUser(ctx context.Context, userID string) (router.Token, error) {
	if err := checkUserID("user_id", userID, false); err != nil {
		return router.Token{}, err
	}
	return write(ctx, u.c, "users.restore", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return userChanges(userID), execOne(ctx, tx, sqlRestoreUser, userID, u.c.nowMS())
	})
}

func userChanges(userID string) []Change {
	return []Change{{Kind: ChangeUser, Key: userID}, {Kind: ChangeDevices, Key: userID},
		{Kind: ChangeTokensOfUser, Key: userID}}
}

// ListUsers returns one page of live users for administrators, keyset on
// (created_ts, user_id), oldest first by default.
//
// Errors: ErrInvalidArgument (bad limit or direction), ErrInvalidCursor,
// ErrUnavailable.
func (u *Users) ListUsers(ctx context.Context, req UserPageRequest) (Page[User], error) {
	pg, err := u.c.pageSetup("from", req.From, req.Dir, Forward, req.Limit, kindUsers, "users", int64Edge)
	if err != nil {
		return Page[User]{}, err
	}
	start := pg.start
	sql := sqlListUsersAsc
	if pg.dir == Backward {
		sql = sqlListUsersDesc
	}
	items, _, err := read(ctx, u.c, "users.list", req.Consistency, false, func(ctx context.Context, q router.Querier) ([]User, error) {
		rows, _ := q.Query(ctx, sql, start.A, start.S, pg.limit+1)
		return pgx.CollectRows(rows, pgx.RowToStructByName[User])
	})
	if err != nil {
		return Page[User]{}, err
	}
	return finishPage(u.c, pg, items, false, func(x User) cursorPos { return cursorPos{A: x.CreatedTS, S: x.UserID} }), nil
}

func checkProfile(displayName, avatarURL *string) error {
	if displayName != nil {
		if err := checkText("displayname", *displayName, MaxDisplayNameBytes); err != nil {
			return err
		}
	}
	if avatarURL != nil {
		if err := checkOpaqueOrEmpty("avatar_url", *avatarURL, MaxAvatarURLBytes); err != nil {
			return err
		}
	}
	return nil
}
