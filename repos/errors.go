package repos

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hsdal/hsdal/router"
)

// Sentinel errors returned by every repository method. Test them with
// errors.Is; the returned error wraps the sentinel and, where there is one,
// the underlying pgx error, with the operation as context
// ("repos: users.get: ...").
var (
	// ErrNotFound: the row does not exist or is soft-deleted (or its parent
	// is: a device of a deleted user, a message of a deleted session...).
	ErrNotFound = errors.New("repos: not found")

	// ErrConflict: a uniqueness rule was violated (the user, device, alias or
	// session already exists) or a state transition is illegal (e.g. a banned
	// user joining a room).
	ErrConflict = errors.New("repos: conflict")

	// ErrInvalidArgument: the input was rejected before any SQL ran. The
	// error is an *ArgumentError naming the field. Nothing was written.
	ErrInvalidArgument = errors.New("repos: invalid argument")

	// ErrInvalidCursor: a pagination cursor was not produced by this
	// library with the configured key, or was produced for another list
	// (another room, another session, another kind of page or direction),
	// or was truncated or altered. Nothing was read.
	ErrInvalidCursor = errors.New("repos: invalid cursor")

	// ErrUnavailable: no database node can serve the request (for writes,
	// the primary is down or its breaker is open). It is the router's own
	// sentinel, so errors.Is(err, router.ErrUnavailable) holds as well.
	ErrUnavailable = router.ErrUnavailable
)

// ArgumentError is the error behind every ErrInvalidArgument: which input
// field was rejected and why. errors.Is(err, ErrInvalidArgument) is true for
// it. Messages never contain the rejected value when it could be a secret
// (passwords, access tokens).
type ArgumentError struct {
	// Field is the name of the rejected input, e.g. "user_id" or "limit".
	Field string
	// Reason says what rule the value broke.
	Reason string
}

// Error implements error.
func (e *ArgumentError) Error() string {
	return "repos: invalid argument: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidArgument) true.
func (e *ArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

func invalid(field, format string, args ...any) error {
	return &ArgumentError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// PostgreSQL SQLSTATE codes the repositories translate.
const (
	sqlstateUniqueViolation     = "23505"
	sqlstateForeignKeyViolation = "23503"
	sqlstateCheckViolation      = "23514"
	sqlstateExclusionViolation  = "23P01"
	sqlstateNotNullViolation    = "23502"
	sqlstateUntranslatable      = "22P05" // e.g. \u0000 in jsonb
	sqlstateBadEncoding         = "22021"
	sqlstateBadTextRepr         = "22P02" // e.g. malformed JSON
)

// wrap adds the operation name to err and maps driver errors onto the
// package sentinels, keeping the original error in the chain:
//   - pgx.ErrNoRows → ErrNotFound
//   - unique / exclusion violation → ErrConflict
//   - foreign-key violation → ErrNotFound (the parent row is missing)
//   - check / not-null violation, untranslatable or malformed input →
//     ErrInvalidArgument (the validators should have caught it first; this is
//     the database's second line)
//
// Errors that already carry a sentinel (or ctx errors, router errors) are
// only annotated.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("repos: %s: %w: %w", op, ErrNotFound, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlstateUniqueViolation, sqlstateExclusionViolation:
			return fmt.Errorf("repos: %s: %w: %w", op, ErrConflict, err)
		case sqlstateForeignKeyViolation:
			return fmt.Errorf("repos: %s: %w (referenced row missing): %w", op, ErrNotFound, err)
		case sqlstateCheckViolation, sqlstateNotNullViolation, sqlstateUntranslatable, sqlstateBadEncoding,
			sqlstateBadTextRepr:
			return fmt.Errorf("repos: %s: %w (rejected by the database): %w", op, ErrInvalidArgument, err)
		}
	}
	return fmt.Errorf("repos: %s: %w", op, err)
}
