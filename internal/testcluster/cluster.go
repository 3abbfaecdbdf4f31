package testcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// Errors returned by this package; test them with errors.Is.
var (
	// ErrMissingBinary means a server program (or the postgres OS user) is not
	// installed; the message names the Debian package to install.
	ErrMissingBinary = errors.New("testcluster: missing server binary")
	// ErrUnknownNode means a node name is not part of the cluster.
	ErrUnknownNode = errors.New("testcluster: unknown node")
	// ErrStopped means the cluster has been stopped.
	ErrStopped = errors.New("testcluster: cluster stopped")
	// ErrNoRedis means the cluster was started with NoRedis.
	ErrNoRedis = errors.New("testcluster: cluster has no redis")
	// ErrRole means the node does not have the role the operation needs
	// (e.g. promoting the primary, pausing replay on the primary).
	ErrRole = errors.New("testcluster: wrong node role")
	// ErrNotRunning means the node or server is not running.
	ErrNotRunning = errors.New("testcluster: not running")
)

// Options configures Start. The zero value starts an asynchronous primary
// with 2 hot standbys and Redis in a new temp dir.
type Options struct {
	// Replicas is the number of hot standbys; 0 means 2, negative means none.
	Replicas int
	// Sync turns on synchronous quorum replication:
	// synchronous_standby_names = 'ANY 1 (pg0, pg1, ...)' on every node, and
	// each standby connects with application_name set to its node name.
	Sync bool
	// NoRedis skips starting redis-server; RedisAddr is then "".
	NoRedis bool
	// Dir is the base directory; it must not exist or be empty and is
	// removed by Stop. "" means a new temp dir. When running as root it must
	// be reachable (every parent searchable) by the OS user postgres.
	Dir string
	// Settings are extra postgresql.conf settings for every node, applied
	// after the package defaults (so they override them). Keys must be plain
	// setting names; values are written quoted.
	Settings map[string]string
	// Logf receives progress messages (never passwords); nil means silent.
	Logf func(format string, args ...any)
	// Detached starts servers in their own session without a parent-death
	// signal, so they outlive this process (used by `make up`). Stop them
	// with Stop, possibly from another process via Attach. Without Detached,
	// every server dies when this process dies.
	Detached bool
}

// Role is what a PostgreSQL node currently does in the cluster.
type Role string

// Node roles.
const (
	RolePrimary Role = "primary" // the current primary (PrimaryDSN)
	RoleStandby Role = "standby" // a hot standby (listed in ReplicaDSNs)
	// RoleFormer is an old primary replaced by Promote and not yet rejoined;
	// it is neither the primary nor a replica.
	RoleFormer Role = "former-primary"
)

// Node is one PostgreSQL server of the cluster. Name and Port never change.
// Node values are shared; do not modify the fields.
type Node struct {
	Name string
	Port int

	c        *Cluster
	dir      string // node dir: holds data/ and postgres.log
	role     Role   // guarded by c.mu
	upstream string // node this standby streams from; guarded by c.mu
	proc     *proc  // running postmaster or nil; guarded by c.mu
}

// DSN is the application DSN of the node: role hsdal (password hsdal; owner
// of database hsdal, member of pg_monitor, not superuser).
func (n *Node) DSN() string {
	return fmt.Sprintf("postgres://hsdal:hsdal@127.0.0.1:%d/hsdal?sslmode=disable", n.Port)
}

// SuperDSN is the DSN of database hsdal on the node as superuser postgres
// (trust auth, no password).
func (n *Node) SuperDSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/hsdal?sslmode=disable", n.Port)
}

// adminDSN reaches database postgres as superuser; it exists before hsdal does.
func (n *Node) adminDSN() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", n.Port)
}

// replConninfo is the libpq conninfo a standby of n uses.
func (n *Node) replConninfo(appName string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres application_name=%s", n.Port, appName)
}

func (n *Node) dataDir() string { return filepath.Join(n.dir, "data") }
func (n *Node) logPath() string { return filepath.Join(n.dir, "postgres.log") }

// Role returns the node's current role.
func (n *Node) Role() Role {
	n.c.mu.RLock()
	defer n.c.mu.RUnlock()
	return n.role
}

// Running reports whether the node's postmaster is running.
func (n *Node) Running() bool {
	n.c.mu.RLock()
	p := n.proc
	n.c.mu.RUnlock()
	return p != nil && !p.exited()
}

