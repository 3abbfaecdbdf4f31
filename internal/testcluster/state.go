package testcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// StateFile is the name of the file, inside the cluster directory, that
// records ports, roles and process identities so Attach can find the
// servers again from another process.
const StateFile = "state.json"

// ErrNoState means a directory holds no cluster state file (nothing is up).
var ErrNoState = errors.New("testcluster: no cluster state")

type nodeState struct {
	Name     string  `json:"name"`
	Port     int     `json:"port"`
	Role     Role    `json:"role"`
	Upstream string  `json:"upstream,omitempty"`
	Proc     *pidRef `json:"proc,omitempty"`
}

type clusterState struct {
	Version  int  `json:"version"`
	Detached bool `json:"detached"`
	// Owner is the process whose death kills the servers (not detached).
	Owner     *pidRef     `json:"owner,omitempty"`
	Bins      binaries    `json:"binaries"`
	Primary   string      `json:"primary"`
	Nodes     []nodeState `json:"nodes"`
	RedisPort int         `json:"redis_port,omitempty"`
	Redis     *pidRef     `json:"redis,omitempty"`
}

func refOf(p *proc) *pidRef {
	if p == nil || p.exited() {
		return nil
	}
	return &pidRef{PID: p.pid, Start: p.start}
}

// saveState atomically rewrites dir/state.json.
func (c *Cluster) saveState() error {
	c.mu.RLock()
	if c.stopped {
		c.mu.RUnlock()
		return nil
	}
	st := clusterState{Version: 1, Detached: c.detached, Owner: c.owner, Bins: c.bins,
		Primary: c.primary.Name, RedisPort: c.redisPort, Redis: refOf(c.redisProc)}
	for _, n := range c.nodes {
		st.Nodes = append(st.Nodes, nodeState{Name: n.Name, Port: n.Port, Role: n.role,
			Upstream: n.upstream, Proc: refOf(n.proc)})
	}
	c.mu.RUnlock()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("testcluster: save state: %w", err)
	}
	tmp := filepath.Join(c.dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("testcluster: save state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, StateFile)); err != nil {
		return fmt.Errorf("testcluster: save state: %w", err)
	}
	return nil
}

// Attach returns a Cluster for the servers recorded in dir by a Start (in
// this or another process, typically with Options.Detached). The returned
// Cluster supports every method, including Stop, which stops the servers
// and removes dir. Processes are identified by PID and kernel start time, so
// a PID reused by another program is never signalled. It returns an error
// wrapping ErrNoState when dir holds no state file.
func Attach(dir string) (*Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("testcluster: attach: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(abs, StateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w in %s", ErrNoState, abs)
	}
	if err != nil {
		return nil, fmt.Errorf("testcluster: attach: %w", err)
	}
	var st clusterState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("testcluster: attach: bad %s: %w", StateFile, err)
	}
	if st.Version != 1 || len(st.Nodes) == 0 {
		return nil, fmt.Errorf("testcluster: attach: unsupported %s (version %d)", StateFile, st.Version)
	}
	cred, err := serverCredential()
	if err != nil {
		return nil, err
	}
	c := &Cluster{dir: abs, bins: st.Bins, cred: cred, detached: st.Detached, owner: st.Owner,
		logf: func(string, ...any) {}, redisPort: st.RedisPort}
	if st.RedisPort != 0 {
		c.redisDir = filepath.Join(abs, "redis")
	}
	if st.Redis != nil {
		c.redisProc = &proc{pid: st.Redis.PID, start: st.Redis.Start}
	}
	for _, ns := range st.Nodes {
		n := &Node{Name: ns.Name, Port: ns.Port, c: c, dir: filepath.Join(abs, ns.Name),
			role: ns.Role, upstream: ns.Upstream}
		if ns.Proc != nil {
			n.proc = &proc{pid: ns.Proc.PID, start: ns.Proc.Start}
		}
		if ns.Name == st.Primary {
			c.primary = n
		}
		c.nodes = append(c.nodes, n)
	}
	if c.primary == nil {
		return nil, fmt.Errorf("testcluster: attach: primary %q not among nodes", st.Primary)
	}
	return c, nil
}

// RedisRunning reports whether the Redis server process is running.
func (c *Cluster) RedisRunning() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.redisProc != nil && !c.redisProc.exited()
}

// PIDs returns the process IDs of every running server process: each
// postmaster, the processes it started, and redis-server. Tests use it to
// check that Stop leaves no orphans.
func (c *Cluster) PIDs() []int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []int
	for _, n := range c.nodes {
		if n.proc != nil && !n.proc.exited() {
			out = append(out, n.proc.pid)
			for _, ch := range childPIDs(n.proc.pid) {
				out = append(out, ch.PID)
			}
		}
	}
	if c.redisProc != nil && !c.redisProc.exited() {
		out = append(out, c.redisProc.pid)
	}
	return out
}

// tempPrefix names the temp dirs Start creates when Options.Dir is "".
const tempPrefix = "hsdal-cluster-"

// sweepStale removes temp cluster dirs left behind by test processes that
// died without Stop (their servers died with them through the parent-death
// signal). A dir is stale when its state names an owner process that is gone;
// a dir without state is stale after an hour (a Start killed very early).
// Detached clusters are never touched.
func sweepStale(logf func(string, ...any)) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, StateFile))
		if errors.Is(err, fs.ErrNotExist) {
			if st, err := os.Stat(d); err == nil && time.Since(st.ModTime()) > time.Hour {
				_ = os.RemoveAll(d)
			}
			continue
		}
		var st clusterState
		if err != nil || json.Unmarshal(b, &st) != nil || st.Detached || st.Owner == nil ||
			pidAlive(st.Owner.PID, st.Owner.Start) {
			continue
		}
		var leftovers []pidRef
		for _, n := range st.Nodes {
			if n.Proc != nil {
				leftovers = append(leftovers, *n.Proc)
			}
		}
		if st.Redis != nil {
			leftovers = append(leftovers, *st.Redis)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = killAndWaitPIDs(ctx, leftovers)
		cancel()
		if err == nil && os.RemoveAll(d) == nil {
			logf("testcluster: removed %s left behind by dead process %d", d, st.Owner.PID)
		}
	}
}
