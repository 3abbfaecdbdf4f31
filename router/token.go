package router

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidToken reports a consistency token that is not one this package
// produced: bad encoding, wrong length, unknown version.
var ErrInvalidToken = errors.New("router: invalid consistency token")

// LSN is a PostgreSQL WAL position (pg_lsn) as a plain number. Zero means
// "no position".
type LSN uint64

// ParseLSN parses PostgreSQL's textual form "XXXXXXXX/XXXXXXXX".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("router: malformed LSN %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("router: malformed LSN %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("router: malformed LSN %q: %w", s, err)
	}
	return LSN(h<<32 | l), nil
}

// String formats the LSN the way PostgreSQL does.
func (l LSN) String() string {
	return fmt.Sprintf("%X/%X", uint64(l)>>32, uint64(l)&0xFFFFFFFF)
}

// Token is a consistency token: the WAL position of a commit, and the timeline
// it was made on. A read with ReadYourWrites(t) sees every write t covers.
// The zero Token covers nothing. Tokens are comparable values, safe to copy
// and to share between goroutines.
type Token struct {
	// LSN is the primary's WAL write position read right after the commit.
	LSN LSN
	// Timeline is the primary's timeline ID when the write committed; 0 when
	// unknown. A token from an older timeline than the current primary's is
	// never trusted to a replica (its writes may have been lost at failover).
	Timeline uint32
}

// IsZero reports whether t covers no write.
func (t Token) IsZero() bool { return t.LSN == 0 }

// Merge returns the token that covers both t and o: the later position, on the
// later timeline.
func (t Token) Merge(o Token) Token {
	if o.Timeline > t.Timeline || (o.Timeline == t.Timeline && o.LSN > t.LSN) {
		return o
	}
	return t
}

const tokenVersion = 1

// Encode returns a short opaque URL-safe form of t, for a homeserver to hand
// to a client and take back on a later request, on any instance. The zero
// token encodes to "".
func (t Token) Encode() string {
	if t.IsZero() {
		return ""
	}
	var b [13]byte
	b[0] = tokenVersion
	binary.BigEndian.PutUint32(b[1:5], t.Timeline)
	binary.BigEndian.PutUint64(b[5:13], uint64(t.LSN))
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// DecodeToken parses a token made by Encode. "" decodes to the zero token.
// Anything else that Encode could not have produced returns ErrInvalidToken.
func DecodeToken(s string) (Token, error) {
	if s == "" {
		return Token{}, nil
	}
	if len(s) != 18 {
		return Token{}, fmt.Errorf("%w: length %d", ErrInvalidToken, len(s))
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) != 13 {
		return Token{}, fmt.Errorf("%w: not base64url", ErrInvalidToken)
	}
	if b[0] != tokenVersion {
		return Token{}, fmt.Errorf("%w: version %d", ErrInvalidToken, b[0])
	}
	t := Token{
		Timeline: binary.BigEndian.Uint32(b[1:5]),
		LSN:      LSN(binary.BigEndian.Uint64(b[5:13])),
	}
	if t.IsZero() {
		return Token{}, fmt.Errorf("%w: zero position", ErrInvalidToken)
	}
	return t, nil
}

// Level names a consistency level.
type Level uint8

// The consistency levels, from the strongest.
const (
	// LevelDefault is the zero Level: bounded staleness with the router's
	// configured default bound.
	LevelDefault Level = iota
	// LevelStrong reads on the primary, bypassing any cache.
	LevelStrong
	// LevelReadYourWrites reads where every write its token covers is visible.
	LevelReadYourWrites
	// LevelBoundedStaleness reads data at most MaxStaleness old.
	LevelBoundedStaleness
)

// Consistency is what a read requires of the node (or cache entry) that
// serves it. The zero value is bounded staleness with the router's default
// bound. Consistency values are small, comparable and safe to copy.
type Consistency struct {
	Level Level
	// Token is the write the read must see (LevelReadYourWrites).
	Token Token
	// MaxStaleness is the bound (LevelBoundedStaleness); <= 0 means the
	// router's default.
	MaxStaleness time.Duration
}

// Strong requires the primary: the read sees every acknowledged write.
func Strong() Consistency { return Consistency{Level: LevelStrong} }

// ReadYourWrites requires a node that has replayed t (or the primary). A zero
// token degrades to the default bounded staleness.
func ReadYourWrites(t Token) Consistency {
	if t.IsZero() {
		return Consistency{}
	}
	return Consistency{Level: LevelReadYourWrites, Token: t}
}

// BoundedStaleness requires data at most d old; d <= 0 means the router's
// configured default.
func BoundedStaleness(d time.Duration) Consistency {
	return Consistency{Level: LevelBoundedStaleness, MaxStaleness: d}
}

// String describes c for logs and span attributes; it never includes more than
// the token's position.
func (c Consistency) String() string {
	switch c.Level {
	case LevelStrong:
		return "strong"
	case LevelReadYourWrites:
		return "read-your-writes(" + c.Token.LSN.String() + ")"
	case LevelBoundedStaleness:
		if c.MaxStaleness > 0 {
			return "bounded-staleness(" + c.MaxStaleness.String() + ")"
		}
	}
	return "bounded-staleness(default)"
}
