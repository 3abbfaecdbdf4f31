package repos

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits applied by the validators. Every rejected value yields an
// *ArgumentError (errors.Is(err, ErrInvalidArgument)) before any SQL runs.
const (
	// MaxIDBytes bounds every Matrix identifier (user, room, event, device
	// IDs, aliases, server names), as the Matrix specification does.
	MaxIDBytes = 255
	// MaxServerNameBytes bounds a server name (host plus optional port).
	MaxServerNameBytes = 255
	// MaxDisplayNameBytes bounds a user's display name.
	MaxDisplayNameBytes = 256
	// MaxAvatarURLBytes bounds a user's avatar URL.
	MaxAvatarURLBytes = 1024
	// MaxEventTypeBytes bounds an event type such as "m.room.message".
	MaxEventTypeBytes = 255
	// MaxStateKeyBytes bounds an event's state key.
	MaxStateKeyBytes = 255
	// MaxContentBytes bounds event and private-message content; it is the
	// Matrix limit for a whole PDU (65 536 bytes).
	MaxContentBytes = 65536
	// MaxTypeFilters bounds the number of event types in one page filter.
	MaxTypeFilters = 50
	// MaxBatchIDs bounds the number of IDs in one batch lookup.
	MaxBatchIDs = 1000
)

// ValidateUserID reports whether id is a well-formed Matrix user ID
// "@localpart:server_name" that this library accepts for reads and
// references (memberships, senders, lookups).
//
// Localparts are checked against the spec's historical grammar: any printable
// ASCII character except ':' (U+0021..U+007E minus ':'), because the
// specification requires servers to keep accepting user IDs created before
// the character set was narrowed (e.g. "@Alice:example.org" from older
// servers, arriving over federation). New registrations are held to the
// current grammar by ValidateNewUserID. The whole ID is at most 255 bytes.
// The error is an *ArgumentError for field "user_id".
func ValidateUserID(id string) error { return checkUserID("user_id", id, false) }

// ValidateNewUserID is ValidateUserID with the current (strict) localpart
// grammar that new registrations must follow: only a-z, 0-9 and ". _ = - / +".
// Users.CreateUser applies it.
func ValidateNewUserID(id string) error { return checkUserID("user_id", id, true) }

// ValidateRoomID reports whether id is a well-formed room ID "!opaque:server":
// the opaque part is printable ASCII without ':', the server part a valid
// server name, at most 255 bytes in all. (Room version 12's server-less
// "!hash" room IDs are not supported: the schema requires the ':server'
// part.) The error is an *ArgumentError for field "room_id".
func ValidateRoomID(id string) error { return checkRoomID("room_id", id) }

// ValidateEventID reports whether id is a well-formed event ID: "$opaque:server"
// (room versions 1 and 2) or "$" followed by a 43-character unpadded base64
// reference hash (room version 3 uses the standard alphabet, 4 and later the
// URL-safe one). At most 255 bytes. The error is an *ArgumentError for field
// "event_id".
func ValidateEventID(id string) error { return checkEventID("event_id", id) }

// ValidateRoomAlias reports whether alias is a well-formed room alias
// "#localpart:server" (localpart printable ASCII without ':'), at most 255
// bytes. The error is an *ArgumentError for field "alias".
func ValidateRoomAlias(alias string) error { return checkSigilID("alias", alias, '#') }

// ValidateDeviceID reports whether id is an acceptable device ID. Device IDs
// are opaque in Matrix; this library requires 1..255 bytes of valid UTF-8
// without control characters (so no NUL). The error is an *ArgumentError for
// field "device_id".
func ValidateDeviceID(id string) error { return checkOpaque("device_id", id, MaxIDBytes) }

// ValidateServerName reports whether name follows the spec's server-name
// grammar: a DNS name (letters, digits, '-', '.'), an IPv4 literal, or an IPv6
// literal in brackets, optionally followed by ":port" (1..65535). At most 255
// bytes. The error is an *ArgumentError for field "server_name".
func ValidateServerName(name string) error { return checkServerName("server_name", name) }

func checkUserID(field, id string, strict bool) error {
	if err := checkIDEnvelope(field, id, '@'); err != nil {
		return err
	}
	local, server, ok := strings.Cut(id[1:], ":")
	if !ok {
		return invalid(field, "missing ':server_name'")
	}
	if local == "" {
		return invalid(field, "empty localpart")
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		if strict && !isStrictLocalpartChar(c) {
			return invalid(field, "localpart may only contain a-z, 0-9 and . _ = - / + (byte %d)", i+1)
		}
		if !isHistoricalLocalpartChar(c) {
			return invalid(field, "localpart contains a character outside printable ASCII (byte %d)", i+1)
		}
	}
	return checkServerNameIn(field, server)
}

