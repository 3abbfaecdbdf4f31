package testcluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one long-running server process (a postmaster or redis-server).
// It is either a child of this process (cmd != nil; reaped by a goroutine)
// or a process found through a state file (Attach), identified by PID and
// kernel start time so that a reused PID is never signalled.
type proc struct {
	pid   int
	start uint64        // start time from /proc/<pid>/stat, field 22
	done  chan struct{} // closed when a child exits; nil for attached processes
}

// pollInterval is how often waits on processes and servers poll.
const pollInterval = 20 * time.Millisecond

// spawnSpec describes a long-running server to start.
type spawnSpec struct {
	bin      string
	args     []string
	dir      string // working directory
	logPath  string // stdout and stderr go here (appended)
	detached bool   // new session, survives this process
	deathSig syscall.Signal
	cred     *syscall.Credential
	env      []string
}

func spawn(spec spawnSpec) (*proc, error) {
	logf, err := os.OpenFile(spec.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close() // the child holds its own copy of the descriptor
	cmd := exec.Command(spec.bin, spec.args...)
	cmd.Dir = spec.dir
	cmd.Env = spec.env
	cmd.Stdout = logf
	cmd.Stderr = logf
	attr := &syscall.SysProcAttr{Credential: spec.cred}
	if spec.detached {
		attr.Setsid = true
	} else {
		attr.Setpgid = true
		attr.Pdeathsig = spec.deathSig
	}
	cmd.SysProcAttr = attr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(spec.bin), err)
	}
	p := &proc{pid: cmd.Process.Pid, done: make(chan struct{})}
	p.start, _ = procStartTime(p.pid)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has ended (a zombie counts as ended).
func (p *proc) exited() bool {
	if p.done != nil {
		select {
		case <-p.done:
			return true
		default:
			return false
		}
	}
	return !pidAlive(p.pid, p.start)
}

// signal sends sig unless the process has already ended.
func (p *proc) signal(sig syscall.Signal) error {
	if p.exited() {
		return nil
	}
	if err := syscall.Kill(p.pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %d to pid %d: %w", sig, p.pid, err)
	}
	return nil
}

// wait blocks until the process has ended or ctx is done.
func (p *proc) wait(ctx context.Context) error {
	if p.done != nil {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("pid %d still running: %w", p.pid, ctx.Err())
		}
	}
	return pollUntil(ctx, func() (bool, error) { return p.exited(), nil })
}

// stop sends sig, waits up to grace, then SIGKILLs and waits for the end.
func (p *proc) stop(ctx context.Context, sig syscall.Signal, grace time.Duration) error {
	if err := p.signal(sig); err != nil {
		return err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	err := p.wait(gctx)
	cancel()
	if err == nil {
		return nil
	}
	if err := p.signal(syscall.SIGKILL); err != nil {
		return err
	}
	kctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.wait(kctx)
}

// pollUntil calls f every pollInterval until it returns true, an error, or ctx ends.
func pollUntil(ctx context.Context, f func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		ok, err := f()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// procStat returns state, ppid and start time of pid from /proc/<pid>/stat.
func procStat(pid int) (state byte, ppid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	// The command name is in parentheses and may contain spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return 0, 0, 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+2:])
	// f[0] is field 3 (state), f[1] field 4 (ppid), f[19] field 22 (starttime).
	if len(f) < 20 {
		return 0, 0, 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, 0, err
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, 0, err
	}
	return f[0][0], ppid, start, nil
}

func procStartTime(pid int) (uint64, error) {
	_, _, st, err := procStat(pid)
	return st, err
}

// pidAlive reports whether pid runs and (if start != 0) is the same process
// that had that start time. Zombies count as dead.
func pidAlive(pid int, start uint64) bool {
	state, _, st, err := procStat(pid)
	if err != nil {
		return false
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	return start == 0 || st == start
}

// pidRef names one process instance: a PID plus its kernel start time.
type pidRef struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// childPIDs lists the live processes whose parent is pid.
func childPIDs(pid int) []pidRef {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []pidRef
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, st, err := procStat(n)
		if err == nil && ppid == pid && state != 'Z' && state != 'X' {
			out = append(out, pidRef{PID: n, Start: st})
		}
	}
	return out
}

// killAndWaitPIDs SIGKILLs each process and waits until none is alive.
func killAndWaitPIDs(ctx context.Context, refs []pidRef) error {
	for _, r := range refs {
		if pidAlive(r.PID, r.Start) {
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
		}
	}
	return pollUntil(ctx, func() (bool, error) {
		for _, r := range refs {
			if pidAlive(r.PID, r.Start) {
				return false, nil
			}
		}
		return true, nil
	})
}
