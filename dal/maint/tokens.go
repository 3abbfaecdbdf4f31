package maint

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Expired-token cleanup. The tables have no index on expires_ts (the hot
// lookup is by hash), so rather than one sequential scan per batch the job
// walks each table once along its primary key in chunks.
const (
	deleteExpiredAccessTokens = `DELETE FROM access_tokens t USING c
	WHERE t.id = c.id AND t.expires_ts < $2`

	// A refresh token is kept while an access token minted with it is still
	// live and unexpired: deleting the refresh token would cascade to it.
	deleteExpiredRefreshTokens = `DELETE FROM refresh_tokens t USING c
	WHERE t.id = c.id AND t.expires_ts < $2
	  AND NOT EXISTS (SELECT 1 FROM access_tokens a
	                  WHERE a.refresh_token_id = t.id AND a.deleted_at IS NULL
	                    AND (a.expires_ts IS NULL OR a.expires_ts >= $2))`
)

// expiredTokens deletes access tokens, then refresh tokens, whose expires_ts
// is before now - TokenGrace. Tokens without expiry (NULL) are never
// touched.
func (m *Maintainer) expiredTokens(ctx context.Context, conn *pgx.Conn, res *Result) error {
	cutoff := m.cfg.Now().Add(-m.cfg.TokenGrace)
	ms := cutoff.UnixMilli()
	detail := "expires_ts before " + cutoff.UTC().Format(time.RFC3339)
	for _, s := range []struct{ table, dml string }{
		{"access_tokens", deleteExpiredAccessTokens},
		{"refresh_tokens", deleteExpiredRefreshTokens},
	} {
		n, err := m.walk(ctx, conn, s.table, []string{"id"}, s.dml, ms)
		if err != nil {
			return fmt.Errorf("delete expired %w", err)
		}
		res.Actions = append(res.Actions, Action{Kind: ActionDeleted, Table: s.table, Rows: n, Detail: detail})
	}
	return nil
}