func checkRoomID(field, id string) error { return checkSigilID(field, id, '!') }

func checkEventID(field, id string) error {
	if err := checkIDEnvelope(field, id, '$'); err != nil {
		return err
	}
	if !strings.Contains(id, ":") {
		if !isBase64Hash(id[1:], true) {
			return invalid(field, "must be '$opaque:server' or '$' followed by a 43-character base64 hash")
		}
		return nil
	}
	return checkOpaqueAndServer(field, id[1:])
}

func checkSigilID(field, id string, sigil byte) error {
	if err := checkIDEnvelope(field, id, sigil); err != nil {
		return err
	}
	return checkOpaqueAndServer(field, id[1:])
}

// checkIDEnvelope checks what every sigil identifier shares: length, sigil.
func checkIDEnvelope(field, id string, sigil byte) error {
	switch {
	case id == "":
		return invalid(field, "empty")
	case len(id) > MaxIDBytes:
		return invalid(field, "longer than %d bytes", MaxIDBytes)
	case id[0] != sigil:
		return invalid(field, "must start with '%c'", sigil)
	}
	return nil
}

// checkOpaqueAndServer checks "opaque:server" (without the sigil).
func checkOpaqueAndServer(field, s string) error {
	local, server, ok := strings.Cut(s, ":")
	if !ok {
		return invalid(field, "missing ':server_name'")
	}
	if local == "" {
		return invalid(field, "empty localpart")
	}
	for i := 0; i < len(local); i++ {
		if !isHistoricalLocalpartChar(local[i]) {
			return invalid(field, "localpart contains a character outside printable ASCII (byte %d)", i+2)
		}
	}
	return checkServerNameIn(field, server)
}

func checkServerName(field, name string) error {
	if len(name) > MaxServerNameBytes {
		return invalid(field, "longer than %d bytes", MaxServerNameBytes)
	}
	return checkServerNameIn(field, name)
}

// checkServerNameIn validates a server name inside an identifier; the error
// names the identifier's field.
func checkServerNameIn(field, name string) error {
	if name == "" {
		return invalid(field, "empty server name")
	}
	host, port := name, ""
	if name[0] == '[' {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return invalid(field, "unterminated IPv6 literal in server name")
		}
		host, port = name[:end+1], name[end+1:]
		if port != "" {
			if port[0] != ':' {
				return invalid(field, "unexpected characters after IPv6 literal in server name")
			}
			port = port[1:]
			if port == "" {
				return invalid(field, "empty port in server name")
			}
		}
		lit := host[1 : len(host)-1]
		if len(lit) < 2 || len(lit) > 45 {
			return invalid(field, "IPv6 literal must be 2..45 characters")
		}
		for i := 0; i < len(lit); i++ {
			if !isIPv6Char(lit[i]) {
				return invalid(field, "IPv6 literal may only contain hex digits, ':' and '.'")
			}
		}
		a, err := netip.ParseAddr(lit)
		if err != nil || !a.Is6() {
			return invalid(field, "malformed IPv6 literal in server name")
		}
	} else if h, p, ok := strings.Cut(name, ":"); ok {
		host, port = h, p
		if port == "" {
			return invalid(field, "empty port in server name")
		}
	}
	if port != "" {
		if len(port) > 5 {
			return invalid(field, "port longer than 5 digits in server name")
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return invalid(field, "port must be decimal digits in server name")
			}
		}
		n, _ := strconv.Atoi(port) // at most 5 digits: cannot overflow
		if n < 1 || n > 65535 {
			return invalid(field, "port must be 1..65535 in server name")
		}
	}
	if host == "" {
		return invalid(field, "empty host in server name")
	}
	if host[0] == '[' {
		return nil
	}
	if looksLikeIPv4(host) {
		if _, err := netip.ParseAddr(host); err != nil {
			return invalid(field, "malformed IPv4 literal in server name")
		}
		return nil
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return invalid(field, "server name may only contain letters, digits, '-' and '.'")
		}
	}
	return nil
}

// looksLikeIPv4 reports whether s is four dot-separated groups of 1..3
// digits: the spec's IPv4address production. Such a host must then also be
// a real address (each group ≤ 255).
func looksLikeIPv4(s string) bool {
	groups := strings.Split(s, ".")
	if len(groups) != 4 {
		return false
	}
	for _, g := range groups {
		if len(g) < 1 || len(g) > 3 {
			return false
		}
		for i := 0; i < len(g); i++ {
			if g[i] < '0' || g[i] > '9' {
				return false
			}
		}
	}
	return true
}

func isIPv6Char(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.'
}