// Cluster is a running local PostgreSQL cluster plus Redis. All methods are
// safe for concurrent use; fault controls are serialized.
type Cluster struct {
	dir       string
	bins      binaries
	cred      *syscall.Credential
	detached  bool
	logf      func(format string, args ...any)
	nodes     []*Node
	redisDir  string
	redisPort int
	syncConf  string  // synchronous_standby_names line added to standbys in Start; "" when async
	owner     *pidRef // this process when not detached (recorded for sweepStale)
	// mayMovePorts is true only inside Start, before any port is published.
	mayMovePorts bool

	opMu sync.Mutex // serializes Stop and fault controls

	mu        sync.RWMutex
	primary   *Node
	redisProc *proc
	stopped   bool
}

// defaultSettings tune PostgreSQL for a fast, disposable test cluster.
func defaultSettings() [][2]string {
	s := [][2]string{
		{"listen_addresses", "127.0.0.1"},
		{"unix_socket_directories", ""},
		{"max_connections", "100"},
		{"shared_buffers", "32MB"},
		{"fsync", "off"},
		{"full_page_writes", "on"}, // pg_rewind needs it
		{"wal_log_hints", "on"},    // pg_rewind needs it
		{"wal_level", "replica"},
		{"wal_writer_delay", "10ms"},
		{"max_wal_senders", "16"},
		{"max_replication_slots", "16"},
		{"max_wal_size", "256MB"},
		{"min_wal_size", "32MB"},
		{"wal_keep_size", "128MB"},
		{"hot_standby", "on"},
		{"hot_standby_feedback", "off"},
		{"wal_receiver_status_interval", "1s"},
		{"wal_retrieve_retry_interval", "200ms"},
		{"jit", "off"},
		{"huge_pages", "off"},
		{"logging_collector", "off"},
		{"log_destination", "stderr"},
		{"log_line_prefix", "%m [%p] %q%a "},
		{"log_checkpoints", "off"},
		{"timezone", "UTC"},
	}
	return s
}

// syncSetting is the postgresql.conf line for synchronous quorum replication.
func syncSetting(names []string) string {
	return "synchronous_standby_names = " + quoteConf("ANY 1 ("+strings.Join(names, ", ")+")") + "\n"
}

var settingName = regexp.MustCompile(`^[a-z][a-z0-9_.]*$`)

func quoteConf(v string) string { return "'" + strings.ReplaceAll(v, "'", "''") + "'" }

