package dal

import (
	"net/url"
	"regexp"
	"strings"
)

// redactedPassword replaces passwords in anything hsdal prints.
const redactedPassword = "xxxxx"

// kvPassword matches password=... in a key/value connection string: a
// single-quoted value (backslash or doubled-quote escapes inside) or a bare one.
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.|'')*'|[^\s]*)`)

// RedactDSN returns dsn with its password replaced by "xxxxx", for URL
// (postgres://user:pass@host/db?password=…) and key/value
// (host=… password=…) forms alike. Anything it cannot parse is returned
// with every password=… value redacted, never verbatim.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err == nil {
			if u.User != nil {
				if _, has := u.User.Password(); has {
					u.User = url.UserPassword(u.User.Username(), redactedPassword)
				}
			}
			q := u.Query()
			if q.Has("password") {
				q.Set("password", redactedPassword)
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		// Unparseable URL: drop everything between "://" and "@".
		scheme, rest, _ := strings.Cut(dsn, "://")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = redactedPassword + rest[at:]
		}
		return kvPassword.ReplaceAllString(scheme+"://"+rest, "${1}"+redactedPassword)
	}
	return kvPassword.ReplaceAllString(dsn, "${1}"+redactedPassword)
}
