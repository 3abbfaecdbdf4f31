package cache_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/internal/testcluster"
)

// cluster is the one local cluster of this package (Redis is what we use; a
// PostgreSQL primary comes with it).
var cluster *testcluster.Cluster

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: -1})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cache tests need redis-server and PostgreSQL 15+ server binaries "+
			"(Debian: apt-get install redis-server postgresql-15): %v\n", err)
		os.Exit(1)
	}
	cluster = c
	// The outage tests make go-redis log every failed dial; keep the output
	// readable.
	redis.SetLogger(discardLogger{})
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop cluster: %v\n", err)
	}
	os.Exit(code)
}

// ownRedis marks a test that kills or restarts Redis: Redis is running again
// when it ends. Tests of this package do not run in parallel.
func ownRedis(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if !cluster.RedisRunning() {
			if err := cluster.StartRedis(ctx); err != nil {
				t.Errorf("restart redis: %v", err)
			}
		}
	})
}

func newClient(t testing.TB, addr string) *redis.Client {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

var prefixSeq atomic.Int64

// uniquePrefix keeps tests from seeing each other's keys and messages.
func uniquePrefix(t testing.TB) string {
	name := strings.NewReplacer("/", "_", "{", "", "}", "", ":", "").Replace(t.Name())
	return fmt.Sprintf("t%d_%s_%d", prefixSeq.Add(1), name, time.Now().UnixNano())
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// mustCache returns a Cache over client; cfg.Prefix is made unique unless set.
func mustCache(t testing.TB, client redis.UniversalClient, cfg cache.Config) *cache.Cache {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = uniquePrefix(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	c, err := cache.New(client, cfg)
	if err != nil {
		t.Fatalf("cache.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func mustEntity[V any](t testing.TB, c *cache.Cache, cfg cache.EntityConfig[V]) *cache.Entity[V] {
	t.Helper()
	e, err := cache.NewEntity(c, cfg)
	if err != nil {
		t.Fatalf("NewEntity: %v", err)
	}
	return e
}

// clock is a manual clock for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Unix(1_700_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(2 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// proxy is a TCP proxy in front of Redis that can cut every connection and
// refuse new ones, simulating a network partition between one instance and a
// Redis that keeps running (and keeps its data).
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() {
		_ = ln.Close()
		p.setCut(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) Addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			p.mu.Unlock()
			_ = c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// setCut(true) closes every proxied connection and refuses new ones;
// setCut(false) heals.
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// db is an in-memory "database" with a monotonic position counter: a write
// gets position pos = ++counter and is included in reads at any position >
// pos. Rows keep their whole history so a read at any position can be served
// and any cached value checked against the truth.
type db struct {
	mu   sync.Mutex
	pos  uint64
	rows map[string][]version
	now  func() time.Time
}

type version struct {
	pos   uint64 // the write's position; also the value written
	at    time.Time
	value string
	gone  bool
}

func newDB(now func() time.Time) *db { return &db{rows: map[string][]version{}, now: now} }

// write sets (or deletes) id's value and returns the write's position.
func (d *db) write(id, value string, gone bool) uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pos++
	at := time.Time{}
	if d.now != nil {
		at = d.now()
	}
	d.rows[id] = append(d.rows[id], version{pos: d.pos, at: at, value: value, gone: gone})
	return d.pos
}

// at returns id's version included in a read at position readPos (every
// write with position < readPos), or the zero version when none is.
func (d *db) at(id string, readPos uint64) version {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.atLocked(id, readPos)
}

func (d *db) atLocked(id string, readPos uint64) version {
	h := d.rows[id]
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].pos < readPos {
			return h[i]
		}
	}
	return version{}
}

// current returns a read position covering every write so far.
func (d *db) current() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pos + 1
}

// loader reads id at the current position (a read on the primary).
func (d *db) loader(id string, calls *atomic.Int64) cache.Loader[string] {
	return func(context.Context) (string, uint64, bool, error) {
		if calls != nil {
			calls.Add(1)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		p := d.pos + 1
		v := d.atLocked(id, p)
		return v.value, p, v.pos != 0 && !v.gone, nil
	}
}

var errBoom = errors.New("boom")

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}
