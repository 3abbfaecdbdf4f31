package repos

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
)

// Direction is the order a page is read in. The zero value means the list's
// default (documented on each page method).
type Direction byte

const (
	// Forward reads in ascending key order: oldest first for events and
	// messages, lexical order for ID-keyed lists. Matrix "dir=f".
	Forward Direction = 'f'
	// Backward reads in descending key order: newest first for events and
	// messages. Matrix "dir=b".
	Backward Direction = 'b'
)

// ParseDirection parses the Matrix query parameter form: "f" or "b".
// Anything else is an *ArgumentError for field "dir".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "f":
		return Forward, nil
	case "b":
		return Backward, nil
	}
	return 0, invalid("dir", "must be \"f\" or \"b\"")
}

// String returns "f" or "b" ("" for the zero value).
func (d Direction) String() string {
	switch d {
	case Forward:
		return "f"
	case Backward:
		return "b"
	}
	return ""
}

// resolve returns d, or def for the zero value; any other byte is invalid.
func (d Direction) resolve(def Direction) (Direction, error) {
	switch d {
	case 0:
		return def, nil
	case Forward, Backward:
		return d, nil
	}
	return 0, invalid("dir", "must be Forward ('f') or Backward ('b')")
}

// cursorKind names the list a cursor belongs to; it is signed into the
// cursor so a cursor of one list is never accepted by another.
type cursorKind byte

const (
	kindEvents cursorKind = iota + 1
	kindPrivateMessages
	kindJoinedMembers
	kindUsers
	kindUserRooms
	kindDevices
	kindRoomMembers
	kindPublicRooms
	kindMembershipHistory
)

// cursorShape says which fields of cursorPos a kind's sort key uses.
type cursorShape struct{ a, b, s bool }

func (k cursorKind) shape() (cursorShape, bool) {
	switch k {
	case kindEvents, kindMembershipHistory: // stream_ordering, history id
		return cursorShape{a: true}, true
	case kindPrivateMessages: // created_ts, id
		return cursorShape{a: true, b: true}, true
	case kindUsers, kindJoinedMembers, kindRoomMembers: // created_ts or membership_ts, user_id
		return cursorShape{a: true, s: true}, true
	case kindUserRooms, kindDevices, kindPublicRooms: // room_id, device_id
		return cursorShape{s: true}, true
	}
	return cursorShape{}, false
}

// cursorPos is the full sort key of the last row a page returned. Which
// fields are meaningful depends on the cursor kind (see cursorShapes).
type cursorPos struct {
	A, B int64
	S    string
}

// Cursor wire format (then unpadded URL-safe base64):
//
//	version(1) kind(1) dir(1) scope(8) fields... mac(16)
//
// fields, in order, those the kind's shape uses: A and B as 8-byte
// big-endian integers, S as a uvarint length and bytes (≤ MaxIDBytes).
// scope is the first 8 bytes of SHA-256(kind ‖ scope string), e.g. of the
// room ID, so a cursor from one room is recognised as such in another. mac is
// HMAC-SHA256 over everything before it, truncated to 128 bits (RFC 2104
// allows truncation to half the hash length; 128 bits is what RFC 4868 uses
// for HMAC-SHA256 in IPsec). The MAC is checked before any field is parsed.
const (
	cursorVersion   = 1
	cursorHeaderLen = 1 + 1 + 1 + 8
	cursorMACLen    = 16
	// maxCursorLen bounds the encoded text so an absurd input is rejected
	// before decoding: header + two ints + a 255-byte string + mac, in base64.
	maxCursorLen = (cursorHeaderLen + 8 + 8 + 2 + MaxIDBytes + cursorMACLen + 2) * 4 / 3
	// minCursorKeyLen is the shortest accepted signing key.
	minCursorKeyLen = 16
)

// cursorCodec signs and verifies cursors. It is immutable and safe for
// concurrent use.
type cursorCodec struct {
	keys [][]byte // keys[0] signs; all verify
}

func newCursorCodec(key []byte, previous [][]byte) (*cursorCodec, error) {
	if len(key) == 0 {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("repos: generating cursor key: %w", err)
		}
	}
	keys := make([][]byte, 0, 1+len(previous))
	for i, k := range append([][]byte{key}, previous...) {
		if len(k) < minCursorKeyLen {
			return nil, invalid("cursor_key", "key %d is %d bytes; at least %d required", i, len(k), minCursorKeyLen)
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	return &cursorCodec{keys: keys}, nil
}

func cursorScope(kind cursorKind, scope string) [8]byte {
	h := sha256.New()
	h.Write([]byte{byte(kind)})
	h.Write([]byte(scope))
	var out [8]byte
	copy(out[:], h.Sum(nil))
	return out
}

func (c *cursorCodec) mac(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)[:cursorMACLen]
}

