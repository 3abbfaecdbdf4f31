package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/internal/testcluster"
)

// runAsToolEnv makes the test binary act as the hsdal-cluster command, so the
// test runs the real command in its own process (servers must outlive it).
const runAsToolEnv = "HSDAL_CLUSTER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsToolEnv) == "1" {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// tool runs the command in a child process and returns stdout, stderr, exit code.
func tool(t *testing.T, cwd string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), runAsToolEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

func TestUpStatusDown(t *testing.T) {
	base, err := os.MkdirTemp("", "hsdal-up-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if c, err := testcluster.Attach(filepath.Join(base, ".cluster")); err == nil {
			_ = c.Stop() // only if the test failed half-way
		}
		_ = os.RemoveAll(base)
	})
	if err := os.Chmod(base, 0o755); err != nil { // the postgres user must reach .cluster
		t.Fatal(err)
	}

	out, errOut, code := tool(t, base, "-replicas", "1", "up")
	if code != 0 {
		t.Fatalf("up: exit %d\n%s\n%s", code, out, errOut)
	}
	env, err := os.ReadFile(filepath.Join(base, ".cluster.env"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, string(env)) {
		t.Errorf("up did not print the env file:\n%s", out)
	}
	vars := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(env)), "\n") {
		k, v, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			t.Fatalf("bad env line %q", line)
		}
		vars[k] = strings.Trim(v, "'")
	}
	c, err := testcluster.Attach(filepath.Join(base, ".cluster"))
	if err != nil {
		t.Fatal(err)
	}
	if vars["HSDAL_PRIMARY_DSN"] != c.PrimaryDSN() || vars["HSDAL_REPLICA_DSNS"] != c.ReplicaDSNs()[0] ||
		vars["HSDAL_REDIS_ADDR"] != c.RedisAddr() {
		t.Errorf("env file %v does not match the cluster", vars)
	}
	pids := c.PIDs()
	if len(pids) < 5 {
		t.Fatalf("servers not running after up (the command has exited): %v", pids)
	}
	// The servers outlived the command and serve the DSNs it printed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, vars["HSDAL_PRIMARY_DSN"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE up_check (id int)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	if out, errOut, code := tool(t, base, "status"); code != 0 || strings.Count(out, "running") != 3 {
		t.Errorf("status: exit %d\n%s\n%s", code, out, errOut)
	}
	if out2, errOut, code := tool(t, base, "up"); code != 0 || out2 != out || !strings.Contains(errOut, "already up") {
		t.Errorf("second up: exit %d\n%s\n%s", code, out2, errOut)
	}

	if out, errOut, code := tool(t, base, "down"); code != 0 {
		t.Fatalf("down: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, p := range pids {
		if alive(p) {
			t.Errorf("pid %d survived down", p)
		}
	}
	for _, f := range []string{".cluster", ".cluster.env"} {
		if _, err := os.Stat(filepath.Join(base, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after down: %v", f, err)
		}
	}
	if _, _, code := tool(t, base, "status"); code == 0 {
		t.Error("status after down: exit 0, want failure")
	}
	if out, errOut, code := tool(t, base, "down"); code != 0 {
		t.Errorf("second down: exit %d\n%s\n%s", code, out, errOut)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"sideways"}, 2},
		{[]string{"-nope", "up"}, 2},
		{[]string{"up", "down"}, 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if !strings.Contains(errb.String(), "usage:") {
				t.Errorf("no usage on stderr: %q", errb.String())
			}
		})
	}
}
