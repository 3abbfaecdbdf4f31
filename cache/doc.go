// Package cache is hsdal's Redis hot-entity cache: cache-aside reads with
// stampede protection, an optional in-process tier (L1), and fills that are
// accepted only when they are at least as new as the last invalidation of
// their key.
//
// The package knows nothing of SQL: a WAL position is a plain uint64 to it.
// The durable change feed that turns PostgreSQL rows into invalidations lives
// on the SQL side and calls Cache.Invalidate.
//
// # Usage
//
//	c, err := cache.New(redisClient, cache.Config{L1: cache.L1Config{Enabled: true}})
//	if err != nil { ... }
//	defer c.Close()
//	profiles, err := cache.NewEntity(c, cache.EntityConfig[Profile]{
//		Kind:  "profile",
//		Codec: cache.Binary(1, encodeProfile, decodeProfile),
//	})
//
//	// Read path: token is the caller's consistency token (0 for none).
//	p, info, err := profiles.Get(ctx, userID, token, func(ctx context.Context) (Profile, uint64, bool, error) {
//		// read from PostgreSQL honouring token; return the position read at
//	})
//
//	// Write path, right after COMMIT (and again from the durable feed):
//	err = profiles.Invalidate(ctx, commitPos, userID)
//
// # Positions
//
// A write has a position (its commit's WAL position, the consistency
// token). Data read "at position p" includes every write whose position is
// < p. So an entry read at p covers token t iff p > t, and an invalidation at
// t stops every fill read at p <= t.
//
// # How stale data is kept out
//
//   - Per-key invalidation markers in Redis (the highest invalidated
//     position, kept MarkerTTL) are checked atomically by the Lua scripts
//     that fill and read entries: no fill at or below the marker is stored,
//     and no entry at or below it is served.
//   - Per-shard epochs (a random ID plus its creation time by the Redis
//     server's clock) guard against Redis losing the markers: a fill presents
//     the epoch it saw before loading and is refused if it changed; a missing
//     epoch is recreated with a new ID; a new epoch is filled only by loads
//     begun when it was MaxSourceLag old. An instance whose Invalidate failed
//     stops using Redis until it has given every shard a new epoch.
//   - The L1 keeps the same positions and epochs, applies invalidations from
//     pub/sub, and is flushed and unused whenever the subscription is down.
//
// # Watermark
//
// A token-bearing Get normally needs an entry read above its token, so every
// write makes the writer's later reads miss until entries are refilled. The
// durable feed, which sees every write, can do better: once it has
// invalidated every write below w it calls SetWatermark(w), and a Get whose
// token is below w may use any current entry (one that no invalidation
// deleted). The watermark lives per shard under the epoch (an epoch change
// forgets it) and reaches each L1 through pub/sub behind the invalidation
// messages it vouches for.
//
// # Limits
//
// Values whose encoding exceeds MaxValueBytes (default 64 KiB) are not cached
// at all: the caller gets the loaded value, nothing is stored. A very large
// room's member list is therefore read from PostgreSQL every time rather than
// written to Redis as one giant value on every join. Concurrent Gets of a key
// share one lookup (Info.Shared); a shared value may have been read slightly
// before a Get began but always covers its token.
package cache
