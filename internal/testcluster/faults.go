package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// begin starts a fault control: it serializes with other controls and Stop,
// applies a default deadline and refuses to work on a stopped cluster. The
// returned func must be called (it saves the state file and unlocks).
func (c *Cluster) begin(ctx context.Context, d time.Duration) (context.Context, func(), error) {
	c.opMu.Lock()
	c.mu.RLock()
	stopped := c.stopped
	c.mu.RUnlock()
	if stopped {
		c.opMu.Unlock()
		return ctx, nil, ErrStopped
	}
	cancel := func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	return ctx, func() {
		cancel()
		_ = c.saveState()
		c.opMu.Unlock()
	}, nil
}

// runningProc returns n's postmaster if it runs, else nil.
func (c *Cluster) runningProc(n *Node) *proc {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if n.proc == nil || n.proc.exited() {
		return nil
	}
	return n.proc
}

// onNode looks up node name and runs op on it as one fault operation:
// serialised with the others (begin), with default deadline d when ctx has
// none, and the cluster state saved afterwards.
func (c *Cluster) onNode(ctx context.Context, name string, d time.Duration, op func(ctx context.Context, n *Node) error) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	ctx, done, err := c.begin(ctx, d)
	if err != nil {
		return err
	}
	defer done()
	return op(ctx, n)
}

// StopNode cleanly stops the node (fast shutdown: SIGINT to the postmaster;
// SIGKILL after 30 s) and waits until its processes are gone. Stopping a
// stopped node is a no-op. The node keeps its role and port; StartNode
// starts it again. Default deadline 60 s when ctx has none.
func (c *Cluster) StopNode(ctx context.Context, name string) error {
	return c.onNode(ctx, name, time.Minute, func(ctx context.Context, n *Node) error {
		return c.stopNode(ctx, n, syscall.SIGINT)
	})
}

func (c *Cluster) stopNode(ctx context.Context, n *Node, sig syscall.Signal) error {
	p := c.runningProc(n)
	if p == nil {
		return nil
	}
	if err := killPostmaster(ctx, p, sig, 30*time.Second); err != nil {
		return fmt.Errorf("testcluster: stop %s: %w", n.Name, err)
	}
	c.mu.Lock()
	n.proc = nil
	c.mu.Unlock()
	return nil
}

// StartNode starts a stopped or killed node on its old port and waits until
// it accepts connections (for a standby: until it reached a consistent
// state). Starting a running node is a no-op. Default deadline 60 s.
func (c *Cluster) StartNode(ctx context.Context, name string) error {
	return c.onNode(ctx, name, time.Minute, func(ctx context.Context, n *Node) error {
		if c.runningProc(n) != nil {
			return nil
		}
		return c.startPostgres(ctx, n)
	})
}

// KillNode simulates a crash of the node: SIGKILL to the postmaster and to
// every process it had started, then waits until all of them are gone. Killing
// a stopped node is a no-op. StartNode restarts it (with crash recovery).
func (c *Cluster) KillNode(ctx context.Context, name string) error {
	return c.onNode(ctx, name, 30*time.Second, func(ctx context.Context, n *Node) error {
		return c.stopNode(ctx, n, syscall.SIGKILL)
	})
}

// Promote promotes the standby name (pg_promote) and waits until it reports
// pg_is_in_recovery() = false. It then is the primary (PrimaryDSN); the old
// primary gets RoleFormer and is no longer listed anywhere until Rejoin.
// Other standbys keep streaming from (or waiting for) their old upstream;
// Rejoin re-points them. Returns ErrRole if name is not a running standby.
func (c *Cluster) Promote(ctx context.Context, name string) error {
	return c.onNode(ctx, name, time.Minute, func(ctx context.Context, n *Node) error {
		if n.Role() != RoleStandby || c.runningProc(n) == nil {
			return fmt.Errorf("%w: promote %s: not a running standby", ErrRole, name)
		}
		var ok bool
		if err := withConn(ctx, n, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok)
		}); err != nil {
			return fmt.Errorf("testcluster: promote %s: %w", name, err)
		}
		if err := pollUntil(ctx, func() (bool, error) {
			var inRecovery bool
			if err := queryRow(ctx, n, `SELECT pg_is_in_recovery()`, &inRecovery); err != nil {
				return false, nil
			}
			return !inRecovery, nil
		}); err != nil {
			return fmt.Errorf("testcluster: promote %s: still in recovery: %w", name, err)
		}
		c.mu.Lock()
		old := c.primary
		old.role = RoleFormer
		old.upstream = ""
		n.role = RolePrimary
		n.upstream = ""
		c.primary = n
		c.mu.Unlock()
		c.logf("testcluster: promoted %s (old primary %s)", name, old.Name)
		return nil
	})
}

