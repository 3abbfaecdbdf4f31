package main

import (
	"strings"
	"testing"
)

func TestRedactDSN(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"url with password", "postgres://hsdal:s3cret@db:5432/hsdal?sslmode=disable",
			"postgres://hsdal:xxxxx@db:5432/hsdal?sslmode=disable"},
		{"postgresql scheme", "postgresql://u:p%40ss@h/db", "postgresql://u:xxxxx@h/db"},
		{"url without password", "postgres://hsdal@db/hsdal", "postgres://hsdal@db/hsdal"},
		{"password in query", "postgres://db/hsdal?user=u&password=s3cret", "postgres://db/hsdal?password=xxxxx&user=u"},
		{"key value", "host=db user=hsdal password=s3cret dbname=hsdal", "host=db user=hsdal password=xxxxx dbname=hsdal"},
		{"key value quoted", "host=db password='s3 cr\\'et' dbname=x", "host=db password=xxxxx dbname=x"},
		{"key value spaced", "host=db password = s3cret", "host=db password = xxxxx"},
		{"key value upper case", "PASSWORD=s3cret host=db", "PASSWORD=xxxxx host=db"},
		{"no password", "host=db user=hsdal", "host=db user=hsdal"},
		{"unparseable url", "postgres://u:s3cret@[bad/db", "postgres://xxxxx@[bad/db"},
		{"empty", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := RedactDSN(tc.in)
			if got != tc.want {
				t.Errorf("RedactDSN(%q) = %q, want %q", tc.in, got, tc.want)
			}
			for _, secret := range []string{"s3cret", "s3 cr", "p%40ss", "p@ss"} {
				if strings.Contains(got, secret) {
					t.Errorf("RedactDSN(%q) = %q leaks %q", tc.in, got, secret)
				}
			}
		})
	}
}

func TestScrubSecrets(t *testing.T) {
	s := secrets("postgres://u:longsecret@h/db", "host=h password=other1", "", "not a dsn ::")
	msg := scrub("failed: longsecret and other1 but not hsdal", s)
	if strings.Contains(msg, "longsecret") || strings.Contains(msg, "other1") || !strings.Contains(msg, "hsdal") {
		t.Errorf("scrub = %q (secrets %v)", msg, len(s))
	}
}

func TestNodeName(t *testing.T) {
	if got := nodeName("postgres://u:p@127.0.0.1:5433/db"); got != "127.0.0.1:5433" {
		t.Errorf("nodeName = %q", got)
	}
	if got := nodeName("host=db port=6000 password=zz"); got != "db:6000" {
		t.Errorf("nodeName = %q", got)
	}
}