// encode returns the signed cursor for pos in the list (kind, scope), to be
// continued in direction dir. It never fails for a pos produced from stored
// rows (S is a validated ID of at most MaxIDBytes).
func (c *cursorCodec) encode(kind cursorKind, scope string, dir Direction, pos cursorPos) string {
	shape, _ := kind.shape()
	buf := make([]byte, 0, cursorHeaderLen+16+2+len(pos.S)+cursorMACLen)
	buf = append(buf, cursorVersion, byte(kind), byte(dir))
	sc := cursorScope(kind, scope)
	buf = append(buf, sc[:]...)
	if shape.a {
		buf = binary.BigEndian.AppendUint64(buf, uint64(pos.A))
	}
	if shape.b {
		buf = binary.BigEndian.AppendUint64(buf, uint64(pos.B))
	}
	if shape.s {
		buf = binary.AppendUvarint(buf, uint64(len(pos.S)))
		buf = append(buf, pos.S...)
	}
	buf = append(buf, c.mac(c.keys[0], buf)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func errCursor(field, reason string) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidCursor, field, reason)
}

// decode verifies s and returns its direction and position. It returns
// ErrInvalidCursor (wrapped with the reason, naming field) when s is not a
// cursor this codec signed, or was signed for another kind of list or
// another scope. It never panics, whatever s holds.
func (c *cursorCodec) decode(field, s string, kind cursorKind, scope string) (Direction, cursorPos, error) {
	if len(s) > maxCursorLen {
		return 0, cursorPos{}, errCursor(field, "too long")
	}
	for i := 0; i < len(s); i++ {
		// The decoder would skip CR and LF; a cursor has one spelling only.
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return 0, cursorPos{}, errCursor(field, "not a cursor (bad encoding)")
		}
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return 0, cursorPos{}, errCursor(field, "not a cursor (bad encoding)")
	}
	if len(raw) < cursorHeaderLen+cursorMACLen {
		return 0, cursorPos{}, errCursor(field, "truncated")
	}
	payload, sig := raw[:len(raw)-cursorMACLen], raw[len(raw)-cursorMACLen:]
	ok := false
	for _, k := range c.keys {
		if hmac.Equal(sig, c.mac(k, payload)) {
			ok = true
			break
		}
	}
	if !ok {
		return 0, cursorPos{}, errCursor(field, "signature mismatch (altered, truncated or signed with another key)")
	}
	if payload[0] != cursorVersion {
		return 0, cursorPos{}, errCursor(field, "unknown version")
	}
	if cursorKind(payload[1]) != kind {
		return 0, cursorPos{}, errCursor(field, "issued for another kind of list")
	}
	if sc := cursorScope(kind, scope); !hmac.Equal(payload[3:11], sc[:]) {
		return 0, cursorPos{}, errCursor(field, "issued for another room, session or user")
	}
	dir := Direction(payload[2])
	if dir != Forward && dir != Backward {
		return 0, cursorPos{}, errCursor(field, "bad direction")
	}
	shape, ok := kind.shape()
	if !ok {
		return 0, cursorPos{}, errCursor(field, "unknown kind")
	}
	rest := payload[cursorHeaderLen:]
	var pos cursorPos
	if shape.a {
		if len(rest) < 8 {
			return 0, cursorPos{}, errCursor(field, "truncated key")
		}
		pos.A, rest = int64(binary.BigEndian.Uint64(rest)), rest[8:]
	}
	if shape.b {
		if len(rest) < 8 {
			return 0, cursorPos{}, errCursor(field, "truncated key")
		}
		pos.B, rest = int64(binary.BigEndian.Uint64(rest)), rest[8:]
	}
	if shape.s {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > MaxIDBytes || uint64(len(rest)-w) < n {
			return 0, cursorPos{}, errCursor(field, "truncated key")
		}
		pos.S, rest = string(rest[w:w+int(n)]), rest[w+int(n):]
	}
	if len(rest) != 0 {
		return 0, cursorPos{}, errCursor(field, "trailing bytes")
	}
	return dir, pos, nil
}