// Rejoin makes node name a standby of newPrimary, which must be the current
// primary: it stops name if running, creates the replication slot name on
// newPrimary if missing, rewinds the data dir with pg_rewind (falling back to
// a fresh pg_basebackup when pg_rewind fails or the node does not catch
// up), starts it and waits until it has replayed newPrimary's current WAL
// position. Works for a former primary and for a standby of a dead primary.
// Returns ErrRole if newPrimary is not the current primary or equals name.
// Default deadline 3 minutes.
func (c *Cluster) Rejoin(ctx context.Context, name, newPrimary string) error {
	n, err := c.node(name)
	if err != nil {
		return err
	}
	up, err := c.node(newPrimary)
	if err != nil {
		return err
	}
	ctx, done, err := c.begin(ctx, 3*time.Minute)
	if err != nil {
		return err
	}
	defer done()
	if c.Primary() != up || n == up {
		return fmt.Errorf("%w: rejoin %s to %s: target must be the current primary and differ from the node", ErrRole, name, newPrimary)
	}
	if c.runningProc(up) == nil {
		return fmt.Errorf("%w: rejoin %s: primary %s", ErrNotRunning, name, newPrimary)
	}
	began := time.Now()
	if err := c.stopNode(ctx, n, syscall.SIGINT); err != nil {
		return err
	}
	c.mu.RLock()
	oldUp := c.Node(n.upstream)
	c.mu.RUnlock()
	if oldUp != nil && oldUp != up && c.runningProc(oldUp) != nil {
		// Best effort: a stale slot would pin WAL on the old upstream forever.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = withConn(dctx, oldUp, func(conn *pgx.Conn) error {
			_, err := conn.Exec(dctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
				WHERE slot_name = $1 AND NOT active`, n.Name)
			return err
		})
		cancel()
	}
	if err := withConn(ctx, up, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, `SELECT pg_create_physical_replication_slot($1, true)
			WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, n.Name)
		if err != nil {
			return err
		}
		// Right after a promotion the control file still names the old
		// timeline until the end-of-recovery checkpoint is done; pg_rewind
		// reads it and would wrongly conclude that no rewind is needed.
		_, err = conn.Exec(ctx, `CHECKPOINT`)
		return err
	}); err != nil {
		return fmt.Errorf("testcluster: rejoin %s: prepare %s: %w", name, newPrimary, err)
	}

	rewound := c.rejoinRewind(ctx, n, up)
	if rewound != nil {
		c.logf("testcluster: rejoin %s: pg_rewind path failed (%v); taking a fresh base backup", name, rewound)
		if err := c.stopNode(ctx, n, syscall.SIGINT); err != nil {
			return err
		}
		if err := os.RemoveAll(n.dataDir()); err != nil {
			return fmt.Errorf("testcluster: rejoin %s: %w", name, err)
		}
		if err := c.createStandby(ctx, n, up, false); err != nil {
			return fmt.Errorf("testcluster: rejoin %s: %w", name, err)
		}
	}
	c.mu.Lock()
	n.role = RoleStandby
	n.upstream = up.Name
	c.mu.Unlock()
	if err := c.waitCaughtUp(ctx, n, up); err != nil {
		return fmt.Errorf("testcluster: rejoin %s: %w", name, err)
	}
	c.logf("testcluster: %s rejoined as standby of %s in %v (rewind ok: %v)", name, newPrimary,
		time.Since(began).Round(time.Millisecond), rewound == nil)
	return nil
}

// rejoinRewind runs pg_rewind against up, configures n as up's standby,
// starts it and waits (at most 30 s) until it caught up.
func (c *Cluster) rejoinRewind(ctx context.Context, n, up *Node) error {
	src := fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres", up.Port)
	if err := c.runTool(ctx, n.dir, "pg_rewind", "-D", n.dataDir(), "--source-server="+src, "--no-sync"); err != nil {
		return err
	}
	if err := c.configureStandby(n, up); err != nil {
		return err
	}
	if err := c.startPostgres(ctx, n); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.waitCaughtUp(wctx, n, up)
}

