package router

import (
	"context"
	"sync"
)

// session holds the max token seen during one request.
type session struct {
	mu  sync.Mutex
	tok Token
}

func (s *session) merge(t Token) {
	s.mu.Lock()
	s.tok = s.tok.Merge(t)
	s.mu.Unlock()
}

func (s *session) get() Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tok
}

type sessionKey struct{}

// WithSession returns a context carrying a new session seeded with t (for
// example a token decoded from the client's request; the zero token starts
// empty). Inside the session every non-Strong read is at least
// ReadYourWrites(SessionToken(ctx)), and every Write merges its token into
// it. The session is safe for concurrent use by the goroutines of one
// request. Calling WithSession again starts a new session seeded with t.
func WithSession(ctx context.Context, t Token) context.Context {
	return context.WithValue(ctx, sessionKey{}, &session{tok: t})
}

// SessionToken returns the max token of ctx's session: its seed merged with
// the token of every Write made with it. It is the zero Token when ctx has no
// session. Hand it back to the client (Token.Encode) so its next request,
// on any instance, sees its writes.
func SessionToken(ctx context.Context) Token {
	if s, ok := ctx.Value(sessionKey{}).(*session); ok {
		return s.get()
	}
	return Token{}
}

// mergeSession merges t into ctx's session, if any.
func mergeSession(ctx context.Context, t Token) {
	if s, ok := ctx.Value(sessionKey{}).(*session); ok {
		s.merge(t)
	}
}

// MergeSession merges t into ctx's session, if ctx has one (otherwise it
// does nothing), exactly as a Write's token is merged: later non-Strong reads
// in the session must cover t. A caching layer uses it to record the
// position a read was served at, so that later reads in the session never
// return older data (monotonic reads). Safe for concurrent use.
func MergeSession(ctx context.Context, t Token) {
	if !t.IsZero() {
		mergeSession(ctx, t)
	}
}
