package dal_test

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"github.com/hsdal/hsdal/dal"
)

// The tables migration 1 creates; the repositories depend on every one of them.
var schemaTables = []string{
	"users", "devices", "access_tokens", "refresh_tokens", "rooms", "room_aliases",
	"room_memberships", "room_membership_history", "room_events", "private_sessions",
	"private_messages", "private_session_read_markers",
}

func TestSchemaVersionMatchesMigrationFiles(t *testing.T) {
	entries, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile(`^(\d+)_[a-z0-9_]+\.sql$`)
	var seqs []int
	for _, e := range entries {
		m := name.FindStringSubmatch(e.Name())
		if m == nil {
			t.Errorf("migrations/%s: not named NNN_snake_case.sql", e.Name())
			continue
		}
		n, _ := strconv.Atoi(m[1])
		seqs = append(seqs, n)
	}
	for i, n := range seqs {
		if n != i+1 {
			t.Errorf("migration sequence numbers %v: want 1..%d without gaps", seqs, len(seqs))
			break
		}
	}
	if got := int32(len(seqs)); got != dal.SchemaVersion {
		t.Errorf("%d migration files, dal.SchemaVersion = %d: bump the constant with each migration", got, dal.SchemaVersion)
	}
}

func TestMigrateFreshDatabase(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	conn := mustConnect(t, dsn)

	if err := dal.CheckSchema(ctx, conn); !errors.Is(err, dal.ErrSchemaMismatch) {
		t.Fatalf("CheckSchema before Migrate = %v, want ErrSchemaMismatch", err)
	}
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := dal.CheckSchema(ctx, conn); err != nil {
		t.Fatalf("CheckSchema after Migrate: %v", err)
	}
	for _, table := range schemaTables {
		if !tableExists(t, conn, table) {
			t.Errorf("table %s missing after Migrate", table)
		}
	}
}

func TestMigrateTwiceIsNoOp(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	conn := mustConnect(t, dsn)
	before := schemaFingerprint(t, conn)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if after := schemaFingerprint(t, conn); after != before {
		t.Fatalf("second Migrate changed the schema:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestMigrateConcurrentCallersAllSucceed(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	const callers = 4
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { errs[i] = dal.Migrate(ctx, dsn) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if err := dal.CheckSchema(ctx, mustConnect(t, dsn)); err != nil {
		t.Fatalf("CheckSchema: %v", err)
	}
}

func TestReplicasSeeSchema(t *testing.T) {
	ctx := testCtx(t)
	name, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	want := schemaFingerprint(t, mustConnect(t, dsn))
	if err := cluster.WaitReplicated(ctx); err != nil {
		t.Fatalf("WaitReplicated: %v", err)
	}
	replicas := cluster.ReplicaDSNs()
	if len(replicas) != 2 {
		t.Fatalf("cluster has %d replicas, want 2", len(replicas))
	}
	for i, r := range replicas {
		conn := mustConnect(t, withDB(t, r, name))
		if err := dal.CheckSchema(ctx, conn); err != nil {
			t.Errorf("replica %d: CheckSchema: %v", i, err)
		}
		if got := schemaFingerprint(t, conn); got != want {
			t.Errorf("replica %d schema differs from the primary's:\nprimary:\n%s\nreplica:\n%s", i, want, got)
		}
	}
}

func TestMigrateRefusesHotStandby(t *testing.T) {
	ctx := testCtx(t)
	replica := cluster.ReplicaDSNs()[0] // database hsdal exists on every node
	err := dal.Migrate(ctx, replica)
	if err == nil || !strings.Contains(err.Error(), "hot standby") {
		t.Fatalf("Migrate on a replica = %v, want an error naming the hot standby", err)
	}
}

func TestCheckSchemaRefusesMismatchedDatabase(t *testing.T) {
	tests := []struct {
		name     string
		version  int32 // recorded version; -1 leaves the database without a version table
		wantText string
	}{
		{name: "no schema", version: -1, wantText: "dal.Migrate against the primary"},
		{name: "older", version: dal.SchemaVersion - 1, wantText: "dal.Migrate against the primary"},
		{name: "newer", version: dal.SchemaVersion + 1, wantText: "upgrade this binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			_, dsn := freshDB(t)
			conn := mustConnect(t, dsn)
			if tt.version >= 0 {
				if err := dal.Migrate(ctx, dsn); err != nil {
					t.Fatalf("Migrate: %v", err)
				}
				setSchemaVersion(t, conn, tt.version)
			}

			err := dal.CheckSchema(ctx, conn)
			if !errors.Is(err, dal.ErrSchemaMismatch) {
				t.Fatalf("CheckSchema = %v, want ErrSchemaMismatch", err)
			}
			var verr *dal.SchemaVersionError
			if !errors.As(err, &verr) {
				t.Fatalf("CheckSchema error %T is not a *SchemaVersionError", err)
			}
			wantDB := max(tt.version, 0)
			if verr.Database != wantDB || verr.Code != dal.SchemaVersion {
				t.Errorf("versions = db %d code %d, want db %d code %d", verr.Database, verr.Code, wantDB, dal.SchemaVersion)
			}
			if !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("message %q does not tell the operator to %q", err, tt.wantText)
			}
		})
	}
}

func TestMigrateRefusesNewerDatabase(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	conn := mustConnect(t, dsn)
	setSchemaVersion(t, conn, dal.SchemaVersion+1)
	before := schemaFingerprint(t, conn)

	err := dal.Migrate(ctx, dsn)
	if !errors.Is(err, dal.ErrSchemaMismatch) || !strings.Contains(err.Error(), "upgrade this binary") {
		t.Fatalf("Migrate on a newer database = %v, want ErrSchemaMismatch telling to upgrade the binary", err)
	}
	if after := schemaFingerprint(t, conn); after != before {
		t.Fatalf("refused Migrate changed the database")
	}
}

func TestMigrateUnreachableDatabase(t *testing.T) {
	ctx := testCtx(t)
	err := dal.Migrate(ctx, withDB(t, cluster.PrimaryDSN(), "no_such_database"))
	if err == nil || !strings.Contains(err.Error(), "dal: migrate: connect") {
		t.Fatalf("Migrate on a missing database = %v, want a connect error", err)
	}
	if strings.Contains(err.Error(), ":hsdal@") {
		t.Errorf("error leaks the password: %v", err)
	}
}

func TestSchemaVersionErrorMessages(t *testing.T) {
	tests := []struct {
		name string
		err  *dal.SchemaVersionError
		want string
	}{
		{"empty database", &dal.SchemaVersionError{Database: 0, Code: 3}, "has no hsdal schema"},
		{"database behind", &dal.SchemaVersionError{Database: 2, Code: 3}, "upgrade the database"},
		{"database ahead", &dal.SchemaVersionError{Database: 4, Code: 3}, "upgrade this binary to a release that knows schema version 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !errors.Is(tt.err, dal.ErrSchemaMismatch) {
				t.Errorf("errors.Is(ErrSchemaMismatch) = false")
			}
			if !strings.Contains(tt.err.Error(), tt.want) {
				t.Errorf("message %q lacks %q", tt.err.Error(), tt.want)
			}
		})
	}
}

