package cache

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscribeLoop keeps the L1's subscription to the invalidation channel. The
// L1 is trusted only between a subscription confirmation and the next sign of
// trouble (a receive error, or a ping left unanswered for a HealthInterval);
// both transitions flush it. Each loss starts a fresh PubSub.
func (c *Cache) subscribeLoop(ctx context.Context) {
	defer close(c.subDone)
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		ps := c.client.Subscribe(ctx, c.ks.channel)
		trusted, err := c.runSubscription(ctx, ps)
		_ = ps.Close()
		c.l1.setTrusted(false, "subscription_lost")
		if ctx.Err() != nil {
			return
		}
		c.log.Warn("L1 invalidation subscription lost; L1 flushed", "err", err)
		if trusted {
			backoff = 10 * time.Millisecond
		} else {
			backoff = min(2*backoff, c.cfg.L1.HealthInterval)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// runSubscription returns when the subscription is lost or ctx ends; trusted
// reports whether it was ever confirmed.
func (c *Cache) runSubscription(ctx context.Context, ps *redis.PubSub) (trusted bool, err error) {
	interval := c.cfg.L1.HealthInterval
	pinged := false
	for {
		msg, err := ps.ReceiveTimeout(ctx, interval)
		if err != nil {
			if ctx.Err() != nil {
				return trusted, ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if pinged {
					return trusted, errors.New("cache: subscription ping unanswered")
				}
				if err := ps.Ping(ctx); err != nil {
					return trusted, err
				}
				pinged = true
				continue
			}
			return trusted, err
		}
		pinged = false
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == c.ks.channel {
				c.l1.setTrusted(true, "subscribed")
				trusted = true
			}
		case *redis.Message:
			c.handleMessage(m.Payload)
		case *redis.Pong:
		}
	}
}

func (c *Cache) handleMessage(payload string) {
	if len(payload) == 9 && payload[0] == msgWatermark {
		c.l1.raiseWatermark(beUint64(payload[1:]))
		return
	}
	if len(payload) > 0 && payload[0] == msgInvalidate {
		if pos, keys, ok := parseInvalidation(payload); ok {
			for _, k := range keys {
				c.l1.invalidate(l1Key{k.Kind, k.ID}, pos)
			}
			return
		}
	}
	// msgFlush, or anything this version does not understand.
	c.l1.flush("message")
}
