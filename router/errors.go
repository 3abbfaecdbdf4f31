package router

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
)

// ErrUnavailable reports that no node can serve the request: the primary is
// down, unknown or contested (split brain) for a write; no node satisfies a
// read and the configured policy says not to fall back; or the router is
// closed. Nothing was written when a Write returns it (unless it also wraps
// ErrCommitUnknown, which Write never combines with it).
var ErrUnavailable = errors.New("router: no node available")

// ErrCommitUnknown reports that the connection was lost (or the caller's
// context ended) while COMMIT was in flight: the transaction may or may not
// have committed. Write never retries it; the caller must reconcile (for
// example by reading with Strong consistency) before retrying.
var ErrCommitUnknown = errors.New("router: commit outcome unknown")

// errClass is how the router treats an error for breakers and retries.
type errClass uint8

const (
	classNone     errClass = iota // no error
	classSQL                      // the server answered: constraint violation, syntax error, ... (never retried, never counted)
	classCanceled                 // the caller's context ended: not the node's fault
	classConn                     // connectivity / server unavailable: counted by the breaker, retried for reads
	classConflict                 // recovery conflict on a standby (40001/40P01): retried for reads, not counted
	classReadOnly                 // 25006/0A000-on-BEGIN: the "primary" is a standby now (failover signal)
)

func (c errClass) String() string {
	switch c {
	case classNone:
		return "ok"
	case classSQL:
		return "sql_error"
	case classCanceled:
		return "canceled"
	case classConn:
		return "unavailable"
	case classConflict:
		return "recovery_conflict"
	case classReadOnly:
		return "read_only"
	}
	return "unknown"
}

// classify sorts err. standby says whether the failing node was a hot standby
// when the request was sent: 40001 only means "recovery conflict" there.
func classify(err error, standby bool) errClass {
	if err == nil {
		return classNone
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch code := pgErr.Code; {
		case len(code) >= 2 && code[:2] == "08",
			code == "57P01", code == "57P02", code == "57P03", // admin/crash shutdown, cannot connect now
			code == "53300": // too many connections: the node cannot take this request
			return classConn
		case code == "40P01", code == "40001" && standby:
			return classConflict
		case code == "25006":
			return classReadOnly
		}
		return classSQL
	}
	if errors.Is(err, context.Canceled) {
		return classCanceled
	}
	if errors.Is(err, errAcquireTimeout) {
		return classConn
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The caller's deadline: not evidence against the node.
		return classCanceled
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.As(err, &netErr),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed),
		errors.Is(err, puddle.ErrClosedPool),
		errors.Is(err, pgconn.ErrConnClosed), // a pooled connection the server already closed
		pgconn.Timeout(err):
		return classConn
	}
	// Anything else is the application's (or the server's answer to it).
	return classSQL
}

// errAcquireTimeout marks the router's own acquire deadline (Pool.AcquireTimeout)
// expiring while the caller's context was still live: the node could not
// hand out a connection in time, which counts against it.
var errAcquireTimeout = errors.New("router: connection acquire timed out")

// Retryable reports whether err is transient: a connectivity failure, a server
// that is shutting down or starting (SQLSTATE class 08, 57P01-57P03), a query
// cancelled on a standby by a recovery conflict (40001, 40P01), a node that
// turned read-only under a write (25006), or ErrUnavailable. Running the
// operation again later may succeed. It is false for nil, for SQL errors such
// as unique violations, for context cancellation, and for ErrCommitUnknown
// (the write may have committed: reconcile before retrying).
func Retryable(err error) bool {
	if err == nil || errors.Is(err, ErrCommitUnknown) {
		return false
	}
	if errors.Is(err, ErrUnavailable) {
		return true
	}
	switch classify(err, true) {
	case classConn, classConflict, classReadOnly:
		return true
	}
	return false
}
