package testcluster

import (
	"context"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestStartMovesTakenPort: while a cluster is being created, a server whose
// port was taken in the meantime is restarted on a fresh port.
func TestStartMovesTakenPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bins, err := findBinaries(true)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := serverCredential()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := makeBaseDir("", cred)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := chownTo(dir, cred); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() { // answer nothing, so a PING to the taken port fails fast
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	}()
	taken := l.Addr().(*net.TCPAddr).Port

	c := &Cluster{dir: dir, bins: bins, cred: cred, logf: t.Logf, redisDir: dir, redisPort: taken}
	c.mayMovePorts = false
	if err := c.startRedis(ctx); err == nil {
		t.Fatal("redis started on a taken port")
	}
	c.mayMovePorts = true
	if err := c.startRedis(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.redisProc.stop(context.Background(), syscall.SIGKILL, time.Second) })
	if c.redisPort == taken {
		t.Fatalf("port not moved from %d", taken)
	}
	if err := redisPing(ctx, c.RedisAddr()); err != nil {
		t.Fatal(err)
	}
}