// Start starts the cluster and returns when every replica is in recovery and
// has replayed the primary's current WAL position. On error nothing is left
// running and the directory is removed. Errors wrap ErrMissingBinary when a
// program is not installed. If ctx has no deadline, 2 minutes apply.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	began := time.Now()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	replicas := opts.Replicas
	if replicas == 0 {
		replicas = 2
	} else if replicas < 0 {
		replicas = 0
	}
	for k := range opts.Settings {
		if !settingName.MatchString(k) {
			return nil, fmt.Errorf("testcluster: invalid setting name %q", k)
		}
	}
	bins, err := findBinaries(!opts.NoRedis)
	if err != nil {
		return nil, err
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if opts.Dir == "" {
		sweepStale(logf)
	}
	dir, err := makeBaseDir(opts.Dir, cred)
	if err != nil {
		return nil, err
	}
	c = &Cluster{dir: dir, bins: bins, cred: cred, detached: opts.Detached, logf: logf, mayMovePorts: true}
	if !opts.Detached {
		st, _ := procStartTime(os.Getpid())
		c.owner = &pidRef{PID: os.Getpid(), Start: st}
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
			c = nil
		}
	}()

	ports, err := freePorts(replicas + 2)
	if err != nil {
		return c, err
	}
	names := make([]string, replicas+1)
	for i := range names {
		names[i] = "pg" + strconv.Itoa(i)
		n := &Node{Name: names[i], Port: ports[i], c: c, dir: filepath.Join(dir, names[i]), role: RoleStandby}
		if err := os.Mkdir(n.dir, 0o700); err != nil {
			return c, fmt.Errorf("testcluster: %w", err)
		}
		if err := chownTo(n.dir, cred); err != nil {
			return c, fmt.Errorf("testcluster: %w", err)
		}
		c.nodes = append(c.nodes, n)
	}
	c.primary = c.nodes[0]
	c.nodes[0].role = RolePrimary
	for _, n := range c.nodes[1:] {
		n.upstream = c.nodes[0].Name
	}
	// Record the owner before any server starts, so a process killed during
	// Start leaves a dir that a later Start can recognise as stale.
	if err := c.saveState(); err != nil {
		return c, err
	}

	g, gctx := errgroup.WithContext(ctx)
	if !opts.NoRedis {
		c.redisPort = ports[len(ports)-1]
		c.redisDir = filepath.Join(dir, "redis")
		g.Go(func() error {
			if err := os.Mkdir(c.redisDir, 0o700); err != nil {
				return fmt.Errorf("testcluster: %w", err)
			}
			if err := chownTo(c.redisDir, cred); err != nil {
				return fmt.Errorf("testcluster: %w", err)
			}
			return c.startRedis(gctx)
		})
	}
	g.Go(func() error { return c.initPrimary(gctx, names, opts) })
	if err := g.Wait(); err != nil {
		return c, err
	}
	c.logf("testcluster: primary pg0 up on port %d after %v", c.nodes[0].Port, time.Since(began).Round(time.Millisecond))

	// With Sync the primary gets synchronous_standby_names only once its
	// standbys run: before that, every commit (even CREATE ROLE) would wait.
	if opts.Sync {
		c.syncConf = syncSetting(names)
	}
	g, gctx = errgroup.WithContext(ctx)
	for _, n := range c.nodes[1:] {
		g.Go(func() error { return c.createStandby(gctx, n, c.nodes[0], true) })
	}
	if err := g.Wait(); err != nil {
		return c, err
	}
	if opts.Sync {
		if err := c.enableSync(ctx, c.nodes[0], names); err != nil {
			return c, err
		}
	}
	c.mayMovePorts = false
	if err := c.WaitReplicated(ctx); err != nil {
		return c, err
	}
	if err := c.saveState(); err != nil {
		return c, err
	}
	c.logf("testcluster: cluster (%d nodes, redis=%v) ready in %v in %s",
		len(c.nodes), !opts.NoRedis, time.Since(began).Round(time.Millisecond), dir)
	return c, nil
}

// StartTB starts a cluster for a test or benchmark and registers Stop with
// tb.Cleanup, so everything is stopped and removed even when the test fails.
// It calls tb.Fatal (naming what to install) if the cluster cannot start.
// Progress goes to tb.Logf unless opts.Logf is set.
func StartTB(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	c, err := Start(context.Background(), opts)
	if err != nil {
		tb.Fatalf("start local cluster: %v", err)
	}
	tb.Cleanup(func() {
		if err := c.Stop(); err != nil {
			tb.Errorf("stop local cluster: %v", err)
		}
	})
	return c
}

// makeBaseDir creates the cluster's base directory (0700, owned by cred).
func makeBaseDir(dir string, cred *syscall.Credential) (string, error) {
	if dir == "" {
		d, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			return "", fmt.Errorf("testcluster: %w", err)
		}
		dir = d
	} else {
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("testcluster: %w", err)
		}
		dir = abs
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("testcluster: %w", err)
		}
		ents, err := os.ReadDir(dir)
		if err != nil {
			return "", fmt.Errorf("testcluster: %w", err)
		}
		if len(ents) > 0 {
			return "", fmt.Errorf("testcluster: directory %s is not empty", dir)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTo(dir, cred); err != nil {
		return "", fmt.Errorf("testcluster: %w", err)
	}
	return dir, nil
}

// freePorts returns n distinct free loopback TCP ports.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("testcluster: find free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Dir is the cluster's base directory. Layout: <name>/data (data dir) and
// <name>/postgres.log per node, redis/redis.log, and StateFile.
func (c *Cluster) Dir() string { return c.dir }

// PrimaryDSN is the application DSN of the current primary.
func (c *Cluster) PrimaryDSN() string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.primary.DSN()
}

// Primary returns the current primary node.
func (c *Cluster) Primary() *Node {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.primary
}

// ReplicaDSNs are the application DSNs of the current standbys (running or
// stopped), in node order. A former primary replaced by Promote is not
// listed until Rejoin makes it a standby.
func (c *Cluster) ReplicaDSNs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []string
	for _, n := range c.nodes {
		if n.role == RoleStandby {
			out = append(out, n.DSN())
		}
	}
	return out
}

// Nodes returns all PostgreSQL nodes: "pg0" (initial primary), "pg1", ...
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Node returns the node called name, or nil if there is none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

