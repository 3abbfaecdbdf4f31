package main

import (
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/hsdal/hsdal/dal"
)

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
			s = strings.ReplaceAll(s, p, "xxxxx")
		}
	}
	return s
}

// nodeName is host:port of dsn, for naming nodes in output.
func nodeName(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return dal.RedactDSN(dsn)
	}
	return cfg.Host + ":" + itoa(int(cfg.Port))
}
