package repos

// Test-only access to unexported machinery, for the external test package.

// CursorCodec exposes the cursor signer to tests.
type CursorCodec = cursorCodec

// CursorPos exposes the cursor sort key to tests.
type CursorPos = cursorPos

// CursorKind exposes cursor kinds to tests.
type CursorKind = cursorKind

// Cursor kinds, for tests.
const (
	KindEvents          = kindEvents
	KindPrivateMessages = kindPrivateMessages
	KindJoinedMembers   = kindJoinedMembers
	KindUserRooms       = kindUserRooms
	KindUsers           = kindUsers
	KindPublicRooms     = kindPublicRooms
)

// NewCursorCodec exposes newCursorCodec.
func NewCursorCodec(key []byte, previous [][]byte) (*CursorCodec, error) {
	return newCursorCodec(key, previous)
}

// Encode exposes cursorCodec.encode.
func (c *cursorCodec) Encode(kind CursorKind, scope string, dir Direction, pos CursorPos) string {
	return c.encode(kind, scope, dir, pos)
}

// Decode exposes cursorCodec.decode.
func (c *cursorCodec) Decode(s string, kind CursorKind, scope string) (Direction, CursorPos, error) {
	return c.decode("from", s, kind, scope)
}

// SQL text for tests that run it directly (EXPLAIN, in-flight transactions).
const (
	SQLAppendEvent       = sqlAppendEvent
	SQLEventsBefore      = sqlEventsBefore
	SQLEventsAfter       = sqlEventsAfter
	SQLEventsBeforeTyped = sqlEventsBeforeTyped
	SQLListMembersAsc    = sqlListMembersAsc
	SQLLookupToken       = sqlLookupToken
	SQLMessagesBefore    = sqlMessagesBefore
	SQLUnreadCount       = sqlUnreadCount
	SQLIsJoined          = sqlIsJoined
)

// CheckContent exposes the content validator.
func CheckContent(b []byte) error { return checkJSONObject("content", b, MaxContentBytes) }
