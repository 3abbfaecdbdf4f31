package repos_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

func TestDevices(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")

	d := must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "PHONE", DisplayName: ptr("Phone"), IP: "10.0.0.1"}))
	if d.DeviceID != "PHONE" || *d.DisplayName != "Phone" || *d.LastSeenIP != "10.0.0.1" || *d.LastSeenTS != f.clock.UnixMilli() {
		t.Fatalf("upserted %+v", d)
	}
	t.Run("upsert keeps fields not given", func(t *testing.T) {
		d2 := must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "PHONE"}))
		if *d2.DisplayName != "Phone" || *d2.LastSeenIP != "10.0.0.1" || d2.CreatedTS != d.CreatedTS {
			t.Fatalf("re-upserted %+v", d2)
		}
	})
	t.Run("unknown or deleted user", func(t *testing.T) {
		_, _, err := f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: uid("ghost"), DeviceID: "X"})
		wantErr(t, err, repos.ErrNotFound)
		gone := mustUser(t, f, ctx, "gone")
		mustTok(t)(f.Users.Deactivate(ctx, gone))
		_, _, err = f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: gone, DeviceID: "X"})
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("get", func(t *testing.T) {
		got, err := f.Devices.GetDevice(ctx, alice, "PHONE")
		if err != nil || got.DeviceID != "PHONE" {
			t.Fatalf("got %+v, %v", got, err)
		}
		_, err = f.Devices.GetDevice(ctx, alice, "NOPE")
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("list pages", func(t *testing.T) {
		bob := mustUser(t, f, ctx, "bob")
		want := []string{"A", "B", "C", "D", "E"}
		for _, id := range []string{"C", "A", "E", "B", "D"} {
			must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: bob, DeviceID: id}))
		}
		var got []string
		req := repos.DevicePageRequest{UserID: bob, Limit: 2}
		for {
			pg, err := f.Devices.ListDevices(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range pg.Items {
				got = append(got, x.DeviceID)
			}
			if pg.Next == "" {
				break
			}
			req.From = pg.Next
		}
		if strings.Join(got, "") != strings.Join(want, "") {
			t.Fatalf("forward %v", got)
		}
		pg, err := f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: bob, Dir: repos.Backward, Limit: 3})
		if err != nil || len(pg.Items) != 3 || pg.Items[0].DeviceID != "E" || pg.Next == "" {
			t.Fatalf("backward %+v, %v", pg, err)
		}
		pg, err = f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: bob, From: pg.Next})
		if err != nil || len(pg.Items) != 2 || pg.Items[0].DeviceID != "B" || pg.Next != "" {
			t.Fatalf("backward page 2 %+v, %v", pg, err)
		}
		_, err = f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: alice, From: pg.Prev})
		wantErr(t, err, repos.ErrInvalidCursor) // another user's cursor
	})
	t.Run("touch", func(t *testing.T) {
		carol := mustUser(t, f, ctx, "carol")
		dev := must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: carol, DeviceID: "D", IP: "1.1.1.1"}))
		calls := f.db.calls.Load()
		touch := repos.DeviceTouch{UserID: carol, DeviceID: "D", IP: "1.1.1.1", KnownLastSeenTS: dev.LastSeenTS, KnownLastSeenIP: dev.LastSeenIP}
		wrote, _, err := f.Devices.TouchDevice(ctx, touch)
		if err != nil || wrote || f.db.calls.Load() != calls {
			t.Fatalf("fresh touch: wrote=%v err=%v, db calls %d", wrote, err, f.db.calls.Load()-calls)
		}
		// Unknown to the caller but fresh in the database: one conditional
		// UPDATE that writes nothing.
		wrote, _, err = f.Devices.TouchDevice(ctx, repos.DeviceTouch{UserID: carol, DeviceID: "D", IP: "1.1.1.1"})
		if err != nil || wrote {
			t.Fatalf("touch with stale knowledge: wrote=%v err=%v", wrote, err)
		}
		f.clock.Add(repos.DefaultDeviceTouchInterval + time.Second)
		wrote, _, err = f.Devices.TouchDevice(ctx, touch)
		if err != nil || !wrote {
			t.Fatalf("stale touch: wrote=%v err=%v", wrote, err)
		}
		got, _ := f.Devices.GetDevice(ctx, carol, "D")
		if *got.LastSeenTS != f.clock.UnixMilli() {
			t.Fatalf("last seen %d, want %d", *got.LastSeenTS, f.clock.UnixMilli())
		}
		touch.KnownLastSeenTS = got.LastSeenTS
		touch.IP = "2.2.2.2" // new address: written even though fresh
		wrote, _, err = f.Devices.TouchDevice(ctx, touch)
		if err != nil || !wrote {
			t.Fatalf("touch from new IP: wrote=%v err=%v", wrote, err)
		}
		wrote, _, err = f.Devices.TouchDevice(ctx, repos.DeviceTouch{UserID: carol, DeviceID: "MISSING"})
		if err != nil || wrote {
			t.Fatalf("missing device: wrote=%v err=%v", wrote, err)
		}
	})
	t.Run("delete with tokens and restore", func(t *testing.T) {
		dan := mustUser(t, f, ctx, "dan")
		for _, id := range []string{"D1", "D2", "D3"} {
			must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: dan, DeviceID: id}))
		}
		tok1, tok1b, tok2 := mustToken(t, f, ctx, dan, "D1"), mustToken(t, f, ctx, dan, "D1"), mustToken(t, f, ctx, dan, "D2")
		mustTok(t)(f.AccessTokens.RevokeToken(ctx, tok1b)) // revoked before the device goes
		mustTok(t)(f.Devices.DeleteDevice(ctx, dan, "D1"))
		want := []repos.Change{{Kind: repos.ChangeDevices, Key: dan, Key2: "D1"},
			{Kind: repos.ChangeTokensOfDevice, Key: dan, Key2: "D1"},
			{Kind: repos.ChangeAccessToken, Key: string(hash(tok1))}}
		if ch := f.lastChanges(); !slices.Equal(ch, want) {
			t.Fatalf("changes %+v, want %+v", ch, want)
		}
		_, err := f.Devices.GetDevice(ctx, dan, "D1")
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.AccessTokens.LookupToken(ctx, tok1)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.Devices.DeleteDevice(ctx, dan, "D1")
		wantErr(t, err, repos.ErrNotFound)

		mustTok(t)(f.Devices.RestoreDevice(ctx, dan, "D1"))
		if _, err := f.AccessTokens.LookupToken(ctx, tok1); err != nil {
			t.Fatalf("token deleted with the device not restored: %v", err)
		}
		_, err = f.AccessTokens.LookupToken(ctx, tok1b)
		wantErr(t, err, repos.ErrNotFound) // revoked on its own: stays revoked

		n, _, err := f.Devices.DeleteAllDevices(ctx, dan, "D3")
		if err != nil || n != 2 {
			t.Fatalf("delete all but D3: %d, %v", n, err)
		}
		_, err = f.AccessTokens.LookupToken(ctx, tok2)
		wantErr(t, err, repos.ErrNotFound)
		pg, err := f.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: dan})
		if err != nil || len(pg.Items) != 1 || pg.Items[0].DeviceID != "D3" {
			t.Fatalf("left %+v, %v", pg.Items, err)
		}
		n, _, err = f.Devices.DeleteDevices(ctx, dan, []string{"D3", "NOPE"})
		if err != nil || n != 1 {
			t.Fatalf("delete listed: %d, %v", n, err)
		}
		// Logging in again with a deleted device ID revives the device, not
		// its old tokens.
		must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: dan, DeviceID: "D2"}))
		_, err = f.AccessTokens.LookupToken(ctx, tok2)
		wantErr(t, err, repos.ErrNotFound)
		if _, err := f.Devices.GetDevice(ctx, dan, "D2"); err != nil {
			t.Fatal(err)
		}
	})
}

