package repos

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/router"
)

// sqlTokensOf finds the live access tokens of users ($1) and of devices
// ($2, $3: user and device IDs, pairwise), whose cached lookups a change of
// the user or device may have changed. Both halves use
// access_tokens_user_device_idx. Tokens of a hidden user or device are
// included: their deleted_at is still NULL.
const sqlTokensOf = `
SELECT token_hash FROM access_tokens WHERE user_id = ANY($1::text[]) AND deleted_at IS NULL
UNION ALL
SELECT t.token_hash FROM unnest($2::text[], $3::text[]) AS x(u, d)
JOIN access_tokens t ON t.user_id = x.u AND t.device_id = x.d AND t.deleted_at IS NULL`

// sqlJoinedOf finds the joined members of rooms whose liveness changed: their
// cached IsJoined answers flip with it (other members' answers are false
// either way). Served by room_memberships_room_members_idx.
const sqlJoinedOf = `
SELECT room_id, user_id FROM room_memberships WHERE room_id = ANY($1::text[]) AND membership = 'join'`

// invalidateChunk bounds the keys of one Invalidate call (one Lua script per
// shard), so a large room's deletion does not block Redis for long.
const invalidateChunk = 512

// InvalidateCached invalidates, at position pos, every cache entry the
// changes affect: the entries of the named users, device lists, tokens,
// rooms and member lists, and for ChangeTokensOfUser and
// ChangeTokensOfDevice the entries of every live access token of that user
// or device, found with one query on q, which must be a connection to the
// primary (nil: a Strong read through the repositories' DB), and for
// ChangeMembership without a user (a room deleted or restored) the IsJoined
// entries of the room's joined members, found the same way.
//
// pos must be at least the commit position of the writes behind the changes
// (their token, or any primary WAL position read after they became
// visible). The token lookup must run after those writes are visible, so
// that it finds every token whose lookup they changed; the repositories'
// own writes take row locks that keep a concurrent token creation from
// slipping past it.
//
// Without a cache it does nothing. Errors: the lookup's error (nothing is
// invalidated then), or an error wrapping cache.ErrUnavailable when Redis
// could not be updated; either way the caller must retry (the cache stops
// using Redis until the invalidation or an epoch bump succeeds). Safe for
// concurrent use.
func (r *Repos) InvalidateCached(ctx context.Context, q router.Querier, pos router.LSN, changes []Change) error {
	return r.Users.c.invalidate(ctx, q, pos, changes)
}

// invalidate is InvalidateCached; the write path calls it right after each
// commit (the fast path; the relay repeats it from the outbox).
func (c *core) invalidate(ctx context.Context, q router.Querier, pos router.LSN, changes []Change) error {
	cs := c.caches
	if cs == nil || len(changes) == 0 {
		return nil
	}
	if pos == 0 {
		return fmt.Errorf("repos: invalidate: %w: position 0", ErrInvalidArgument)
	}
	seen := make(map[cache.Key]struct{}, len(changes)+2)
	keys := make([]cache.Key, 0, len(changes)+2)
	add := func(kind, id string) {
		k := cache.Key{Kind: kind, ID: id}
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			keys = append(keys, k)
		}
	}
	var users, devUsers, devIDs, rooms []string
	for _, ch := range changes {
		switch ch.Kind {
		case ChangeUser:
			add(cacheKindUser, ch.Key)
		case ChangeDevices:
			add(cacheKindDevices, ch.Key)
		case ChangeAccessToken:
			add(cacheKindToken, ch.Key)
		case ChangeTokensOfUser:
			users = append(users, ch.Key)
		case ChangeTokensOfDevice:
			add(cacheKindDevices, ch.Key)
			devUsers, devIDs = append(devUsers, ch.Key), append(devIDs, ch.Key2)
		case ChangeRoom:
			add(cacheKindRoom, ch.Key)
		case ChangeMembership:
			add(cacheKindMembers, ch.Key)
			if ch.Key2 != "" {
				add(cacheKindJoined, joinedKey(ch.Key, ch.Key2))
			} else {
				rooms = append(rooms, ch.Key)
			}
		}
	}
	if len(users)+len(devUsers) > 0 {
		hashes, err := c.tokensOf(ctx, q, users, devUsers, devIDs)
		if err != nil {
			return fmt.Errorf("repos: invalidate: tokens: %w", err)
		}
		for _, h := range hashes {
			add(cacheKindToken, string(h))
		}
	}
	if len(rooms) > 0 {
		joined, err := c.joinedOf(ctx, q, rooms)
		if err != nil {
			return fmt.Errorf("repos: invalidate: members: %w", err)
		}
		for _, m := range joined {
			add(cacheKindJoined, joinedKey(m[0], m[1]))
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), invalidateChunk)
		if err := cs.c.Invalidate(ctx, uint64(pos), keys[:n]...); err != nil {
			return fmt.Errorf("repos: invalidate: %w", err)
		}
		keys = keys[n:]
	}
	return nil
}