// isStrictLocalpartChar is the current user_id_char production.
func isStrictLocalpartChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == '=' || c == '-' || c == '/' || c == '+'
}

// isHistoricalLocalpartChar is the spec's extended_user_id_char:
// %x21-39 / %x3B-7E (printable ASCII except ':').
func isHistoricalLocalpartChar(c byte) bool {
	return c >= 0x21 && c <= 0x7E && c != ':'
}

// isBase64Hash reports whether s is 43 characters of unpadded base64 in one
// alphabet: the URL-safe one, or (if allowStd) the standard one.
func isBase64Hash(s string, allowStd bool) bool {
	if len(s) != 43 {
		return false
	}
	std, url := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-' || c == '_':
			url = true
		case c == '+' || c == '/':
			std = true
		default:
			return false
		}
	}
	if std && (url || !allowStd) {
		return false
	}
	return true
}

// checkOpaque validates an opaque string identifier: 1..max bytes of valid
// UTF-8 without any control character.
func checkOpaque(field, s string, max int) error {
	if s == "" {
		return invalid(field, "empty")
	}
	return checkString(field, s, max, false)
}

// checkText validates free text: at most max bytes of valid UTF-8 with no
// control characters other than tab, CR and LF (in particular no NUL, which
// PostgreSQL cannot store in text). The empty string passes.
func checkText(field, s string, max int) error { return checkString(field, s, max, true) }

func checkString(field, s string, max int, allowSpaceControls bool) error {
	if len(s) > max {
		return invalid(field, "longer than %d bytes", max)
	}
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && w <= 1:
			return invalid(field, "not valid UTF-8 (byte %d)", i+1)
		case r == 0:
			return invalid(field, "contains a NUL character (byte %d)", i+1)
		case allowSpaceControls && (r == '\t' || r == '\n' || r == '\r'):
		case r < 0x20, r == 0x7F, r >= 0x80 && r < 0xA0:
			return invalid(field, "contains a control character (byte %d)", i+1)
		}
		i += w
	}
	return nil
}

// checkJSONObject validates event or message content: a JSON object of at
// most max bytes, valid UTF-8, without the escape \u0000 or unpaired
// surrogate escapes (PostgreSQL's jsonb cannot store them), whose numbers
// fit a float64 (jsonb would store 1e100000 as 100 001 digits: a 10-byte
// input must not become 100 kB; and most clients could not decode it).
func checkJSONObject(field string, b []byte, max int) error {
	switch {
	case len(b) == 0:
		return invalid(field, "empty")
	case len(b) > max:
		return invalid(field, "longer than %d bytes", max)
	case !utf8.Valid(b):
		return invalid(field, "not valid UTF-8")
	case !json.Valid(b):
		return invalid(field, "not valid JSON")
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); t[0] != '{' {
		return invalid(field, "not a JSON object")
	}
	if err := checkJSONNumbers(b); err != nil {
		return invalid(field, "%v", err)
	}
	// In valid JSON a backslash only starts an escape inside a string.
	// jsonb also refuses \u0000 and unpaired UTF-16 surrogate escapes.
	pendingHigh := false
	for i := 0; i < len(b); i++ {
		if b[i] != '\\' {
			if pendingHigh {
				return invalid(field, "contains an unpaired UTF-16 surrogate escape")
			}
			continue
		}
		if b[i+1] != 'u' { // valid JSON: an escape always has its character
			if pendingHigh {
				return invalid(field, "contains an unpaired UTF-16 surrogate escape")
			}
			i++
			continue
		}
		v, _ := strconv.ParseUint(string(b[i+2:i+6]), 16, 16) // valid JSON: 4 hex digits
		switch {
		case v == 0:
			return invalid(field, "contains the escape \\u0000 (NUL)")
		case v >= 0xD800 && v <= 0xDBFF:
			if pendingHigh {
				return invalid(field, "contains an unpaired UTF-16 surrogate escape")
			}
			pendingHigh = true
		case v >= 0xDC00 && v <= 0xDFFF:
			if !pendingHigh {
				return invalid(field, "contains an unpaired UTF-16 surrogate escape")
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return invalid(field, "contains an unpaired UTF-16 surrogate escape")
			}
		}
		i += 5
	}
	if pendingHigh {
		return invalid(field, "contains an unpaired UTF-16 surrogate escape")
	}
	return nil
}

// checkJSONNumbers reports a number of valid JSON b that does not fit a
// float64.
func checkJSONNumbers(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF; b was already checked valid
		}
		if n, ok := tok.(json.Number); ok {
			if _, err := strconv.ParseFloat(string(n), 64); err != nil {
				return fmt.Errorf("number %.20s… out of range", n)
			}
		}
	}
}
