package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// Cache fault kinds, enabled by RunChaos when the DALs have a cache.
const (
	// FaultRedisKill: kill -9 Redis, restart it (empty) after the hold.
	FaultRedisKill = "redis_kill"
	// FaultRelayLeaderKill: end the session of the active invalidation
	// relay (pg_terminate_backend of the backend holding the relay's
	// leadership lock on the primary), as if its process died mid-stream;
	// a standby relay of another DAL must take over.
	FaultRelayLeaderKill = "relay_leader_kill"
)

// VCacheStale: after quiescence (writes stopped, faults healed, the relay's
// watermark past the primary's position), a read that may be served from
// the cache returned something other than what the primary holds.
const VCacheStale = "cache_stale_after_quiescence"

// cacheFaults returns the cache fault kinds for RunChaos. dals returns the
// workload's DALs (their relay candidates).
func cacheFaults(c *testcluster.Cluster, dals func() []*dal.DAL) []ExtraFault {
	return []ExtraFault{
		{
			Kind:   FaultRedisKill,
			Inject: func(ctx context.Context) (string, error) { return "", c.KillRedis(ctx) },
			Heal:   c.StartRedis,
		},
		{
			Kind: FaultRelayLeaderKill,
			Inject: func(ctx context.Context) (string, error) {
				for i, d := range dals() {
					st := d.RelayStatus()
					if !st.Active || st.BackendPID == 0 {
						continue
					}
					p := c.Primary()
					if p == nil {
						return "", errors.New("no primary")
					}
					conn, err := pgx.Connect(ctx, p.SuperDSN())
					if err != nil {
						return "", err
					}
					defer conn.Close(context.WithoutCancel(ctx))
					var ok bool
					if err := conn.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, int32(st.BackendPID)).Scan(&ok); err != nil {
						return "", err
					}
					return fmt.Sprintf("terminated the relay session of dal%d (pid %d, %d rows applied): %v", i, st.BackendPID, st.Applied, ok), nil
				}
				return "no active relay found", nil
			},
		},
	}
}

// cacheStats sums the cache counters of dals.
func cacheStats(dals []*dal.DAL) (cache.Stats, bool) {
	var sum cache.Stats
	found := false
	for _, d := range dals {
		s, ok := d.CacheStats()
		if !ok {
			continue
		}
		found = true
		sum.L1Hits += s.L1Hits
		sum.L1Misses += s.L1Misses
		sum.RedisHits += s.RedisHits
		sum.Misses += s.Misses
		sum.Loads += s.Loads
		sum.Shared += s.Shared
		sum.WatermarkHits += s.WatermarkHits
		sum.Fills += s.Fills
		sum.FillsRejectedStale += s.FillsRejectedStale
		sum.FillsRejectedEpoch += s.FillsRejectedEpoch
		sum.FillsTooOld += s.FillsTooOld
		sum.FillsTooLarge += s.FillsTooLarge
		sum.FillsSuperseded += s.FillsSuperseded
		sum.FillsSkipped += s.FillsSkipped
		sum.FillsYoungEpoch += s.FillsYoungEpoch
		sum.FillErrors += s.FillErrors
		sum.Invalidations += s.Invalidations
		sum.InvalidationErrors += s.InvalidationErrors
		sum.EpochBumps += s.EpochBumps
		sum.RedisErrors += s.RedisErrors
		sum.L1Flushes += s.L1Flushes
	}
	return sum, found
}

// cacheConvergence is the "after quiescence, the cache equals the primary"
// check: it waits until an active relay's watermark has passed the
// primary's current position (every write's invalidation applied), then,
// on every DAL, reads each user's profile, each membership room's joined
// members and each user's IsJoined with the default bounded staleness and
// no session (so a current cache entry is served) and compares them with
// Strong reads. It records in rep how many of those reads the cache served.
func cacheConvergence(w *Workload, rep *Report) FinalCheck {
	return func(ctx context.Context, dals []*dal.DAL, _ *History) ([]Violation, error) {
		d0 := dals[len(dals)-1]
		var target router.LSN
		for _, n := range d0.Router().Status().Nodes {
			if n.Primary {
				target = n.LSN
			}
		}
		if err := waitRelay(ctx, dals, target); err != nil {
			return nil, err
		}
		before, _ := cacheStats(dals)
		var vs []Violation
		stale := func(d int, obj, detail string) {
			vs = append(vs, Violation{Kind: VCacheStale, Object: obj, User: -1,
				Detail: fmt.Sprintf("dal%d: %s", d, detail)})
		}
		ids := w.UserIDs()
		for di, d := range dals {
			for _, id := range ids {
				var cached, strong repos.User
				if err := retryRead(ctx, func(ctx context.Context) (err error) {
					if cached, err = d.Users.GetUser(ctx, id); err != nil {
						return err
					}
					strong, err = d.Users.GetUser(ctx, id, router.Strong())
					return err
				}); err != nil {
					return nil, fmt.Errorf("cache check: %w", err)
				}
				if deref(cached.DisplayName) != deref(strong.DisplayName) || cached.UpdatedTS != strong.UpdatedTS {
					stale(di, profileObj(id), fmt.Sprintf("cached displayname %q, primary %q", deref(cached.DisplayName), deref(strong.DisplayName)))
				}
			}
			for _, room := range w.toggle {
				var cached, strong []string
				if err := retryRead(ctx, func(ctx context.Context) error {
					var err error
					if cached, err = joinedIDs(ctx, d, room, router.Consistency{}); err != nil {
						return err
					}
					strong, err = joinedIDs(ctx, d, room, router.Strong())
					return err
				}); err != nil {
					return nil, fmt.Errorf("cache check: %w", err)
				}
				if !slices.Equal(cached, strong) {
					stale(di, "members/"+room, fmt.Sprintf("cached joined members %v, primary %v", cached, strong))
				}
				for _, id := range ids {
					var cj, sj bool
					if err := retryRead(ctx, func(ctx context.Context) (err error) {
						if cj, err = d.Memberships.IsJoined(ctx, room, id); err != nil {
							return err
						}
						sj, err = d.Memberships.IsJoined(ctx, room, id, router.Strong())
						return err
					}); err != nil {
						return nil, fmt.Errorf("cache check: %w", err)
					}
					if cj != sj {
						stale(di, memberObj(room, id), fmt.Sprintf("cached IsJoined %v, primary %v", cj, sj))
					}
				}
			}
		}
		after, _ := cacheStats(dals)
		rep.Cache.FinalCheckHits = (after.RedisHits + after.L1Hits) - (before.RedisHits + before.L1Hits)
		rep.Cache.FinalCheckMisses = after.Misses - before.Misses
		return vs, nil
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func joinedIDs(ctx context.Context, d *dal.DAL, room string, c router.Consistency) ([]string, error) {
	p, err := d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room, Limit: repos.DefaultMaxPageSize, Consistency: c})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(p.Items))
	for i, m := range p.Items {
		ids[i] = m.UserID
	}
	slices.Sort(ids)
	return ids, nil
}

// waitRelay polls until some DAL's active relay set a watermark at or past
// target.
func waitRelay(ctx context.Context, dals []*dal.DAL, target router.LSN) error {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		var seen []string
		for i, d := range dals {
			st := d.RelayStatus()
			if st.Active && st.Watermark >= target {
				return nil
			}
			seen = append(seen, fmt.Sprintf("dal%d active=%v watermark=%v", i, st.Active, st.Watermark))
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-wctx.Done():
			t.Stop()
			return fmt.Errorf("cache check: no relay reached %v: %v", target, seen)
		case <-t.C:
		}
	}
}
