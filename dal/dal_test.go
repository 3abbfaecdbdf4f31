package dal_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

func TestOpenServesRepositoriesThroughTheRouter(t *testing.T) {
	ctx := testCtx(t)
	name, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	var replicas []string
	for _, r := range cluster.ReplicaDSNs() {
		replicas = append(replicas, withDB(t, r, name))
	}
	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: dsn, ReplicaDSNs: replicas, CursorKey: []byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx = router.WithSession(ctx, router.Token{})
	if _, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: "@alice:example.org"}); err != nil {
		t.Fatal(err)
	}
	// Inside the session the write's token travels with ctx, so this read
	// sees the user even if it is served by a replica.
	u, err := d.Users.GetUser(ctx, "@alice:example.org")
	if err != nil || u.UserID != "@alice:example.org" {
		t.Fatalf("GetUser = %+v, %v", u, err)
	}
	if router.SessionToken(ctx).IsZero() {
		t.Fatal("the write's token was not recorded in the session")
	}
	if len(d.Router().Status().Nodes) != 3 {
		t.Fatalf("router sees %d nodes, want 3", len(d.Router().Status().Nodes))
	}
}

func TestOpenRefusesAnUnmigratedDatabase(t *testing.T) {
	ctx := testCtx(t)
	_, dsn := freshDB(t)
	d, err := dal.Open(ctx, dal.Config{PrimaryDSN: dsn})
	if err == nil {
		d.Close()
		t.Fatal("Open succeeded on a database without the schema")
	}
	var sv *dal.SchemaVersionError
	if !errors.Is(err, dal.ErrSchemaMismatch) || !errors.As(err, &sv) || sv.Database != 0 {
		t.Fatalf("Open error = %v, want a SchemaVersionError for version 0", err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ctx := testCtx(t)
	if _, err := dal.Open(ctx, dal.Config{}); !errors.Is(err, dal.ErrConfig) {
		t.Fatalf("empty config: %v, want ErrConfig", err)
	}
	_, dsn := freshDB(t)
	if err := dal.Migrate(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	if _, err := dal.Open(ctx, dal.Config{PrimaryDSN: dsn, CursorKey: []byte("short")}); !errors.Is(err, dal.ErrConfig) {
		t.Fatalf("short cursor key: %v, want ErrConfig", err)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv(dal.EnvPrimaryDSN, "postgres://hsdal:secret@127.0.0.1:5432/hsdal")
	t.Setenv(dal.EnvReplicaDSNs, " postgres://a/x , ,postgres://b/x")
	t.Setenv(dal.EnvCursorKey, "000102030405060708090a0b0c0d0e0f")
	cfg, err := dal.ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.ReplicaDSNs) != 2 || cfg.ReplicaDSNs[1] != "postgres://b/x" || len(cfg.CursorKey) != 16 {
		t.Fatalf("cfg = %+v", cfg)
	}
	t.Setenv(dal.EnvCursorKey, "not a key!")
	if _, err := dal.ConfigFromEnv(); !errors.Is(err, dal.ErrConfig) {
		t.Fatalf("bad key: %v", err)
	}
	t.Setenv(dal.EnvPrimaryDSN, "")
	if _, err := dal.ConfigFromEnv(); !errors.Is(err, dal.ErrConfig) {
		t.Fatalf("no primary: %v", err)
	}
}

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"url with password", "postgres://hsdal:s3cret@db:5432/hsdal?sslmode=disable",
			"postgres://hsdal:xxxxx@db:5432/hsdal?sslmode=disable"},
		{"postgresql scheme", "postgresql://u:p%40ss@h/db", "postgresql://u:xxxxx@h/db"},
		{"url without password", "postgres://hsdal@db/hsdal", "postgres://hsdal@db/hsdal"},
		{"password in query", "postgres://db/hsdal?user=u&password=s3cret", "postgres://db/hsdal?password=xxxxx&user=u"},
		{"key value", "host=db user=hsdal password=s3cret dbname=hsdal", "host=db user=hsdal password=xxxxx dbname=hsdal"},
		{"key value quoted", "host=db password='s3 cr\\'et' dbname=x", "host=db password=xxxxx dbname=x"},
		{"key value spaced", "host=db password = s3cret", "host=db password = xxxxx"},
		{"key value upper case", "PASSWORD=s3cret host=db", "PASSWORD=xxxxx host=db"},
		{"no password", "host=db user=hsdal", "host=db user=hsdal"},
		{"unparseable url", "postgres://u:s3cret@[bad/db", "postgres://xxxxx@[bad/db"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := dal.RedactDSN(tc.in)
			if got != tc.want {
				t.Errorf("RedactDSN(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, secret := range []string{"s3cret", "s3 cr", "p%40ss", "p@ss"} {
				if strings.Contains(got, secret) {
					t.Errorf("RedactDSN(%q) = %q leaks %q", tc.in, got, secret)
				}
			}
		})
	}
}
