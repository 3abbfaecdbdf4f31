package main

import (
	"strings"
	"testing"
)

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
