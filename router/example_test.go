package router_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/hsdal/hsdal/router"
	"github.com/jackc/pgx/v5"
)

// A homeserver request: the client sends back the token it got last time;
// the write's token goes back to it, so its next request — on any instance —
// reads its own writes, from a replica whenever one has replayed them.
func Example() {
	ctx := context.Background()
	r, err := router.New(ctx, router.Config{
		PrimaryDSN:  "postgres://hs:secret@db0:5432/hs",
		ReplicaDSNs: []string{"postgres://hs:secret@db1:5432/hs", "postgres://hs:secret@db2:5432/hs"},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	seed, err := router.DecodeToken("AQAAAAEAAAAAAWs6iA") // from the client; garbage is ErrInvalidToken
	if err != nil {
		seed = router.Token{}
	}
	ctx = router.WithSession(ctx, seed)

	_, err = r.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "UPDATE users SET displayname = $1 WHERE name = $2", "Alice", "@alice:hs")
		return err
	})
	switch {
	case errors.Is(err, router.ErrCommitUnknown):
		// Reconcile with a Strong read before retrying.
	case router.Retryable(err):
		// Nothing was committed: retry later.
	case err != nil:
		log.Fatal(err)
	}

	var name string
	info, err := r.Read(ctx, router.Consistency{}, func(ctx context.Context, q router.Querier) error {
		return q.QueryRow(ctx, "SELECT displayname FROM users WHERE name = $1", "@alice:hs").Scan(&name)
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(name, "read on", info.Node)
	fmt.Println("token for the client:", router.SessionToken(ctx).Encode())
}

// ReadTx gives a multi-statement snapshot (REPEATABLE READ READ ONLY), on a
// replica at most 5 seconds behind.
func ExampleRouter_ReadTx() {
	var r *router.Router // from router.New
	ctx := context.Background()
	var members, events int64
	_, err := r.ReadTx(ctx, router.BoundedStaleness(5*time.Second), func(ctx context.Context, q router.Querier) error {
		if err := q.QueryRow(ctx, "SELECT count(*) FROM room_memberships WHERE room_id = $1", "!r:hs").Scan(&members); err != nil {
			return err
		}
		return q.QueryRow(ctx, "SELECT count(*) FROM events WHERE room_id = $1", "!r:hs").Scan(&events)
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Status reports roles, lag and breaker states, e.g. for a health endpoint.
func ExampleRouter_Status() {
	var r *router.Router // from router.New
	st := r.Status()
	fmt.Println("primary:", st.Primary, "synchronous:", st.Replication.Synchronous())
	for _, n := range st.Nodes {
		fmt.Println(n.Name, n.Standby, n.Serving, n.Lag, n.LagBytes, n.Breaker)
	}
}
