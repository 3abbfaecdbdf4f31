package repos

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// AccessTokens is the repository of access tokens. Tokens are stored (and
// reported to AfterCommit) only as SHA-256 hashes, so a leaked database
// dump or cache snapshot opens no session; raw tokens are never stored,
// logged or put in errors. Safe for concurrent use.
type AccessTokens struct{ c *core }

// Token length bounds for raw tokens handed to Create/Lookup/Revoke.
const (
	// MinTokenBytes: shorter raw tokens are guessable and rejected.
	MinTokenBytes = 16
	// MaxTokenBytes bounds a raw token.
	MaxTokenBytes = 512
)

// NewAccessToken describes a token to store.
type NewAccessToken struct {
	// Token is the raw token (e.g. from GenerateToken), MinTokenBytes to
	// MaxTokenBytes bytes. Only its SHA-256 hash is stored.
	Token  string
	UserID string
	// DeviceID binds the token to a device ("" for none, e.g. an admin
	// token); the device must be live.
	DeviceID string
	// ExpiresTS is the expiry in Unix milliseconds; 0 means never.
	ExpiresTS int64
}

// TokenOwner is what a token lookup returns: who the token authenticates,
// with the device's last-seen values so Devices.TouchDevice can usually
// skip the database.
type TokenOwner struct {
	UserID   string  `db:"user_id"`
	DeviceID *string `db:"device_id"` // nil for tokens not bound to a device
	IsAdmin  bool    `db:"is_admin"`
	IsGuest  bool    `db:"is_guest"`
	// ExpiresTS is the token's expiry (Unix ms), nil for never.
	ExpiresTS *int64 `db:"expires_ts"`
	// DeviceLastSeenTS and DeviceLastSeenIP are the device's last-seen values.
	DeviceLastSeenTS *int64  `db:"last_seen_ts"`
	DeviceLastSeenIP *string `db:"last_seen_ip"`
}

const (
	// Lookup of a live token; hides tokens that expired (by the injected
	// clock), whose user is soft-deleted or deactivated, or whose device is
	// soft-deleted. One probe of access_tokens_token_hash_key (partial on
	// deleted_at IS NULL) plus primary-key probes of users and devices.
	sqlLookupToken = `
SELECT t.user_id, t.device_id, u.is_admin, u.is_guest, t.expires_ts, d.last_seen_ts, d.last_seen_ip
FROM access_tokens t
JOIN users u ON u.user_id = t.user_id AND u.deleted_at IS NULL AND NOT u.deactivated
LEFT JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
WHERE t.token_hash = $1 AND t.deleted_at IS NULL
  AND (t.expires_ts IS NULL OR t.expires_ts > $2)
  AND (t.device_id IS NULL OR d.deleted_at IS NULL AND d.device_id IS NOT NULL)`

	// The cached lookup: the same rows without the expiry filter (a cached
	// owner carries expires_ts and is checked against the clock at use).
	sqlLookupTokenCached = `
SELECT t.user_id, t.device_id, u.is_admin, u.is_guest, t.expires_ts, d.last_seen_ts, d.last_seen_ip
FROM access_tokens t
JOIN users u ON u.user_id = t.user_id AND u.deleted_at IS NULL AND NOT u.deactivated
LEFT JOIN devices d ON d.user_id = t.user_id AND d.device_id = t.device_id
WHERE t.token_hash = $1 AND t.deleted_at IS NULL
  AND (t.device_id IS NULL OR d.deleted_at IS NULL AND d.device_id IS NOT NULL)`

	// Inserts nothing (→ ErrNotFound) unless the user is live and not
	// deactivated and the device, if any, is live. FOR SHARE holds the user
	// and device rows until commit, so a concurrent deactivation, deletion
	// or device logout either waits for this insert (and then finds the
	// token when it invalidates the cached lookups of the user's tokens) or
	// goes first (and this insert, re-checking the row, inserts nothing).
	sqlInsertToken = `
WITH u AS (
    SELECT user_id FROM users
    WHERE user_id = $2 AND deleted_at IS NULL AND NOT deactivated
    FOR SHARE
), d AS (
    SELECT device_id FROM devices
    WHERE $3 <> '' AND user_id = $2 AND device_id = $3 AND deleted_at IS NULL
    FOR SHARE
)
INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts)
SELECT $1, $2, NULLIF($3, ''), $4, NULLIF($5::bigint, 0)
FROM u
WHERE $3 = '' OR EXISTS (SELECT 1 FROM d)
RETURNING id`

	sqlRevokeToken = `UPDATE access_tokens SET deleted_at = $2 WHERE token_hash = $1 AND deleted_at IS NULL`
)

