package main

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// redactedPassword replaces passwords in anything this program prints.
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

// secrets returns the passwords found in dsns, to scrub them from error
// messages (which may quote a connection string back).
func secrets(dsns ...string) []string {
	var out []string
	for _, d := range dsns {
		if d == "" {
			continue
		}
		if cfg, err := pgconn.ParseConfig(d); err == nil && cfg.Password != "" {
			out = append(out, cfg.Password)
		}
	}
	return out
}

// scrub replaces every secret in s.
func scrub(s string, secrets []string) string {
	for _, p := range secrets {
		if len(p) >= 3 { // shorter strings would mangle ordinary words
			s = strings.ReplaceAll(s, p, redactedPassword)
		}
	}
	return s
}

// nodeName is host:port of dsn, for naming nodes in output.
func nodeName(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return RedactDSN(dsn)
	}
	return cfg.Host + ":" + itoa(int(cfg.Port))
}