func (c *core) joinedOf(ctx context.Context, q router.Querier, rooms []string) ([][2]string, error) {
	collect := func(ctx context.Context, q router.Querier) ([][2]string, error) {
		rows, _ := q.Query(ctx, sqlJoinedOf, rooms)
		return pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]string, error) {
			var m [2]string
			err := row.Scan(&m[0], &m[1])
			return m, err
		})
	}
	if q != nil {
		return collect(ctx, q)
	}
	v, _, err := read(ctx, c, "invalidate.members", router.Strong(), false, collect)
	return v, err
}

func (c *core) tokensOf(ctx context.Context, q router.Querier, users, devUsers, devIDs []string) ([][]byte, error) {
	if users == nil {
		users = []string{}
	}
	if devUsers == nil {
		devUsers, devIDs = []string{}, []string{}
	}
	collect := func(ctx context.Context, q router.Querier) ([][]byte, error) {
		rows, _ := q.Query(ctx, sqlTokensOf, users, devUsers, devIDs)
		return pgx.CollectRows(rows, pgx.RowTo[[]byte])
	}
	if q != nil {
		return collect(ctx, q)
	}
	v, _, err := read(ctx, c, "invalidate.tokens", router.Strong(), false, collect)
	return v, err
}

// joinedKey is the cache ID of one (room, user) membership; NUL never
// occurs in a valid ID.
func joinedKey(roomID, userID string) string { return roomID + "\x00" + userID }

// WarmCache reads into the cache the profile, the device list and the
// access-token lookups of each user in userIDs (with the default bounded
// staleness), a few at a time, stopping at the first error (including ctx's
// end). Without a cache it does nothing. Malformed IDs are skipped. Safe for
// concurrent use.
func (r *Repos) WarmCache(ctx context.Context, userIDs []string) error {
	c := r.Users.c
	cs := c.caches
	if cs == nil {
		return nil
	}
	const workers = 4
	ids := make(chan string)
	errs := make(chan error, workers)
	for range workers {
		go func() {
			var err error
			for id := range ids {
				if err == nil {
					err = r.warmUser(ctx, id)
				}
			}
			errs <- err
		}()
	}
	var err error
feed:
	for _, id := range userIDs {
		if checkUserID("user_id", id, false) != nil {
			continue
		}
		select {
		case ids <- id:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(ids)
	for range workers {
		if werr := <-errs; err == nil {
			err = werr
		}
	}
	return err
}

const sqlTokenHashesOfUser = `SELECT token_hash FROM access_tokens WHERE user_id = $1 AND deleted_at IS NULL LIMIT 100`

func (r *Repos) warmUser(ctx context.Context, userID string) error {
	c := r.Users.c
	cs := c.caches
	if _, err := r.Users.GetUser(ctx, userID); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	if _, err := r.Devices.ListDevices(ctx, DevicePageRequest{UserID: userID}); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	hashes, _, err := read(ctx, c, "warm.tokens", router.Consistency{}, false, func(ctx context.Context, q router.Querier) ([][]byte, error) {
		rows, _ := q.Query(ctx, sqlTokenHashesOfUser, userID)
		return pgx.CollectRows(rows, pgx.RowTo[[]byte])
	})
	if err != nil {
		return err
	}
	for _, h := range hashes {
		if len(h) != 32 {
			continue
		}
		if _, _, err := cachedGet(ctx, cs, cs.token, router.Consistency{}, string(h), loadOwner(c, [32]byte(h))); err != nil {
			return err
		}
	}
	return nil
}
