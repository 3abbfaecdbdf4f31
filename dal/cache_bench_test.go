package dal_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// Hot-entity reads through the DAL on the local cluster (primary + two
// replicas + Redis on loopback), uncached vs Redis vs Redis+L1, and the
// miss path (Redis lookup, load from PostgreSQL, fill):
//
//	go test -run '^$' -bench 'HotEntity|CacheMiss' -benchmem ./dal/
func BenchmarkHotEntityRead(b *testing.B) {
	ctx := context.Background()
	db := newCachedDB(b)
	variants := []struct {
		name string
		tune func(*dal.Config)
	}{
		{"uncached", func(c *dal.Config) { c.RedisAddr = "" }},
		{"redis", nil},
		{"l1", func(c *dal.Config) { c.Cache.L1.Enabled = true }},
	}
	const (
		owner = "@owner:example.org"
		room  = "!bench:example.org"
		token = "bench-token-0123456789abcdef"
	)
	ops := []struct {
		name string
		op   func(d *dal.DAL) error
	}{
		{"GetUser", func(d *dal.DAL) error { _, err := d.Users.GetUser(ctx, owner); return err }},
		{"LookupToken", func(d *dal.DAL) error { _, err := d.AccessTokens.LookupToken(ctx, token); return err }},
		{"ListDevices", func(d *dal.DAL) error {
			_, err := d.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: owner})
			return err
		}},
		{"ListJoinedMembers", func(d *dal.DAL) error {
			_, err := d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room})
			return err
		}},
		{"IsJoined", func(d *dal.DAL) error { _, err := d.Memberships.IsJoined(ctx, room, owner); return err }},
	}
	for _, v := range variants {
		d := db.open(b, v.tune)
		if v.name == "uncached" {
			seedBench(b, d, owner, room, token)
		} else {
			waitFillable(b, d)
		}
		for _, o := range ops {
			b.Run(o.name+"/"+v.name, func(b *testing.B) {
				if err := o.op(d); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := o.op(d); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// The miss path: each read finds its entry invalidated, loads from
// PostgreSQL and fills Redis.
func BenchmarkCacheMiss(b *testing.B) {
	ctx := context.Background()
	db := newCachedDB(b)
	d := db.open(b, nil)
	const owner = "@owner:example.org"
	seedBench(b, d, owner, "!bench:example.org", "bench-token-0123456789abcdef")
	waitFillable(b, d)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		if err := d.InvalidateCached(ctx, nil, router.LSN(1+i), []repos.Change{{Kind: repos.ChangeUser, Key: owner}}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := d.Users.GetUser(ctx, owner); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s, _ := d.CacheStats(); s.Fills == 0 {
		b.Fatalf("no fill: %+v", s)
	}
}

func seedBench(b testing.TB, d *dal.DAL, owner, room, token string) {
	b.Helper()
	ctx := testCtx(b)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	_, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: owner, DisplayName: ptr("Owner")})
	must(err)
	for i := range 5 {
		_, _, err := d.Devices.UpsertDevice(ctx, repos.NewDevice{UserID: owner, DeviceID: fmt.Sprintf("DEV%d", i), IP: "10.0.0.1"})
		must(err)
	}
	_, err = d.AccessTokens.CreateToken(ctx, repos.NewAccessToken{Token: token, UserID: owner, DeviceID: "DEV0"})
	must(err)
	_, _, err = d.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: room, Creator: owner})
	must(err)
	_, _, err = d.Memberships.Join(ctx, room, owner)
	must(err)
	for i := range 49 {
		u := fmt.Sprintf("@member%d:example.org", i)
		_, _, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: u})
		must(err)
		_, _, err = d.Memberships.Join(ctx, room, u)
		must(err)
	}
	must(cluster.WaitReplicated(ctx))
}
