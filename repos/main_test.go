package repos_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/internal/testcluster"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// env is the one cluster of this test package, started by TestMain.
var env struct {
	cluster *testcluster.Cluster
	router  *router.Router
}

// cursorKeyForTests is the CursorKey of every Repos built by the tests, so
// benchmarks can mint cursors at arbitrary depths.
var cursorKeyForTests = []byte("repos-test-cursor-key-0123456789")

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := testcluster.Start(ctx, testcluster.Options{Replicas: 1})
	if err != nil {
		cancel()
		fmt.Fprintf(os.Stderr, "repos tests need PostgreSQL 15+ server binaries and redis-server "+
			"(Debian: apt-get install postgresql-15 redis-server): %v\n", err)
		if c != nil {
			_ = c.Stop()
		}
		return 1
	}
	defer c.Stop()
	if err := dal.Migrate(ctx, c.PrimaryDSN()); err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "migrate:", err)
		return 1
	}
	if err := c.WaitReplicated(ctx); err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "wait replicated:", err)
		return 1
	}
	r, err := router.New(ctx, router.Config{PrimaryDSN: c.PrimaryDSN(), ReplicaDSNs: c.ReplicaDSNs()})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "router:", err)
		return 1
	}
	defer r.Close()
	env.cluster, env.router = c, r
	// The runnable Examples connect like a homeserver would: from the
	// environment.
	os.Setenv("HSDAL_PRIMARY_DSN", c.PrimaryDSN())
	os.Setenv("HSDAL_REPLICA_DSNS", strings.Join(c.ReplicaDSNs(), " "))
	return m.Run()
}

// countingDB passes everything through to the real router and counts the
// calls, so tests can prove that rejected input ran no SQL at all.
type countingDB struct {
	db     repos.DB
	calls  atomic.Int64
	writes atomic.Int64
}

func (c *countingDB) Read(ctx context.Context, cons router.Consistency, fn func(context.Context, router.Querier) error) (router.ReadInfo, error) {
	c.calls.Add(1)
	return c.db.Read(ctx, cons, fn)
}

func (c *countingDB) ReadTx(ctx context.Context, cons router.Consistency, fn func(context.Context, router.Querier) error) (router.ReadInfo, error) {
	c.calls.Add(1)
	return c.db.ReadTx(ctx, cons, fn)
}

func (c *countingDB) Write(ctx context.Context, fn func(context.Context, pgx.Tx) error) (router.Token, error) {
	c.calls.Add(1)
	c.writes.Add(1)
	return c.db.Write(ctx, fn)
}

// fakeClock is a settable clock for tests (token expiry, device touches).
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ms.Store(time.Now().UnixMilli())
	return c
}

func (c *fakeClock) Now() time.Time      { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ms.Add(d.Milliseconds()) }
func (c *fakeClock) Set(t time.Time)     { c.ms.Store(t.UnixMilli()) }
func (c *fakeClock) UnixMilli() int64    { return c.ms.Load() }

type fixture struct {
	*repos.Repos
	db    *countingDB
	clock *fakeClock
	// changes records what AfterCommit reported.
	changes atomic.Pointer[[]repos.Change]
}

// newRepos builds repositories over the package's router with a fake clock
// and a call counter.
func newRepos(tb testing.TB) *fixture {
	tb.Helper()
	f := &fixture{db: &countingDB{db: env.router}, clock: newFakeClock()}
	rp, err := repos.New(f.db, repos.Config{
		CursorKey: cursorKeyForTests,
		Now:       f.clock.Now,
		AfterCommit: func(_ context.Context, _ router.Token, ch []repos.Change) {
			f.changes.Store(&ch)
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	f.Repos = rp
	return f
}

func (f *fixture) lastChanges() []repos.Change {
	if p := f.changes.Load(); p != nil {
		return *p
	}
	return nil
}

// session returns a context whose reads see every write made through it
// (the router's session token), like a homeserver request would.
func session(tb testing.TB) context.Context {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	tb.Cleanup(cancel)
	return router.WithSession(ctx, router.Token{})
}

var idSeq atomic.Int64

// uid returns a fresh user ID; rid a fresh room ID; eid a fresh event ID.
func uid(name string) string { return fmt.Sprintf("@%s-%08d:test.local", name, idSeq.Add(1)) }
func rid(name string) string { return fmt.Sprintf("!%s-%08d:test.local", name, idSeq.Add(1)) }
func eid() string            { return fmt.Sprintf("$ev-%08d:test.local", idSeq.Add(1)) }

func must[T any](tb testing.TB) func(v T, _ router.Token, err error) T {
	return func(v T, _ router.Token, err error) T {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return v
	}
}

func mustTok(tb testing.TB) func(router.Token, error) router.Token {
	return func(tok router.Token, err error) router.Token {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
		return tok
	}
}

func wantErr(tb testing.TB, err, target error) {
	tb.Helper()
	if !errors.Is(err, target) {
		tb.Fatalf("got error %v, want %v", err, target)
	}
}

func mustUser(tb testing.TB, f *fixture, ctx context.Context, name string) string {
	tb.Helper()
	id := uid(name)
	must[repos.User](tb)(f.Users.CreateUser(ctx, repos.NewUser{UserID: id}))
	return id
}

func mustRoom(tb testing.TB, f *fixture, ctx context.Context, creator string) string {
	tb.Helper()
	id := rid("room")
	must[repos.Room](tb)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: id, Creator: creator}))
	return id
}

func ptr[T any](v T) *T { return &v }
