package cache_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
)

// The read path of a repository: the loader reads PostgreSQL honouring the
// caller's token and reports the WAL position it read at. The write path
// invalidates with the commit's position.
func Example() {
	ctx := context.Background()
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
	c, err := cache.New(rdb, cache.Config{L1: cache.L1Config{Enabled: true}})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	profiles, err := cache.NewEntity(c, cache.EntityConfig[profile]{Kind: "profile", Codec: profileCodec})
	if err != nil {
		panic(err)
	}

	var token uint64 // the session's consistency token; 0 = none
	p, info, err := profiles.Get(ctx, "@alice:example.org", token, func(ctx context.Context) (profile, uint64, bool, error) {
		// SELECT ... on a node whose replay position covers token;
		// return the row, the position read at, and whether it exists.
		return profile{UserID: "@alice:example.org", DisplayName: "Alice"}, 1234, true, nil
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(p.DisplayName, info.Found)

	// After UPDATE ... COMMIT at position 1300:
	if err := profiles.Invalidate(ctx, 1300, "@alice:example.org"); err != nil {
		// Redis unavailable: the durable change feed retries it.
		fmt.Println("invalidation deferred:", err)
	}
}