// setSchemaVersion overwrites the recorded schema version (the application role owns the
// version table because Migrate created it).
func setSchemaVersion(tb testing.TB, conn *pgx.Conn, v int32) {
	tb.Helper()
	if _, err := conn.Exec(testCtx(tb), "UPDATE "+dal.SchemaVersionTable+" SET version = $1", v); err != nil {
		tb.Fatalf("set schema version: %v", err)
	}
}

func tableExists(tb testing.TB, conn *pgx.Conn, table string) bool {
	tb.Helper()
	var ok bool
	if err := conn.QueryRow(testCtx(tb), "SELECT to_regclass($1) IS NOT NULL", table).Scan(&ok); err != nil {
		tb.Fatalf("to_regclass(%s): %v", table, err)
	}
	return ok
}

// schemaFingerprint describes the schema of the public namespace: every relation with its
// OID (so dropping and re-creating shows), every column, constraint and index definition,
// and the recorded version.
func schemaFingerprint(tb testing.TB, conn *pgx.Conn) string {
	tb.Helper()
	const q = `
SELECT kind || ' ' || descr FROM (
  SELECT 'rel' AS kind, c.relname || ' ' || c.relkind::text || ' oid=' || c.oid AS descr
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'col', a.attrelid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
         || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
   WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 'con', conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
  UNION ALL
  SELECT 'idx', indexdef FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL
  SELECT 'ver', version::text FROM hsdal_schema_version
) d ORDER BY 1`
	rows, err := conn.Query(testCtx(tb), q)
	if err != nil {
		tb.Fatalf("schema fingerprint: %v", err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("schema fingerprint: %v", err)
	}
	return strings.Join(lines, "\n")
}

// TestMigrationsRevertCleanly runs every migration's down part (with tern, on the same
// files) after Migrate, checks that nothing of the schema is left, and migrates up again.
func TestMigrationsRevertCleanly(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	conn := mustConnect(t, dsn)
	m, err := migrate.NewMigrator(ctx, conn, dal.SchemaVersionTable)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadMigrations(os.DirFS("migrations")); err != nil {
		t.Fatal(err)
	}
	if err := m.MigrateTo(ctx, 0); err != nil {
		t.Fatalf("migrate down to 0: %v", err)
	}
	rows, err := conn.Query(ctx, `
SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname <> $1
UNION ALL
SELECT proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace`, dal.SchemaVersionTable)
	if err != nil {
		t.Fatal(err)
	}
	left, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Errorf("objects left after migrating down: %v", left)
	}
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatalf("Migrate after down: %v", err)
	}
	if err := dal.CheckSchema(ctx, conn); err != nil {
		t.Fatal(err)
	}
}