func (c *Cluster) node(name string) (*Node, error) {
	if n := c.Node(name); n != nil {
		return n, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownNode, name)
}

// RedisAddr is "127.0.0.1:PORT" of the Redis server, "" with NoRedis. The
// address stays the same across StopRedis/StartRedis/KillRedis.
func (c *Cluster) RedisAddr() string {
	if c.redisPort == 0 {
		return ""
	}
	return "127.0.0.1:" + strconv.Itoa(c.redisPort)
}

// Stop stops every server, waits until their processes (postmasters and
// their children) are gone and removes the directory. It is idempotent and
// safe to call concurrently; later calls return nil.
func (c *Cluster) Stop() error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, n := range c.nodes {
		c.mu.RLock()
		p := n.proc
		c.mu.RUnlock()
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Immediate shutdown: the data is thrown away anyway.
			if err := killPostmaster(ctx, p, syscall.SIGQUIT, 10*time.Second); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("stop %s: %w", n.Name, err))
				emu.Unlock()
			}
		}()
	}
	c.mu.RLock()
	rp := c.redisProc
	c.mu.RUnlock()
	if rp != nil {
		if err := rp.stop(ctx, syscall.SIGKILL, 10*time.Second); err != nil {
			errs = append(errs, fmt.Errorf("stop redis: %w", err))
		}
	}
	wg.Wait()
	if len(errs) == 0 {
		if err := os.RemoveAll(c.dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("testcluster: stop: %w", err)
	}
	return nil
}

// killPostmaster sends sig to the postmaster, escalates to SIGKILL after
// grace, and then makes sure no process the postmaster had started survives.
func killPostmaster(ctx context.Context, p *proc, sig syscall.Signal, grace time.Duration) error {
	children := childPIDs(p.pid)
	if err := p.stop(ctx, sig, grace); err != nil {
		return err
	}
	return killAndWaitPIDs(ctx, children)
}

// ---- starting servers ----

func (c *Cluster) env() []string { return serverEnv(c.dir) }

// runTool runs a short-lived PostgreSQL program as the server user.
func (c *Cluster) runTool(ctx context.Context, dir, tool string, args ...string) error {
	cmd := exec.CommandContext(ctx, c.bins.pg(tool), args...)
	cmd.Dir = dir
	cmd.Env = c.env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("testcluster: %s: %w: %s", tool, err, tail(string(out), 2000))
	}
	return nil
}

func (c *Cluster) initPrimary(ctx context.Context, names []string, opts Options) error {
	n := c.nodes[0]
	if err := c.runTool(ctx, n.dir, "initdb", "-D", n.dataDir(), "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C", "-N", "--no-instructions"); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\n# hsdal testcluster settings\n")
	for _, kv := range defaultSettings() {
		fmt.Fprintf(&b, "%s = %s\n", kv[0], quoteConf(kv[1]))
	}
	keys := make([]string, 0, len(opts.Settings))
	for k := range opts.Settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, quoteConf(opts.Settings[k]))
	}
	if err := appendFile(filepath.Join(n.dataDir(), "postgresql.conf"), b.String()); err != nil {
		return err
	}
	hba := "# hsdal testcluster: trust on loopback only\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	if err := os.WriteFile(filepath.Join(n.dataDir(), "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := c.startPostgres(ctx, n); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, n.adminDSN())
	if err != nil {
		return fmt.Errorf("testcluster: connect pg0: %w", err)
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		`CREATE ROLE hsdal LOGIN PASSWORD 'hsdal' NOSUPERUSER NOCREATEDB NOCREATEROLE`,
		`GRANT pg_monitor TO hsdal`,
		`CREATE DATABASE hsdal OWNER hsdal`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("testcluster: setup %q: %w", q, err)
		}
	}
	return nil
}

func appendFile(path, s string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return fmt.Errorf("testcluster: %w", err)
	}
	return f.Close()
}

// writeOwned writes a file in a data dir, owned by the server user.
func (c *Cluster) writeOwned(path string, data string) error {
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	if err := chownTo(path, c.cred); err != nil {
		return fmt.Errorf("testcluster: %w", err)
	}
	return nil
}

