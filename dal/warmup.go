package dal

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/router"
)

// sqlRecentlyActive picks the users whose devices were seen most recently.
// devices.last_seen_ts is deliberately not indexed (touches stay HOT
// updates), so this is one scan of devices, run once, in the background, on
// a replica when one is fresh enough.
const sqlRecentlyActive = `
SELECT d.user_id FROM devices d
WHERE d.deleted_at IS NULL AND d.last_seen_ts IS NOT NULL
GROUP BY d.user_id
ORDER BY max(d.last_seen_ts) DESC
LIMIT $1`

// warmup loads the most recently active users' entries into the cache,
// within w.Timeout; errors are logged at debug level and end it.
func (d *DAL) warmup(ctx context.Context, w WarmupConfig, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	start := time.Now()
	var users []string
	_, err := d.router.Read(ctx, router.Consistency{}, func(ctx context.Context, q router.Querier) error {
		rows, _ := q.Query(ctx, sqlRecentlyActive, w.Users)
		var err error
		users, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	for err == nil {
		young := d.cache.Stats().FillsYoungEpoch
		err = d.Repos.WarmCache(ctx, users)
		if err != nil || d.cache.Stats().FillsYoungEpoch == young {
			break
		}
		// Some epochs of the key space are younger than the cache's grace
		// period (a fresh Redis or prefix): they take no fills yet. Wait it
		// out and load again (within the timeout).
		sleep(ctx, d.sourceLag)
		err = ctx.Err()
	}
	if err != nil {
		log.Debug("cache warm-up stopped", "users", len(users), "err", err)
		return
	}
	log.Info("cache warmed up", "users", len(users), "took", time.Since(start).Round(time.Millisecond))
}
