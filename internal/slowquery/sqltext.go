package slowquery

import (
	"strings"
	"unicode/utf8"
)

// Normalize returns sql in a form fit for logs and metrics: runs of
// whitespace collapsed to one space, comments removed, and — unless
// keepLiterals is set — every string literal (including E” and
// dollar-quoted ones) and numeric constant replaced with "?", so values an
// application inlined into its SQL text do not leak. Placeholders ($1),
// identifiers and quoted identifiers are kept. The result is cut to at most
// maxLen bytes (on a rune boundary, with "…" appended) when maxLen > 0.
//
// Normalize never fails: unterminated literals or comments swallow the rest
// of the text, which is the safe direction.
func Normalize(sql string, keepLiterals bool, maxLen int) string {
	var b strings.Builder
	b.Grow(len(sql))
	space := false // a space is pending
	emit := func(s string) {
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteString(s)
	}
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			space = true
			i++
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			space = true
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			i = skipBlockComment(sql, i)
			space = true
		case c == '"':
			j := skipQuoted(sql, i, '"', false)
			emit(sql[i:j])
			i = j
		case c == '\'' || ((c == 'E' || c == 'e') && i+1 < len(sql) && sql[i+1] == '\'' && !identBefore(sql, i)):
			start := i
			backslash := c != '\''
			if backslash {
				i++
			}
			j := skipQuoted(sql, i, '\'', backslash)
			if keepLiterals {
				emit(sql[start:j])
			} else {
				emit("?")
			}
			i = j
		case c == '$' && !identBefore(sql, i):
			if j, ok := dollarTag(sql, i); ok {
				tag := sql[i:j]
				end := strings.Index(sql[j:], tag)
				k := len(sql)
				if end >= 0 {
					k = j + end + len(tag)
				}
				if keepLiterals {
					emit(sql[i:k])
				} else {
					emit("?")
				}
				i = k
				continue
			}
			// A placeholder $n (or a lone $): keep it.
			j := i + 1
			for j < len(sql) && isDigit(sql[j]) {
				j++
			}
			emit(sql[i:j])
			i = j
		case (isDigit(c) || (c == '.' && i+1 < len(sql) && isDigit(sql[i+1]))) && !identBefore(sql, i):
			j := skipNumber(sql, i)
			if keepLiterals {
				emit(sql[i:j])
			} else {
				emit("?")
			}
			i = j
		default:
			_, n := utf8.DecodeRuneInString(sql[i:])
			emit(sql[i : i+n])
			i += n
		}
	}
	out := b.String()
	if maxLen > 0 && len(out) > maxLen {
		cut := maxLen
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = out[:cut] + "…"
	}
	return out
}

// identBefore reports whether sql[i] continues an identifier (so "t1" or
// "x$2" are not literals).
func identBefore(sql string, i int) bool {
	if i == 0 {
		return false
	}
	p := sql[i-1]
	return p == '_' || p == '$' || isDigit(p) || (p|0x20 >= 'a' && p|0x20 <= 'z') || p >= 0x80
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// skipQuoted returns the index after the literal or quoted identifier that
// starts with q at sql[i]. A doubled quote is an escaped quote; with
// backslash, \x escapes too.
func skipQuoted(sql string, i int, q byte, backslash bool) int {
	i++ // opening quote
	for i < len(sql) {
		switch {
		case backslash && sql[i] == '\\':
			i += 2
		case sql[i] == q:
			if i+1 < len(sql) && sql[i+1] == q {
				i += 2
				continue
			}
			return i + 1
		default:
			i++
		}
	}
	return len(sql)
}

// skipBlockComment returns the index after a (possibly nested) /* */ comment.
func skipBlockComment(sql string, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case strings.HasPrefix(sql[i:], "/*"):
			depth++
			i += 2
		case strings.HasPrefix(sql[i:], "*/"):
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return len(sql)
}

// dollarTag recognises the opening tag of a dollar-quoted string ($$ or
// $tag$) at sql[i] and returns the index after it.
func dollarTag(sql string, i int) (int, bool) {
	j := i + 1
	for j < len(sql) {
		c := sql[j]
		switch {
		case c == '$':
			return j + 1, true
		case c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80 || (j > i+1 && isDigit(c)):
			j++
		default:
			return 0, false
		}
	}
	return 0, false
}

// skipNumber returns the index after a numeric constant (digits, a point,
// an exponent, and PostgreSQL 15's underscores or 0x/0o/0b prefixes are
// consumed generously: anything alphanumeric that follows belongs to it).
func skipNumber(sql string, i int) int {
	for i < len(sql) {
		c := sql[i]
		switch {
		case isDigit(c) || c == '.' || c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z'):
			i++
		case (c == '+' || c == '-') && i > 0 && sql[i-1]|0x20 == 'e':
			i++
		default:
			return i
		}
	}
	return i
}
