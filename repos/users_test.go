package repos_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

func TestUsers(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)

	alice := uid("alice")
	u := must[repos.User](t)(f.Users.CreateUser(ctx, repos.NewUser{UserID: alice, DisplayName: ptr("Alice")}))
	if u.UserID != alice || u.DisplayName == nil || *u.DisplayName != "Alice" || u.CreatedTS != f.clock.UnixMilli() {
		t.Fatalf("created %+v", u)
	}
	if ch := f.lastChanges(); len(ch) != 1 || ch[0] != (repos.Change{Kind: repos.ChangeUser, Key: alice}) {
		t.Fatalf("AfterCommit got %+v", ch)
	}

	t.Run("create twice conflicts", func(t *testing.T) {
		_, _, err := f.Users.CreateUser(ctx, repos.NewUser{UserID: alice})
		wantErr(t, err, repos.ErrConflict)
	})
	t.Run("get", func(t *testing.T) {
		got, err := f.Users.GetUser(ctx, alice)
		if err != nil || !reflect.DeepEqual(got, u) {
			t.Fatalf("got %+v, %v; want %+v", got, err, u)
		}
		_, err = f.Users.GetUser(ctx, uid("nobody"))
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("get strong", func(t *testing.T) {
		if _, err := f.Users.GetUser(ctx, alice, router.Strong()); err != nil {
			t.Fatal(err)
		}
		_, err := f.Users.GetUser(ctx, alice, router.Strong(), router.Strong())
		wantErr(t, err, repos.ErrInvalidArgument)
	})
	t.Run("get many", func(t *testing.T) {
		bob := mustUser(t, f, ctx, "bob")
		got, err := f.Users.GetUsers(ctx, []string{alice, bob, alice, uid("ghost")})
		if err != nil || len(got) != 2 || got[alice].UserID != alice || got[bob].UserID != bob {
			t.Fatalf("got %v, %v", got, err)
		}
		if got, err := f.Users.GetUsers(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("empty batch: %v, %v", got, err)
		}
	})
	t.Run("update profile", func(t *testing.T) {
		f.clock.Add(time.Second)
		got := must[repos.User](t)(f.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{AvatarURL: ptr("mxc://test.local/a")}))
		if *got.DisplayName != "Alice" || *got.AvatarURL != "mxc://test.local/a" || got.UpdatedTS != f.clock.UnixMilli() {
			t.Fatalf("updated %+v", got)
		}
		got = must[repos.User](t)(f.Users.UpdateProfile(ctx, alice, repos.ProfileUpdate{DisplayName: ptr("")}))
		if got.DisplayName != nil || got.AvatarURL == nil {
			t.Fatalf("clearing display name: %+v", got)
		}
		_, _, err := f.Users.UpdateProfile(ctx, uid("ghost"), repos.ProfileUpdate{DisplayName: ptr("x")})
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("deactivate", func(t *testing.T) {
		carol := mustUser(t, f, ctx, "carol")
		mustTok(t)(f.Users.Deactivate(ctx, carol))
		got, err := f.Users.GetUser(ctx, carol)
		if err != nil || !got.Deactivated {
			t.Fatalf("got %+v, %v", got, err)
		}
		_, err = f.Users.Deactivate(ctx, uid("ghost"))
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("delete and restore", func(t *testing.T) {
		dave := mustUser(t, f, ctx, "dave")
		mustTok(t)(f.Users.DeleteUser(ctx, dave))
		_, err := f.Users.GetUser(ctx, dave)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.Users.DeleteUser(ctx, dave)
		wantErr(t, err, repos.ErrNotFound)
		_, _, err = f.Users.CreateUser(ctx, repos.NewUser{UserID: dave})
		wantErr(t, err, repos.ErrConflict) // IDs are never reused
		mustTok(t)(f.Users.RestoreUser(ctx, dave))
		if _, err := f.Users.GetUser(ctx, dave); err != nil {
			t.Fatal(err)
		}
		_, err = f.Users.RestoreUser(ctx, dave)
		wantErr(t, err, repos.ErrNotFound)
	})
}

func TestPasswordHash(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	const hash = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
	alice := uid("alice")
	must[repos.User](t)(f.Users.CreateUser(ctx, repos.NewUser{UserID: alice, PasswordHash: hash}))
	got, err := f.Users.GetPasswordHash(ctx, alice)
	if err != nil || got != hash {
		t.Fatalf("hash %q, %v", got, err)
	}
	mustTok(t)(f.Users.SetPasswordHash(ctx, alice, "$2b$12$new"))
	if got, _ := f.Users.GetPasswordHash(ctx, alice, router.Strong()); got != "$2b$12$new" {
		t.Fatalf("after change: %q", got)
	}
	mustTok(t)(f.Users.SetPasswordHash(ctx, alice, ""))
	_, err = f.Users.GetPasswordHash(ctx, alice)
	wantErr(t, err, repos.ErrNotFound)

	bob := uid("bob")
	must[repos.User](t)(f.Users.CreateUser(ctx, repos.NewUser{UserID: bob, PasswordHash: hash}))
	mustTok(t)(f.Users.Deactivate(ctx, bob))
	_, err = f.Users.GetPasswordHash(ctx, bob)
	wantErr(t, err, repos.ErrNotFound) // deactivated accounts cannot log in
	_, err = f.Users.SetPasswordHash(ctx, uid("ghost"), hash)
	wantErr(t, err, repos.ErrNotFound)
	_, err = f.Users.SetPasswordHash(ctx, alice, "secret\x00")
	wantErr(t, err, repos.ErrInvalidArgument)
	if strings.Contains(err.Error(), "secret") {
		t.Fatalf("error quotes the hash: %v", err)
	}
}

func TestListUsers(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	// A clock far beyond any other test's puts these users at the end of
	// the listing (and after any earlier run's, for -count).
	f.clock.Set(time.Date(4000, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(idSeq.Add(1)) * time.Hour))
	var ids []string
	for i := range 7 {
		if i%2 == 0 {
			f.clock.Add(time.Millisecond) // some share created_ts: user_id breaks ties
		}
		ids = append(ids, mustUser(t, f, ctx, "lister"))
	}
	// Walk backward from the end: the 7 newest users, newest first.
	var got []string
	req := repos.UserPageRequest{Dir: repos.Backward, Limit: 3}
	for len(got) < 7 {
		pg, err := f.Users.ListUsers(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range pg.Items {
			got = append(got, u.UserID)
		}
		if len(got) < 7 && pg.Next == "" {
			t.Fatalf("ran out after %d", len(got))
		}
		req.From, req.Dir = pg.Next, 0
	}
	for i := range 7 {
		if got[i] != ids[6-i] {
			t.Fatalf("backward order %v, created %v", got[:7], ids)
		}
	}
	// Forward from the last page's Prev returns the ones after it.
	pg, err := f.Users.ListUsers(ctx, repos.UserPageRequest{Dir: repos.Backward, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := f.Users.ListUsers(ctx, repos.UserPageRequest{From: pg.Prev})
	if err != nil || len(fwd.Items) != 0 {
		t.Fatalf("forward after the newest: %+v, %v", fwd.Items, err)
	}
	fwd, err = f.Users.ListUsers(ctx, repos.UserPageRequest{From: pg.Next, Dir: repos.Backward, Limit: 1})
	if err != nil || len(fwd.Items) != 1 || fwd.Items[0].UserID != ids[4] {
		t.Fatalf("third newest: %+v, %v", fwd.Items, err)
	}
	_, err = f.Users.ListUsers(ctx, repos.UserPageRequest{From: pg.Next, Dir: repos.Forward})
	wantErr(t, err, repos.ErrInvalidCursor)
}
