package repos_test

import (
	"reflect"
	"testing"

	"github.com/hsdal/hsdal/repos"
)

func TestRooms(t *testing.T) {
	f := newRepos(t)
	ctx := session(t)
	alice := mustUser(t, f, ctx, "alice")
	id := rid("room")
	r := must[repos.Room](t)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: id, Creator: alice, Name: ptr("Lobby"), IsPublic: true}))
	if r.RoomID != id || *r.Name != "Lobby" || !r.IsPublic || r.Topic != nil {
		t.Fatalf("created %+v", r)
	}
	t.Run("create twice conflicts", func(t *testing.T) {
		_, _, err := f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: id, Creator: alice})
		wantErr(t, err, repos.ErrConflict)
	})
	t.Run("remote creator", func(t *testing.T) {
		must[repos.Room](t)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: rid("fed"), Creator: "@bob:remote.example"}))
	})
	t.Run("get and get many", func(t *testing.T) {
		got, err := f.Rooms.GetRoom(ctx, id)
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("got %+v, %v", got, err)
		}
		other := mustRoom(t, f, ctx, alice)
		m, err := f.Rooms.GetRooms(ctx, []string{id, other, rid("ghost")})
		if err != nil || len(m) != 2 || m[other].RoomID != other {
			t.Fatalf("got %v, %v", m, err)
		}
		_, err = f.Rooms.GetRoom(ctx, rid("ghost"))
		wantErr(t, err, repos.ErrNotFound)
	})
	t.Run("update", func(t *testing.T) {
		got := must[repos.Room](t)(f.Rooms.UpdateRoom(ctx, id, repos.RoomUpdate{Topic: ptr("hello"), IsPublic: ptr(false)}))
		if *got.Name != "Lobby" || *got.Topic != "hello" || got.IsPublic {
			t.Fatalf("updated %+v", got)
		}
		got = must[repos.Room](t)(f.Rooms.UpdateRoom(ctx, id, repos.RoomUpdate{Name: ptr(""), IsPublic: ptr(true)}))
		if got.Name != nil || !got.IsPublic {
			t.Fatalf("updated %+v", got)
		}
	})
	t.Run("aliases", func(t *testing.T) {
		a1, a2 := "#a-"+id[1:], "#b-"+id[1:]
		mustTok(t)(f.Rooms.CreateAlias(ctx, a1, id, alice))
		mustTok(t)(f.Rooms.CreateAlias(ctx, a2, id, alice))
		_, err := f.Rooms.CreateAlias(ctx, a1, id, alice)
		wantErr(t, err, repos.ErrConflict)
		_, err = f.Rooms.CreateAlias(ctx, "#x-"+id[1:], rid("ghost"), alice)
		wantErr(t, err, repos.ErrNotFound)
		got, err := f.Rooms.ResolveAlias(ctx, a1)
		if err != nil || got != id {
			t.Fatalf("resolve: %q, %v", got, err)
		}
		list, err := f.Rooms.ListAliases(ctx, id)
		if err != nil || !reflect.DeepEqual(list, []string{a1, a2}) {
			t.Fatalf("list: %v, %v", list, err)
		}
		mustTok(t)(f.Rooms.DeleteAlias(ctx, a1))
		_, err = f.Rooms.ResolveAlias(ctx, a1)
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.Rooms.DeleteAlias(ctx, a1)
		wantErr(t, err, repos.ErrNotFound)
		other := mustRoom(t, f, ctx, alice)
		mustTok(t)(f.Rooms.CreateAlias(ctx, a1, other, alice)) // a deleted alias is free again
		if got, _ := f.Rooms.ResolveAlias(ctx, a1); got != other {
			t.Fatalf("re-created alias resolves to %q", got)
		}
	})
	t.Run("public directory", func(t *testing.T) {
		var pub []string
		for range 5 {
			x := rid("pub")
			must[repos.Room](t)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: x, Creator: alice, IsPublic: true}))
			pub = append(pub, x)
		}
		must[repos.Room](t)(f.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: rid("pub"), Creator: alice}))
		mustTok(t)(f.Rooms.DeleteRoom(ctx, pub[2]))
		// Start just before pub[0] (other tests' public rooms live around).
		pg, err := f.Rooms.ListPublicRooms(ctx, repos.RoomPageRequest{From: justBefore(t, repos.KindPublicRooms, "public", pub[0]), Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if got := roomIDs(pg.Items); !reflect.DeepEqual(got, []string{pub[0], pub[1], pub[3]}) || pg.Next == "" {
			t.Fatalf("page 1 %v, want %v", got, []string{pub[0], pub[1], pub[3]})
		}
		pg2, err := f.Rooms.ListPublicRooms(ctx, repos.RoomPageRequest{From: pg.Next, Limit: 3})
		if err != nil || len(pg2.Items) == 0 || pg2.Items[0].RoomID != pub[4] {
			t.Fatalf("page 2: %+v, %v", pg2, err)
		}
		back, err := f.Rooms.ListPublicRooms(ctx, repos.RoomPageRequest{From: pg2.Prev, Limit: 3})
		if got := roomIDs(back.Items); err != nil || !reflect.DeepEqual(got, []string{pub[3], pub[1], pub[0]}) {
			t.Fatalf("backward from page 2: %v, %v", got, err)
		}
	})
	t.Run("delete and restore", func(t *testing.T) {
		x := mustRoom(t, f, ctx, alice)
		mustTok(t)(f.Rooms.DeleteRoom(ctx, x))
		_, err := f.Rooms.GetRoom(ctx, x)
		wantErr(t, err, repos.ErrNotFound)
		_, _, err = f.Rooms.UpdateRoom(ctx, x, repos.RoomUpdate{Name: ptr("x")})
		wantErr(t, err, repos.ErrNotFound)
		_, err = f.Rooms.DeleteRoom(ctx, x)
		wantErr(t, err, repos.ErrNotFound)
		mustTok(t)(f.Rooms.RestoreRoom(ctx, x))
		if _, err := f.Rooms.GetRoom(ctx, x); err != nil {
			t.Fatal(err)
		}
	})
}

// justBefore returns a forward cursor of an ID-keyed list positioned just
// before id (at id minus its last byte: nothing sorts between).
func justBefore(tb testing.TB, kind repos.CursorKind, scope, id string) string {
	tb.Helper()
	codec, err := repos.NewCursorCodec(cursorKeyForTests, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return codec.Encode(kind, scope, repos.Forward, repos.CursorPos{S: id[:len(id)-1]})
}

func roomIDs(rs []repos.Room) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.RoomID
	}
	return out
}
