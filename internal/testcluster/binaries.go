package testcluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgTools are the PostgreSQL programs the cluster runs.
var pgTools = []string{"initdb", "postgres", "pg_basebackup", "pg_rewind"}

// binaries holds absolute paths of the server programs.
type binaries struct {
	PGBin string `json:"pg_bindir"` // directory holding initdb, postgres, pg_basebackup, pg_rewind
	Redis string `json:"redis"`     // redis-server, "" when not needed
}

func (b binaries) pg(tool string) string { return filepath.Join(b.PGBin, tool) }

// hasPGTools reports whether dir holds every program of pgTools.
func hasPGTools(dir string) bool {
	for _, t := range pgTools {
		st, err := os.Stat(filepath.Join(dir, t))
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// findPGBin looks, in order, at `pg_config --bindir`, /usr/lib/postgresql/*/bin
// (highest major version first) and the directory of `postgres` on PATH.
func findPGBin() (string, error) { return findPGBinIn("/usr/lib/postgresql/*/bin") }

func findPGBinIn(glob string) (string, error) {
	if pgc, err := exec.LookPath("pg_config"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, pgc, "--bindir").Output()
		cancel()
		if dir := strings.TrimSpace(string(out)); err == nil && hasPGTools(dir) {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob(glob)
	sort.Slice(dirs, func(i, j int) bool { return pgVersionOf(dirs[i]) > pgVersionOf(dirs[j]) })
	for _, d := range dirs {
		if hasPGTools(d) {
			return d, nil
		}
	}
	if p, err := exec.LookPath("postgres"); err == nil && hasPGTools(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	return "", fmt.Errorf("%w: PostgreSQL server programs (%s) not found via pg_config --bindir, "+
		"/usr/lib/postgresql/*/bin or PATH; install them, e.g. `apt-get install -y postgresql-15`",
		ErrMissingBinary, strings.Join(pgTools, ", "))
}

// pgVersionOf extracts the major version from /usr/lib/postgresql/<v>/bin.
func pgVersionOf(bindir string) float64 {
	v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(bindir)), 64)
	if err != nil {
		return -1
	}
	return v
}

// findRedis looks for redis-server on PATH, then in the usual install places.
func findRedis() (string, error) {
	return findRedisIn([]string{"/usr/bin/redis-server", "/usr/local/bin/redis-server", "/usr/sbin/redis-server"})
}

func findRedisIn(candidates []string) (string, error) {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range candidates {
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: redis-server not found on PATH or in /usr/bin, /usr/local/bin; "+
		"install it, e.g. `apt-get install -y redis-server`", ErrMissingBinary)
}

func findBinaries(needRedis bool) (binaries, error) {
	var b binaries
	var err error
	if b.PGBin, err = findPGBin(); err != nil {
		return b, err
	}
	if needRedis {
		if b.Redis, err = findRedis(); err != nil {
			return b, err
		}
	}
	return b, nil
}

// serverCredential returns the credential servers run under: nil when this
// process is not root, else the `postgres` OS user (PostgreSQL refuses to run
// as root).
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("%w: running as root needs the OS user `postgres` to run PostgreSQL "+
			"(created by the Debian package postgresql-common, e.g. `apt-get install -y postgresql-15`): %v",
			ErrMissingBinary, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("testcluster: bad uid/gid for user postgres: %q/%q", u.Uid, u.Gid)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

// chownTo gives path to cred's user (no-op when cred is nil).
func chownTo(path string, cred *syscall.Credential) error {
	if cred == nil {
		return nil
	}
	return os.Lchown(path, int(cred.Uid), int(cred.Gid))
}

// serverEnv is the environment of every server and tool: this process's
// environment without PG* variables (so a developer's PGHOST or PGDATABASE
// cannot redirect a tool), with HOME pointing at the cluster dir and C locale.
func serverEnv(home string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "HOME=") ||
			strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+home, "LC_ALL=C", "PGPASSFILE="+filepath.Join(home, "no-such-pgpass"))
}