// GenerateToken returns a new random raw access token (32 random bytes,
// URL-safe base64, 43 characters) from crypto/rand.
func GenerateToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("repos: generate token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// HashToken returns the SHA-256 hash under which a raw token is stored (and
// the key ChangeAccessToken reports).
func HashToken(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }

func checkRawToken(raw string) error {
	switch {
	case len(raw) < MinTokenBytes:
		return invalid("token", "shorter than %d bytes", MinTokenBytes)
	case len(raw) > MaxTokenBytes:
		return invalid("token", "longer than %d bytes", MaxTokenBytes)
	}
	// Never quote the token in an error: report only the rule broken.
	if err := checkString("token", raw, MaxTokenBytes, false); err != nil {
		return invalid("token", "contains control characters or invalid UTF-8")
	}
	return nil
}

// CreateToken stores the hash of a new access token for a live,
// non-deactivated user (and live device, if DeviceID is set).
//
// Errors: ErrInvalidArgument (the message never contains the token);
// ErrNotFound if the user or device is absent, hidden or deactivated;
// ErrConflict if a live token with the same hash exists; ErrUnavailable.
func (a *AccessTokens) CreateToken(ctx context.Context, nt NewAccessToken) (router.Token, error) {
	if err := checkRawToken(nt.Token); err != nil {
		return router.Token{}, err
	}
	if err := checkUserID("user_id", nt.UserID, false); err != nil {
		return router.Token{}, err
	}
	if err := checkOpaqueOrEmpty("device_id", nt.DeviceID, MaxIDBytes); err != nil {
		return router.Token{}, err
	}
	if nt.ExpiresTS < 0 {
		return router.Token{}, invalid("expires_ts", "negative")
	}
	h := HashToken(nt.Token)
	return write(ctx, a.c, "access_tokens.create", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		var id int64
		err := tx.QueryRow(ctx, sqlInsertToken, h[:], nt.UserID, nt.DeviceID, a.c.nowMS(), nt.ExpiresTS).Scan(&id)
		// A negative entry cached for this hash must go.
		return []Change{{Kind: ChangeAccessToken, Key: string(h[:])}}, err
	})
}

// LookupToken authenticates a raw token: it returns the owner of a live,
// unexpired token whose user is live and not deactivated and whose device
// (if any) is live. The default consistency is bounded staleness: a token
// created a moment ago on another instance may not be visible yet on a
// replica — pass router.ReadYourWrites(tok) or router.Strong() when that
// matters.
//
// Errors: ErrInvalidArgument (malformed token; the message never contains
// it); ErrNotFound for an unknown, revoked, expired or hidden token;
// ErrUnavailable.
func (a *AccessTokens) LookupToken(ctx context.Context, raw string, opts ...router.Consistency) (TokenOwner, error) {
	cons, err := consistency(opts)
	if err != nil {
		return TokenOwner{}, err
	}
	if err := checkRawToken(raw); err != nil {
		return TokenOwner{}, err
	}
	h := HashToken(raw)
	if cs := a.c.caches; cs != nil {
		o, found, err := cachedGet(ctx, cs, cs.token, cons, string(h[:]), loadOwner(a.c, h))
		if err != nil {
			return TokenOwner{}, err
		}
		if !found || o.ExpiresTS != nil && *o.ExpiresTS <= a.c.nowMS() {
			return TokenOwner{}, notFound("access_tokens.lookup")
		}
		return o, nil
	}
	v, _, err := a.fetchOwner(ctx, cons, h)
	return v, err
}

// loadOwner is the cached read behind LookupToken.
func loadOwner(c *core, h [32]byte) stampedLoad[TokenOwner] {
	return func(ctx context.Context, cons router.Consistency) (TokenOwner, bool, router.ReadInfo, router.LSN, error) {
		return readStamped(ctx, c, "access_tokens.lookup", cons,
			func(b *pgx.Batch) { b.Queue(sqlLookupTokenCached, h[:]) },
			func(br pgx.BatchResults) (TokenOwner, bool, error) {
				return collectOne(br, pgx.RowToStructByName[TokenOwner])
			})
	}
}

// fetchOwner is the cacheable read behind LookupToken, keyed by hash. A
// cached owner must still be checked against ExpiresTS at use.
func (a *AccessTokens) fetchOwner(ctx context.Context, cons router.Consistency, h [32]byte) (TokenOwner, router.ReadInfo, error) {
	return read(ctx, a.c, "access_tokens.lookup", cons, false, func(ctx context.Context, q router.Querier) (TokenOwner, error) {
		rows, _ := q.Query(ctx, sqlLookupToken, h[:], a.c.nowMS())
		return pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[TokenOwner])
	})
}

// RevokeToken soft-deletes a live token (logout of one session).
//
// Errors: ErrInvalidArgument; ErrNotFound if no live token has this value;
// ErrUnavailable.
func (a *AccessTokens) RevokeToken(ctx context.Context, raw string) (router.Token, error) {
	if err := checkRawToken(raw); err != nil {
		return router.Token{}, err
	}
	h := HashToken(raw)
	return write(ctx, a.c, "access_tokens.revoke", func(ctx context.Context, tx pgx.Tx) ([]Change, error) {
		return []Change{{Kind: ChangeAccessToken, Key: string(h[:])}},
			execOne(ctx, tx, sqlRevokeToken, h[:], a.c.nowMS())
	})
}
