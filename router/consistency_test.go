package router_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// readValue reads v for key k with consistency c.
func readValue(ctx context.Context, r *router.Router, c router.Consistency, table string, k int) (int64, router.ReadInfo, error) {
	var v int64
	info, err := r.Read(ctx, c, func(ctx context.Context, q router.Querier) error {
		return q.QueryRow(ctx, "SELECT v FROM "+table+" WHERE k = $1", k).Scan(&v)
	})
	return v, info, err
}

func setValue(ctx context.Context, r *router.Router, table string, k int, v int64) (router.Token, error) {
	return r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+table+" (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", k, v)
		return err
	})
}

func TestReadYourWritesWithReplayPaused(t *testing.T) {
	ctx := context.Background()
	r1 := mustRouter(t, configFor(t, cluster))
	// A second, independently opened router: the token crosses instances.
	r2 := mustRouter(t, configFor(t, cluster))
	mustExec(t, r1, "CREATE TABLE IF NOT EXISTS ryw (k int PRIMARY KEY, v bigint NOT NULL)")
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	pauseReplay(t, cluster, standbyNames(cluster)...)

	const goroutines, iterations = 4, 25
	var onPrimary atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for w := range goroutines {
		g.Go(func() error {
			for i := range int64(iterations) {
				tok, err := setValue(gctx, r1, "ryw", w, i)
				if err != nil {
					return err
				}
				// The client carries the token as an opaque string.
				wire := tok.Encode()
				for _, r := range []*router.Router{r1, r2} {
					got, err := router.DecodeToken(wire)
					if err != nil {
						return err
					}
					v, info, err := readValue(gctx, r, router.ReadYourWrites(got), "ryw", w)
					if err != nil {
						return err
					}
					if v != i {
						return fmt.Errorf("goroutine %d: read %d after writing %d (served by %s, pos %v, token %v)", w, v, i, info.Node, info.Pos, tok.LSN)
					}
					// On a replica Pos is the replay position: it must cover
					// the token. On the primary Pos is only a lower bound
					// known before the query (the read is Strong anyway).
					if !info.Primary && !info.Covers(tok) {
						return fmt.Errorf("ReadInfo %+v does not cover token %+v", info, tok)
					}
					if info.Primary {
						onPrimary.Add(1)
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := onPrimary.Load(), int64(goroutines*iterations*2); got != want {
		// Replay is paused everywhere: no replica can have the writes.
		t.Fatalf("%d of %d read-your-writes reads ran on the primary with replay paused", got, want)
	}
}

func TestReadYourWritesUsesReplicaOnceReplayed(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS ryw2 (k int PRIMARY KEY, v bigint NOT NULL)")
	tok, err := setValue(ctx, r, "ryw2", 1, 42)
	if err != nil {
		t.Fatal(err)
	}
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	// Replicas have replayed the token: a read-your-writes read needs no
	// primary (the probe may predate the token: the router re-reads the
	// replay position on the replica's connection).
	v, info, err := readValue(ctx, r, router.ReadYourWrites(tok), "ryw2", 1)
	if err != nil || v != 42 {
		t.Fatalf("read = %d, %v", v, err)
	}
	if info.Primary {
		t.Fatalf("read-your-writes read went to the primary although every replica replayed the token: %+v", info)
	}
	if !info.Covers(tok) {
		t.Fatalf("ReadInfo %+v does not cover %+v", info, tok)
	}
}

func TestSessionCarriesWrites(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS sess (k int PRIMARY KEY, v bigint NOT NULL)")
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatal(err)
	}
	pauseReplay(t, cluster, standbyNames(cluster)...)

	sctx := router.WithSession(ctx, router.Token{})
	if !router.SessionToken(sctx).IsZero() {
		t.Fatal("new session must start empty")
	}
	tok, err := setValue(sctx, r, "sess", 1, 7)
	if err != nil {
		t.Fatal(err)
	}
	if got := router.SessionToken(sctx); got != tok {
		t.Fatalf("session token = %+v, want the write's %+v", got, tok)
	}
	for _, c := range []router.Consistency{{}, router.BoundedStaleness(time.Hour)} {
		v, info, err := readValue(sctx, r, c, "sess", 1)
		if err != nil || v != 7 {
			t.Fatalf("%v read in session = %d, %v (%+v)", c, v, err, info)
		}
	}
	// Another request of the same client: new session seeded from the wire.
	next := router.WithSession(ctx, router.SessionToken(sctx))
	if v, _, err := readValue(next, r, router.BoundedStaleness(time.Hour), "sess", 1); err != nil || v != 7 {
		t.Fatalf("read in seeded session = %d, %v", v, err)
	}
	if router.SessionToken(ctx) != (router.Token{}) {
		t.Fatal("a context without session must report the zero token")
	}
}

func TestReadsRejectWrites(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS ro (k int PRIMARY KEY)")
	mustExec(t, r, "CREATE SEQUENCE IF NOT EXISTS ro_seq")
	for _, c := range []router.Consistency{router.Strong(), {}} {
		for name, sql := range map[string]string{
			"insert":     "INSERT INTO ro VALUES (1)",
			"for update": "SELECT k FROM ro FOR UPDATE",
			"nextval":    "SELECT nextval('ro_seq')",
		} {
			_, err := r.Read(ctx, c, func(ctx context.Context, q router.Querier) error {
				rows, err := q.Query(ctx, sql)
				if err != nil {
					return err
				}
				rows.Close()
				return rows.Err()
			})
			if err == nil {
				t.Errorf("%s in a %v read succeeded; reads must be read-only on every node", name, c)
			}
		}
	}
}

func TestWriteErrorsAreReturnedAsIs(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS uniq (k int PRIMARY KEY)")
	mustExec(t, r, "INSERT INTO uniq VALUES (1) ON CONFLICT DO NOTHING")
	for range 10 { // more than Breaker.Failures: SQL errors never open it
		_, err := r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO uniq VALUES (1)")
			return err
		})
		if err == nil || router.Retryable(err) || errors.Is(err, router.ErrUnavailable) {
			t.Fatalf("unique violation: err = %v, want a plain non-retryable error", err)
		}
	}
	if _, err := setValue(ctx, r, "uniq_v", 1, 1); err == nil {
		t.Fatal("write to a missing table succeeded")
	}
	for _, n := range r.Status().Nodes {
		if n.Breaker != "closed" {
			t.Fatalf("breaker of %s is %s after SQL errors", n.Name, n.Breaker)
		}
	}
	// A write that ends its own transaction is refused.
	_, err := r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error { return tx.Commit(ctx) })
	if !errors.Is(err, router.ErrTxEnded) {
		t.Fatalf("fn committing itself: err = %v", err)
	}
	// A write that swallows an error is refused and rolled back.
	_, err = r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, _ = tx.Exec(ctx, "INSERT INTO uniq VALUES (1)")
		return nil
	})
	if !errors.Is(err, router.ErrTxAborted) {
		t.Fatalf("fn swallowing an error: err = %v", err)
	}
}

// TestConcurrentReadersAndWriters exercises routing under -race.
func TestConcurrentReadersAndWriters(t *testing.T) {
	ctx := context.Background()
	r := mustRouter(t, configFor(t, cluster))
	mustExec(t, r, "CREATE TABLE IF NOT EXISTS conc (k int PRIMARY KEY, v bigint NOT NULL)")
	var mu sync.Mutex
	last := map[int]int64{}
	g, gctx := errgroup.WithContext(ctx)
	for w := range 4 {
		g.Go(func() error {
			sctx := router.WithSession(gctx, router.Token{})
			for i := range int64(30) {
				if _, err := setValue(sctx, r, "conc", w, i); err != nil {
					return err
				}
				v, _, err := readValue(sctx, r, router.Consistency{}, "conc", w)
				if err != nil {
					return err
				}
				if v != i {
					return fmt.Errorf("session read %d after write %d", v, i)
				}
				mu.Lock()
				last[w] = v
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}
