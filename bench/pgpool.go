package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// errNoPgpool reports that pgpool-II is not installed and could not be.
var errNoPgpool = errors.New("bench: pgpool-II is not available")

// pgpool is a pgpool-II process in streaming-replication, load-balancing mode
// over the benchmark's cluster, with its own config, port and directories.
type pgpool struct {
	cmd     *exec.Cmd
	dir     string
	port    int
	version string
	exited  chan struct{}
}

// pgpoolMode is what the report says about how pgpool was run.
const pgpoolMode = "streaming_replication, load_balance_mode=on, statement_level_load_balance=on, simple query protocol"

// findOrInstallPgpool returns the pgpool binary, installing Debian's pgpool2
// when allowed and running as root.
func findOrInstallPgpool(ctx context.Context, install bool, logf func(string, ...any)) (string, error) {
	if p, err := exec.LookPath("pgpool"); err == nil {
		return p, nil
	}
	if p := "/usr/sbin/pgpool"; fileExists(p) {
		return p, nil
	}
	if !install || os.Geteuid() != 0 {
		return "", fmt.Errorf("%w: install Debian's pgpool2 (apt-get install pgpool2)", errNoPgpool)
	}
	logf("installing Debian's pgpool2 …")
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-q", "pgpool2")
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w: apt-get install pgpool2: %v: %s", errNoPgpool, err, lastLines(out, 5))
	}
	// The package starts its own service on the default port; ours uses its
	// own config, so stop that one.
	_ = exec.CommandContext(ctx, "systemctl", "stop", "pgpool2").Run()
	_ = exec.CommandContext(ctx, "systemctl", "disable", "pgpool2").Run()
	if fileExists("/usr/sbin/pgpool") {
		return "/usr/sbin/pgpool", nil
	}
	return "", fmt.Errorf("%w: pgpool not found after install", errNoPgpool)
}

// startPgpool starts pgpool-II in front of the given backends (host:port,
// primary first) and waits until it answers a query. user is the role its
// streaming-replication check uses.
func startPgpool(ctx context.Context, bin string, backends []string, user string, children int, logf func(string, ...any)) (*pgpool, error) {
	dir, err := os.MkdirTemp("", "hsdal-pgpool-")
	if err != nil {
		return nil, fmt.Errorf("bench: pgpool dir: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var conf strings.Builder
	fmt.Fprintf(&conf, `listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%[2]s'
pcp_listen_addresses = ''
pcp_socket_dir = '%[2]s'
pid_file_name = '%[2]s/pgpool.pid'
logdir = '%[2]s'
backend_clustering_mode = 'streaming_replication'
load_balance_mode = on
statement_level_load_balance = on
disable_load_balance_on_write = 'transaction'
num_init_children = %d
max_pool = 1
child_life_time = 0
connection_life_time = 0
enable_pool_hba = off
pool_passwd = ''
sr_check_period = 1
sr_check_user = '%s'
sr_check_database = 'postgres'
health_check_period = 0
failover_on_backend_error = off
log_min_messages = warning
`, port, dir, children, user)
	for i, b := range backends {
		host, p, _ := strings.Cut(b, ":")
		fmt.Fprintf(&conf, "backend_hostname%d = '%s'\nbackend_port%d = %s\nbackend_weight%d = 1\nbackend_flag%d = 'DISALLOW_TO_FAILOVER'\n", i, host, i, p, i, i)
	}
	confPath := filepath.Join(dir, "pgpool.conf")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		return nil, fmt.Errorf("bench: pgpool conf: %w", err)
	}
	for _, f := range []string{"pcp.conf", "pool_hba.conf"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return nil, fmt.Errorf("bench: pgpool conf: %w", err)
		}
	}
	logFile, err := os.Create(filepath.Join(dir, "pgpool.log"))
	if err != nil {
		return nil, fmt.Errorf("bench: pgpool log: %w", err)
	}
	cmd := exec.Command(bin, "-n", "-f", confPath, "-F", filepath.Join(dir, "pcp.conf"), "-a", filepath.Join(dir, "pool_hba.conf"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("bench: start pgpool: %w", err)
	}
	p := &pgpool{cmd: cmd, dir: dir, port: port, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); logFile.Close(); close(p.exited) }()
	out, _ := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if f := strings.Fields(string(out)); len(f) >= 3 {
		p.version = f[2]
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.ping(ctx)
		if err == nil {
			logf("pgpool-II %s listening on 127.0.0.1:%d", p.version, port)
			return p, nil
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgpool.log"))
			p.Stop()
			return nil, fmt.Errorf("bench: pgpool exited: %s", lastLines(log, 10))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop()
			return nil, fmt.Errorf("bench: pgpool not ready: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *pgpool) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN())
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.Ping(ctx)
}

// DSN is the app DSN through pgpool. Queries use the simple protocol: with
// cached prepared statements pgpool pins a connection to one backend.
func (p *pgpool) DSN() string {
	return fmt.Sprintf("postgres://hsdal:hsdal@127.0.0.1:%d/hsdal?sslmode=disable&default_query_exec_mode=simple_protocol", p.port)
}

// Stop ends pgpool and its children and removes its directory.
func (p *pgpool) Stop() {
	if p.cmd.Process != nil {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	_ = os.RemoveAll(p.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

func itoa(i int) string { return fmt.Sprint(i) }
