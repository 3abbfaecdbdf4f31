package router_test

import (
	"errors"
	"testing"

	"github.com/hsdal/hsdal/router"
)

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want router.LSN
		ok   bool
	}{
		{"0/0", 0, true},
		{"0/16B3748", 0x16B3748, true},
		{"1A/FF000028", 0x1AFF000028, true},
		{"FFFFFFFF/FFFFFFFF", 0xFFFFFFFFFFFFFFFF, true},
		{"", 0, false},
		{"16B3748", 0, false},
		{"0/", 0, false},
		{"/1", 0, false},
		{"G/1", 0, false},
		{"1/123456789", 0, false},
	} {
		got, err := router.ParseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != tc.in && tc.in != "0/0" {
			t.Errorf("LSN(%q).String() = %q", tc.in, got.String())
		}
	}
}

func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []router.Token{
		{LSN: 1, Timeline: 1},
		{LSN: 0x1AFF000028, Timeline: 7},
		{LSN: ^router.LSN(0), Timeline: ^uint32(0)},
	} {
		s := tok.Encode()
		got, err := router.DecodeToken(s)
		if err != nil || got != tok {
			t.Errorf("DecodeToken(Encode(%+v)=%q) = %+v, %v", tok, s, got, err)
		}
	}
	if s := (router.Token{}).Encode(); s != "" {
		t.Errorf("zero token encodes to %q, want empty", s)
	}
	if got, err := router.DecodeToken(""); err != nil || !got.IsZero() {
		t.Errorf("DecodeToken(\"\") = %+v, %v", got, err)
	}
}

func TestDecodeTokenRejectsGarbage(t *testing.T) {
	valid := router.Token{LSN: 42, Timeline: 1}.Encode()
	for _, s := range []string{
		"x", valid[:17], valid + "A", "!!!!!!!!!!!!!!!!!!",
		"AgAAAAEAAAAAAAAAKg", // version 2
		"AQAAAAEAAAAAAAAAAA", // zero position
	} {
		if _, err := router.DecodeToken(s); !errors.Is(err, router.ErrInvalidToken) {
			t.Errorf("DecodeToken(%q) error = %v, want ErrInvalidToken", s, err)
		}
	}
}

func FuzzDecodeToken(f *testing.F) {
	f.Add(router.Token{LSN: 42, Timeline: 1}.Encode())
	f.Add("")
	f.Add("AQAAAAEAAAAAAAAAKg")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := router.DecodeToken(s)
		if err != nil {
			return
		}
		if got, err := router.DecodeToken(tok.Encode()); err != nil || got != tok {
			t.Fatalf("re-decode of %q: %+v, %v", s, got, err)
		}
	})
}

func TestTokenMerge(t *testing.T) {
	a := router.Token{LSN: 100, Timeline: 1}
	b := router.Token{LSN: 50, Timeline: 2}
	c := router.Token{LSN: 200, Timeline: 1}
	if got := a.Merge(b); got != b {
		t.Errorf("later timeline must win: %+v", got)
	}
	if got := a.Merge(c); got != c {
		t.Errorf("later LSN must win: %+v", got)
	}
	if got := c.Merge(a); got != c {
		t.Errorf("merge must be symmetric: %+v", got)
	}
	if got := (router.Token{}).Merge(a); got != a {
		t.Errorf("zero merge: %+v", got)
	}
}
