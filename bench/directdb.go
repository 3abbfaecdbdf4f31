package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// directDB runs the repositories' queries on one pgx pool with no routing, no
// tokens and no cache: the raw-primary baseline (pool on the primary) and the
// pgpool variant (pool on pgpool-II). Same SQL as hsdal, so the comparison
// isolates what hsdal adds.
type directDB struct{ pool *pgxpool.Pool }

var _ repos.DB = directDB{}

func (d directDB) Read(ctx context.Context, _ router.Consistency, fn func(context.Context, router.Querier) error) (router.ReadInfo, error) {
	return router.ReadInfo{}, fn(ctx, d.pool)
}

func (d directDB) ReadTx(ctx context.Context, _ router.Consistency, fn func(context.Context, router.Querier) error) (router.ReadInfo, error) {
	err := pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly},
		func(tx pgx.Tx) error { return fn(ctx, tx) })
	return router.ReadInfo{}, err
}

func (d directDB) Write(ctx context.Context, fn func(context.Context, pgx.Tx) error) (router.Token, error) {
	return router.Token{}, pgx.BeginFunc(ctx, d.pool, func(tx pgx.Tx) error { return fn(ctx, tx) })
}

// newDirectPool opens a pool of at most maxConns connections on dsn.
func newDirectPool(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bench: pool config: %w", err)
	}
	pc.MaxConns = maxConns
	pc.MinConns = min(maxConns, 4)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("bench: open pool: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("bench: ping: %w", err)
	}
	return pool, nil
}
