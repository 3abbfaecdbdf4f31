package slowquery_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/internal/slowquery"
)

func TestNormalize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		keep bool
		max  int
		want string
	}{
		{name: "whitespace collapsed", in: "SELECT  a,\n\t b\nFROM t", want: "SELECT a, b FROM t"},
		{name: "placeholders kept", in: "SELECT * FROM t WHERE id = $1 AND x = $12", want: "SELECT * FROM t WHERE id = $1 AND x = $12"},
		{name: "string literal masked", in: "SELECT * FROM users WHERE user_id = '@alice:hs'", want: "SELECT * FROM users WHERE user_id = ?"},
		{name: "escaped quote inside literal", in: "SELECT 'it''s secret', 1", want: "SELECT ?, ?"},
		{name: "E string with backslash", in: `SELECT E'a\'b' AS x`, want: "SELECT ? AS x"},
		{name: "dollar quoted", in: "SELECT $$pass word$$, $tag$x$y$tag$", want: "SELECT ?, ?"},
		{name: "numbers masked", in: "SELECT 42, 3.14, .5, 1e-3 LIMIT 10", want: "SELECT ?, ?, ?, ? LIMIT ?"},
		{name: "digits in identifiers kept", in: "SELECT t1.c2 FROM t1", want: "SELECT t1.c2 FROM t1"},
		{name: "quoted identifier kept", in: `SELECT "Weird ""Name""" FROM "t"`, want: `SELECT "Weird ""Name""" FROM "t"`},
		{name: "line comment removed", in: "SELECT 1 -- password=hunter2\nFROM t", want: "SELECT ? FROM t"},
		{name: "nested block comment removed", in: "SELECT /* a /* b */ c */ x", want: "SELECT x"},
		{name: "keep literals", in: "SELECT 'x', 5", keep: true, want: "SELECT 'x', 5"},
		{name: "unterminated literal swallowed", in: "SELECT 'oops", want: "SELECT ?"},
		{name: "truncated on rune boundary", in: "SELECT ééé", max: 9, want: "SELECT é…"},
		{name: "type cast kept", in: "SELECT '0/0'::pg_lsn", want: "SELECT ?::pg_lsn"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := slowquery.Normalize(tc.in, tc.keep, tc.max); got != tc.want {
				t.Errorf("Normalize(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestOperation(t *testing.T) {
	tests := map[string]string{
		"select 1":                     "SELECT",
		"  /* c */ insert into t":      "INSERT",
		"WITH x AS (SELECT 1) SELECT":  "WITH",
		"(SELECT 1) UNION (SELECT 2)":  "SELECT",
		"":                             "OTHER",
		"VACUUM (ANALYZE) room_events": "VACUUM",
		"frobnicate everything":        "OTHER",
		"-- only a comment":            "OTHER",
		"42":                           "OTHER",
	}
	for in, want := range tests {
		if got := slowquery.Operation(in); got != want {
			t.Errorf("Operation(%q) = %q, want %q", in, got, want)
		}
	}
}

func BenchmarkNormalize(b *testing.B) {
	b.ReportAllocs()
	q := "SELECT event_id, content FROM room_events WHERE room_id = $1 AND stream_ordering < $2 AND type = 'm.room.message' ORDER BY stream_ordering DESC LIMIT 50"
	for b.Loop() {
		slowquery.Normalize(q, false, 2048)
	}
}

func BenchmarkTracerFastPath(b *testing.B) {
	b.ReportAllocs()
	tr, err := slowquery.New(slowquery.Config{})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := pgx.TraceQueryStartData{SQL: "SELECT user_id, displayname FROM users WHERE user_id = $1"}
	end := pgx.TraceQueryEndData{}
	for b.Loop() {
		qctx := tr.TraceQueryStart(ctx, nil, start)
		tr.TraceQueryEnd(qctx, nil, end)
	}
}
