package dal

import (
	"errors"
	"fmt"
)

// ErrSchemaMismatch reports that a database's hsdal schema version differs from the version
// this build of hsdal was written for (SchemaVersion). Errors returned by CheckSchema and
// Migrate match it with errors.Is; errors.As with *SchemaVersionError gives both versions.
var ErrSchemaMismatch = errors.New("dal: schema version mismatch")

// SchemaVersionError is the error CheckSchema (and Migrate, for a database newer than the
// build) returns when a database's schema version differs from SchemaVersion. Its message
// says what to do: migrate the database when it is older, upgrade the binary when it is
// newer. It matches ErrSchemaMismatch with errors.Is.
type SchemaVersionError struct {
	// Database is the version recorded in the database (0: no hsdal schema at all).
	Database int32
	// Code is the version this build expects (SchemaVersion).
	Code int32
}

// Error says which side is behind and what to do about it.
func (e *SchemaVersionError) Error() string {
	switch {
	case e.Database == 0:
		return fmt.Sprintf("dal: the database has no hsdal schema (this build needs version %d): "+
			"apply the migrations with dal.Migrate against the primary first", e.Code)
	case e.Database < e.Code:
		return fmt.Sprintf("dal: the database schema is version %d but this build needs version %d: "+
			"upgrade the database with dal.Migrate against the primary first", e.Database, e.Code)
	default:
		return fmt.Sprintf("dal: the database schema is version %d, newer than the version %d this build knows: "+
			"upgrade this binary to a release that knows schema version %d (never downgrade the schema)",
			e.Database, e.Code, e.Database)
	}
}

// Is makes errors.Is(err, ErrSchemaMismatch) true.
func (e *SchemaVersionError) Is(target error) bool { return target == ErrSchemaMismatch }