// waitCaughtUp waits until up reports n as a streaming standby and n is in
// recovery and replayed up's current LSN.
func (c *Cluster) waitCaughtUp(ctx context.Context, n, up *Node) error {
	err := pollUntil(ctx, func() (bool, error) {
		var streaming bool
		err := withConn(ctx, up, func(conn *pgx.Conn) error {
			return conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_replication
				WHERE application_name = $1 AND state = 'streaming')`, n.Name).Scan(&streaming)
		})
		return err == nil && streaming, nil
	})
	if err != nil {
		return fmt.Errorf("%s is not streaming from %s: %w; log tail:\n%s", n.Name, up.Name, err, logTail(n.logPath()))
	}
	var target string
	if err := queryRow(ctx, up, `SELECT pg_current_wal_lsn()::text`, &target); err != nil {
		return fmt.Errorf("read LSN of %s: %w", up.Name, err)
	}
	return c.waitReplayed(ctx, n, target)
}

// PauseReplay pauses WAL replay on standby name (pg_wal_replay_pause) and
// waits until pg_get_wal_replay_pause_state() reports 'paused'. The standby
// keeps receiving WAL but its data stays frozen, so its replay lag grows.
// Returns ErrRole if name is not a running standby.
func (c *Cluster) PauseReplay(ctx context.Context, name string) error {
	return c.setReplay(ctx, name, `SELECT pg_wal_replay_pause()`, "paused")
}

// ResumeReplay resumes WAL replay on standby name (pg_wal_replay_resume) and
// waits until the pause state is 'not paused'. Returns ErrRole if name is not
// a running standby.
func (c *Cluster) ResumeReplay(ctx context.Context, name string) error {
	return c.setReplay(ctx, name, `SELECT pg_wal_replay_resume()`, "not paused")
}

func (c *Cluster) setReplay(ctx context.Context, name, sql, want string) error {
	return c.onNode(ctx, name, 30*time.Second, func(ctx context.Context, n *Node) error {
		if n.Role() != RoleStandby || c.runningProc(n) == nil {
			return fmt.Errorf("%w: %s: not a running standby", ErrRole, name)
		}
		if err := withConn(ctx, n, func(conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, sql)
			return err
		}); err != nil {
			return fmt.Errorf("testcluster: %s on %s: %w", sql, name, err)
		}
		var state string
		err := pollUntil(ctx, func() (bool, error) {
			if err := queryRow(ctx, n, `SELECT pg_get_wal_replay_pause_state()`, &state); err != nil {
				return false, nil
			}
			return state == want, nil
		})
		if err != nil {
			return fmt.Errorf("testcluster: %s: replay state %q, want %q: %w", name, state, want, err)
		}
		return nil
	})
}

// StopRedis stops Redis (SIGTERM; nothing is persisted) and waits until the
// process is gone. A no-op when Redis is not running; ErrNoRedis with NoRedis.
func (c *Cluster) StopRedis(ctx context.Context) error {
	return c.stopRedis(ctx, syscall.SIGTERM)
}

// KillRedis kills Redis with SIGKILL and waits until the process is gone.
// A no-op when Redis is not running; ErrNoRedis with NoRedis.
func (c *Cluster) KillRedis(ctx context.Context) error {
	return c.stopRedis(ctx, syscall.SIGKILL)
}

func (c *Cluster) stopRedis(ctx context.Context, sig syscall.Signal) error {
	if c.redisPort == 0 {
		return ErrNoRedis
	}
	ctx, done, err := c.begin(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	defer done()
	c.mu.RLock()
	p := c.redisProc
	c.mu.RUnlock()
	if p == nil {
		return nil
	}
	if err := p.stop(ctx, sig, 10*time.Second); err != nil {
		return fmt.Errorf("testcluster: stop redis: %w", err)
	}
	c.mu.Lock()
	c.redisProc = nil
	c.mu.Unlock()
	return nil
}

// StartRedis starts Redis again on the same address (empty: nothing was
// persisted) and waits until it answers PING. A no-op when it is running;
// ErrNoRedis with NoRedis.
func (c *Cluster) StartRedis(ctx context.Context) error {
	if c.redisPort == 0 {
		return ErrNoRedis
	}
	ctx, done, err := c.begin(ctx, 30*time.Second)
	if err != nil {
		return err
	}
	defer done()
	if c.RedisRunning() {
		return nil
	}
	// The kernel may briefly refuse the port right after the old server died.
	var lastErr error
	err = pollUntil(ctx, func() (bool, error) {
		lastErr = c.startRedis(ctx)
		if lastErr == nil {
			return true, nil
		}
		if errors.Is(lastErr, context.Canceled) || errors.Is(lastErr, context.DeadlineExceeded) {
			return false, lastErr
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("testcluster: start redis: %w (last: %v)", err, lastErr)
	}
	return nil
}