func hash(raw string) []byte { h := repos.HashToken(raw); return h[:] }

func mustToken(tb testing.TB, f *fixture, ctx context.Context, user, device string) string {
	tb.Helper()
	raw, err := repos.GenerateToken()
	if err != nil {
		tb.Fatal(err)
	}
	mustTok(tb)(f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: raw, UserID: user, DeviceID: device}))
	return raw
}

func TestAccessTokens(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	dev := must[repos.Device](t)(f.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: alice, DeviceID: "LAPTOP", IP: "10.1.1.1"}))
	raw := mustToken(t, f, ctx, alice, "LAPTOP")

	t.Run("lookup", func(t *testing.T) {
		o, err := f.AccessTokens.LookupToken(ctx, raw)
		if err != nil || o.UserID != alice || o.DeviceID == nil || *o.DeviceID != "LAPTOP" || o.ExpiresTS != nil ||
			*o.DeviceLastSeenTS != *dev.LastSeenTS || *o.DeviceLastSeenIP != "10.1.1.1" {
			t.Fatalf("owner %+v, %v", o, err)
		}
		_, err = f.AccessTokens.LookupToken(ctx, raw+"x")
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("stored only as a hash", func(t *testing.T) {
		var n int
		_, err := env.router.Read(ctx, router.Strong(), func(ctx context.Context, q router.Querier) error {
			return q.QueryRow(ctx, `SELECT count(*) FROM access_tokens t
				WHERE t.token_hash = $1 AND position($2::bytea IN t.token_hash) = 0
				  AND NOT EXISTS (SELECT 1 FROM access_tokens WHERE position($2::bytea IN token_hash) > 0)`,
				hash(raw), []byte(raw)).Scan(&n)
		})
		if err != nil || n != 1 {
			t.Fatalf("hash lookup found %d rows", n)
		}
	})
	t.Run("errors never quote the token", func(t *testing.T) {
		bad := "short\x00secret"
		_, err := f.AccessTokens.LookupToken(ctx, bad)
		wantErr(t, err, repos.ErrInvalidArgument)
		bad = strings.Repeat("s", 20) + "\x01secretpart"
		_, err = f.AccessTokens.LookupToken(ctx, bad)
		wantErr(t, err, repos.ErrInvalidArgument)
		if strings.Contains(err.Error(), "secret") {
			t.Fatalf("error quotes the token: %v", err)
		}
	})
	t.Run("no device", func(t *testing.T) {
		r2, _ := repos.GenerateToken()
		mustTok(t)(f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: r2, UserID: alice}))
		o, err := f.AccessTokens.LookupToken(ctx, r2)
		if err != nil || o.DeviceID != nil {
			t.Fatalf("owner %+v, %v", o, err)
		}
	})
	t.Run("create for missing owner", func(t *testing.T) {
		r2, _ := repos.GenerateToken()
		_, err := f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: r2, UserID: alice, DeviceID: "NOPE"})
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: r2, UserID: uid("ghost")})
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: raw, UserID: alice})
		wantErr(t, err, repos.ErrConflict)
	})
	t.Run("expiry", func(t *testing.T) {
		r2, _ := repos.GenerateToken()
		exp := f.clock.UnixMilli() + 60_000
		mustTok(t)(f.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: r2, UserID: alice, DeviceID: "LAPTOP", ExpiresTS: exp}))
		o, err := f.AccessTokens.LookupToken(ctx, r2)
		if err != nil || o.ExpiresTS == nil || *o.ExpiresTS != exp {
			t.Fatalf("owner %+v, %v", o, err)
		}
		f.clock.Add(time.Minute)
		_, err = f.AccessTokens.LookupToken(ctx, r2)
		wantErr(t, err, repos.ErrNotFound)
		f.clock.Add(-time.Minute)
	})
	t.Run("revoke", func(t *testing.T) {
		r2 := mustToken(t, f, ctx, alice, "LAPTOP")
		mustTok(t)(f.AccessTokens.RevokeToken(ctx, r2))
		_, err := f.AccessTokens.LookupToken(ctx, r2)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.AccessTokens.RevokeToken(ctx, r2)
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("hidden with deactivated user", func(t *testing.T) {
		bob := mustUser(t, f, ctx, "bob")
		r2 := mustToken(t, f, ctx, bob, "")
		mustTok(t)(f.Users.Deactivate(ctx, bob))
		_, err := f.AccessTokens.LookupToken(ctx, r2)
		wantErr(t, err, repos.ErrNotFound)
	})
}
