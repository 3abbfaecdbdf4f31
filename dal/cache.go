package dal

import (
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/router"
)

// openCache creates the cache when cfg names a Redis.
func (d *DAL) openCache(cfg Config, rc router.Config) error {
	client := cfg.Redis
	if client == nil && cfg.RedisAddr != "" {
		client = redis.NewClient(&redis.Options{Addr: cfg.RedisAddr})
		d.ownsRedis = true
	}
	if client == nil {
		return nil
	}
	cc := cfg.Cache
	if cc.MeterProvider == nil {
		cc.MeterProvider = rc.MeterProvider
	}
	if cc.Logger == nil {
		cc.Logger = rc.Logger
	}
	if cc.MaxSourceLag == 0 {
		cc.MaxSourceLag = maxSourceLag(rc.DefaultMaxStaleness)
	}
	c, err := cache.New(client, cc)
	if err != nil {
		if d.ownsRedis {
			_ = client.Close()
		}
		return fmt.Errorf("%w: cache: %v", ErrConfig, err)
	}
	d.cache, d.redis = c, client
	return nil
}

// maxSourceLag is the cache's grace period for new epochs: the most a
// loader's source (a replica within the router's staleness bound, as the
// router measures it, i.e. up to about two probe intervals more) may lag,
// plus a margin for clock skew between instances.
func maxSourceLag(staleness time.Duration) time.Duration {
	if staleness <= 0 {
		staleness = time.Second // the router's default bound
	}
	return max(staleness+time.Second, cache.DefaultMaxSourceLag)
}

func (d *DAL) closeCache() {
	if d.cache == nil {
		return
	}
	_ = d.cache.Close()
	if d.ownsRedis {
		_ = d.redis.Close()
	}
}