// configureStandby makes n's data dir a standby of up with a slot named n.Name.
func (c *Cluster) configureStandby(n, up *Node) error {
	auto := "# hsdal testcluster standby settings\n" +
		"primary_conninfo = " + quoteConf(up.replConninfo(n.Name)) + "\n" +
		"primary_slot_name = " + quoteConf(n.Name) + "\n" +
		"recovery_target_timeline = 'latest'\n"
	if err := c.writeOwned(filepath.Join(n.dataDir(), "postgresql.auto.conf"), auto); err != nil {
		return err
	}
	return c.writeOwned(filepath.Join(n.dataDir(), "standby.signal"), "")
}

// createStandby takes a fresh base backup of up into n's data dir, creating
// the replication slot n.Name on up when createSlot, and starts n.
func (c *Cluster) createStandby(ctx context.Context, n, up *Node, createSlot bool) error {
	began := time.Now()
	args := []string{"-D", n.dataDir(), "-d", up.replConninfo(n.Name), "-X", "stream",
		"-c", "fast", "-N", "-S", n.Name}
	if createSlot {
		args = append(args, "-C")
	}
	if err := c.runTool(ctx, n.dir, "pg_basebackup", args...); err != nil {
		return err
	}
	if c.syncConf != "" {
		if err := appendFile(filepath.Join(n.dataDir(), "postgresql.conf"), c.syncConf); err != nil {
			return err
		}
	}
	if err := c.configureStandby(n, up); err != nil {
		return err
	}
	if err := c.startPostgres(ctx, n); err != nil {
		return err
	}
	c.logf("testcluster: standby %s of %s up on port %d after %v", n.Name, up.Name, n.Port,
		time.Since(began).Round(time.Millisecond))
	return nil
}

