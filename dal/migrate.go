package dal

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"
)

// SchemaVersion is the database schema version this build of hsdal reads and writes: the
// number of embedded migrations (dal/migrations/NNN_*.sql). Open refuses a database whose
// recorded version differs; Migrate brings a database up to it.
const SchemaVersion int32 = 4

// SchemaVersionTable is the table, in the connection's search_path (normally schema
// public), where Migrate records the applied schema version (one row, one int4 column
// named version, managed by github.com/jackc/tern/v2).
const SchemaVersionTable = "hsdal_schema_version"

// migrationFiles holds the versioned SQL migrations, compiled into the binary so a
// deployed hsdal always carries exactly the schema it was built for. Read-only.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrate applies every embedded migration the database at dsn has not applied yet, each
// in its own transaction, and records the resulting version in SchemaVersionTable. It
// must run against the primary (replicas receive the schema through replication); the
// role in dsn needs the right to create tables in the target schema.
//
// Migrate is idempotent (a database already at SchemaVersion is left unchanged) and safe
// to run concurrently from several processes: a PostgreSQL advisory lock serialises them
// and each re-reads the version under the lock.
//
// Errors: a database whose version is newer than SchemaVersion is refused with a
// *SchemaVersionError (errors.Is ErrSchemaMismatch) telling the operator to upgrade the
// binary; a hot standby is refused; a failing migration returns an error naming the
// migration and wrapping the PostgreSQL error (*pgconn.PgError), with that migration
// rolled back and the earlier ones kept.
func Migrate(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("dal: migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var inRecovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
		return fmt.Errorf("dal: migrate: %w", err)
	}
	if inRecovery {
		return fmt.Errorf("dal: migrate: %s:%d is a hot standby (read-only); run the migrations on the primary",
			conn.Config().Host, conn.Config().Port)
	}

	m, err := migrate.NewMigrator(ctx, conn, SchemaVersionTable)
	if err != nil {
		return fmt.Errorf("dal: migrate: create version table: %w", err)
	}
	if err := loadMigrations(m); err != nil {
		return err
	}

	current, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("dal: migrate: read schema version: %w", err)
	}
	if current > SchemaVersion {
		return fmt.Errorf("dal: migrate: %w", &SchemaVersionError{Database: current, Code: SchemaVersion})
	}
	if err := m.Migrate(ctx); err != nil {
		var badVersion migrate.BadVersionError
		if errors.As(err, &badVersion) {
			// Another process moved the version past ours between the check and the lock.
			return fmt.Errorf("dal: migrate: %w: %v", ErrSchemaMismatch, err)
		}
		// tern's *MigrationPgError names the migration and unwraps to *pgconn.PgError.
		return fmt.Errorf("dal: migrate: %w", err)
	}
	return nil
}

// loadMigrations loads the embedded migrations into m and checks that their count is
// SchemaVersion, so a migration added without bumping the constant fails loudly.
func loadMigrations(m *migrate.Migrator) error {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return fmt.Errorf("dal: migrate: embedded migrations: %w", err)
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("dal: migrate: load embedded migrations: %w", err)
	}
	if n := len(m.Migrations); n != int(SchemaVersion) {
		return fmt.Errorf("dal: migrate: build has %d embedded migrations but SchemaVersion is %d", n, SchemaVersion)
	}
	return nil
}

// RowQuerier is the one method CheckSchema needs; *pgx.Conn, *pgxpool.Pool, *pgxpool.Conn
// and pgx.Tx all satisfy it.
type RowQuerier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// CheckSchema reads the schema version recorded in the database behind q (primary or
// replica) and returns nil if it equals SchemaVersion. Otherwise it returns a
// *SchemaVersionError (errors.Is ErrSchemaMismatch) whose message says what to do: run the
// migrations when the database is older (version 0: no hsdal schema at all), upgrade the
// binary when it is newer. Other errors (connection, permissions) are returned wrapped.
// It only reads, so it is safe on a hot standby and inside a read-only transaction, and it
// does not abort the caller's transaction when the version table is missing.
func CheckSchema(ctx context.Context, q RowQuerier) error {
	v, err := databaseSchemaVersion(ctx, q)
	if err != nil {
		return fmt.Errorf("dal: check schema: %w", err)
	}
	if v != SchemaVersion {
		return &SchemaVersionError{Database: v, Code: SchemaVersion}
	}
	return nil
}

// databaseSchemaVersion returns the version in SchemaVersionTable, 0 when the table does
// not exist or is empty. The table's existence is tested first (to_regclass resolves the
// name through search_path like the migrator does) so that a missing table is not an
// error that would abort a surrounding transaction.
func databaseSchemaVersion(ctx context.Context, q RowQuerier) (int32, error) {
	var exists bool
	if err := q.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", SchemaVersionTable).Scan(&exists); err != nil {
		return 0, err
	}
	if !exists {
		return 0, nil
	}
	var v int32
	err := q.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM "+SchemaVersionTable).Scan(&v)
	if err != nil {
		return 0, err
	}
	return v, nil
}