// enableSync turns on synchronous quorum replication on the primary p.
func (c *Cluster) enableSync(ctx context.Context, p *Node, names []string) error {
	if err := appendFile(filepath.Join(p.dataDir(), "postgresql.conf"), syncSetting(names)); err != nil {
		return err
	}
	want := "ANY 1 (" + strings.Join(names, ", ") + ")"
	var got string
	err := pollUntil(ctx, func() (bool, error) {
		err := withConn(ctx, p, func(conn *pgx.Conn) error {
			if _, err := conn.Exec(ctx, `SELECT pg_reload_conf()`); err != nil {
				return err
			}
			return conn.QueryRow(ctx, `SHOW synchronous_standby_names`).Scan(&got)
		})
		if err != nil {
			return false, err
		}
		return got == want, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: enable synchronous replication (have %q): %w", got, err)
	}
	return nil
}

// errPortInUse means a server could not bind its port.
var errPortInUse = errors.New("port in use")

// retryPort runs start; while the cluster is being created (ports not yet
// published) and start fails because another program took the port between
// freePorts and the bind, it moves *port to a fresh free port and retries.
func (c *Cluster) retryPort(what string, port *int, start func() error) error {
	for attempt := 1; ; attempt++ {
		err := start()
		if err == nil || !errors.Is(err, errPortInUse) || !c.mayMovePorts || attempt == 3 {
			return err
		}
		ports, perr := freePorts(1)
		if perr != nil {
			return err
		}
		c.logf("testcluster: %s: port %d taken meanwhile, retrying on %d", what, *port, ports[0])
		*port = ports[0]
	}
}

// logSize is the current size of a log file (0 if missing).
func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince returns what was appended to a log file after offset.
func logSince(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	return string(b[offset:])
}

// startPostgres starts n's postmaster and waits until it accepts connections.
func (c *Cluster) startPostgres(ctx context.Context, n *Node) error {
	return c.retryPort(n.Name, &n.Port, func() error { return c.startPostgresOnce(ctx, n) })
}

func (c *Cluster) startPostgresOnce(ctx context.Context, n *Node) error {
	logOffset := logSize(n.logPath())
	p, err := spawn(spawnSpec{
		bin:      c.bins.pg("postgres"),
		args:     []string{"-D", n.dataDir(), "-p", strconv.Itoa(n.Port)},
		dir:      n.dir,
		logPath:  n.logPath(),
		detached: c.detached,
		deathSig: syscall.SIGQUIT,
		cred:     c.cred,
		env:      c.env(),
	})
	if err != nil {
		return fmt.Errorf("testcluster: %s: %w", n.Name, err)
	}
	c.mu.Lock()
	n.proc = p
	c.mu.Unlock()
	err = pollUntil(ctx, func() (bool, error) {
		if p.exited() {
			err := fmt.Errorf("testcluster: %s exited during startup; log tail:\n%s", n.Name, logTail(n.logPath()))
			if strings.Contains(logSince(n.logPath(), logOffset), "Address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return false, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		conn, err := pgx.Connect(cctx, n.adminDSN())
		if err != nil {
			return false, nil
		}
		_ = conn.Close(context.Background())
		return true, nil
	})
	if err != nil && !p.exited() {
		err = fmt.Errorf("testcluster: %s not accepting connections: %w; log tail:\n%s", n.Name, err, logTail(n.logPath()))
	}
	return err
}

// startRedis starts redis-server on c.redisPort and waits until it answers PING.
func (c *Cluster) startRedis(ctx context.Context) error {
	return c.retryPort("redis", &c.redisPort, func() error { return c.startRedisOnce(ctx) })
}

func (c *Cluster) startRedisOnce(ctx context.Context) error {
	logPath := filepath.Join(c.redisDir, "redis.log")
	logOffset := logSize(logPath)
	p, err := spawn(spawnSpec{
		bin: c.bins.Redis,
		args: []string{"--port", strconv.Itoa(c.redisPort), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", c.redisDir, "--daemonize", "no",
			"--protected-mode", "yes", "--logfile", ""},
		dir:      c.redisDir,
		logPath:  logPath,
		detached: c.detached,
		deathSig: syscall.SIGKILL,
		cred:     c.cred,
		env:      c.env(),
	})
	if err != nil {
		return fmt.Errorf("testcluster: redis: %w", err)
	}
	c.mu.Lock()
	c.redisProc = p
	c.mu.Unlock()
	err = pollUntil(ctx, func() (bool, error) {
		if p.exited() {
			err := fmt.Errorf("testcluster: redis exited during startup; log tail:\n%s", logTail(logPath))
			if strings.Contains(logSince(logPath, logOffset), "Address already in use") {
				err = fmt.Errorf("%w: %w", errPortInUse, err)
			}
			return false, err
		}
		return redisPing(ctx, c.RedisAddr()) == nil, nil
	})
	if err != nil && !p.exited() {
		err = fmt.Errorf("testcluster: redis not answering: %w", err)
	}
	return err
}

// redisPing sends PING over a raw connection and expects +PONG.
func redisPing(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	return tail(string(b), 3000)
}

// ---- replication state ----

// WaitReplicated waits until every running standby that streams from the
// current primary is in recovery and has replayed the primary's current WAL
// position (read once at the start). Standbys that are stopped or follow
// another node are skipped. It polls until ctx ends (30 s if ctx has no
// deadline) and then returns an error naming the lagging node.
func (c *Cluster) WaitReplicated(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
	}
	c.mu.RLock()
	if c.stopped {
		c.mu.RUnlock()
		return ErrStopped
	}
	primary := c.primary
	var standbys []*Node
	for _, n := range c.nodes {
		if n.role == RoleStandby && n.upstream == primary.Name && n.proc != nil && !n.proc.exited() {
			standbys = append(standbys, n)
		}
	}
	c.mu.RUnlock()
	var target string
	if err := queryRow(ctx, primary, `SELECT pg_current_wal_lsn()::text`, &target); err != nil {
		return fmt.Errorf("testcluster: wait replicated: primary %s: %w", primary.Name, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range standbys {
		g.Go(func() error { return c.waitReplayed(gctx, n, target) })
	}
	return g.Wait()
}

// waitReplayed polls n until it is in recovery with replay LSN >= target.
func (c *Cluster) waitReplayed(ctx context.Context, n *Node, target string) error {
	var last string
	err := pollUntil(ctx, func() (bool, error) {
		var ok bool
		var inRecovery bool
		var replay *string
		err := withConn(ctx, n, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text,
				coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)`, target).Scan(&inRecovery, &replay, &ok)
		})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		if !inRecovery {
			return false, fmt.Errorf("testcluster: %s is not in recovery", n.Name)
		}
		if replay != nil {
			last = "replayed " + *replay
		}
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: %s did not replay %s (%s): %w", n.Name, target, last, err)
	}
	return nil
}

// withConn runs f on a fresh superuser connection to database postgres of n.
func withConn(ctx context.Context, n *Node, f func(*pgx.Conn) error) error {
	conn, err := pgx.Connect(ctx, n.adminDSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return f(conn)
}

func queryRow(ctx context.Context, n *Node, sql string, dst ...any) error {
	return withConn(ctx, n, func(conn *pgx.Conn) error { return conn.QueryRow(ctx, sql).Scan(dst...) })
}
