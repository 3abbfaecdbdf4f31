package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/repos"
)

// scale sizes the synthetic homeserver.
type scale struct {
	Name     string
	Users    int
	Rooms    int
	MaxRoom  int // members of the largest room (room sizes are heavy-tailed)
	Events   int // events spread over the rooms, heavy-tailed
	Deep     int // events in the one deep room used by the paging scenarios (depth 100 000 needs 100 050)
	Sessions int // private sessions
	Messages int // private messages spread over the sessions
}

var scales = map[string]scale{
	"tiny":  {Name: "tiny", Users: 300, Rooms: 20, MaxRoom: 150, Events: 3000, Deep: 2000, Sessions: 100, Messages: 1000},
	"small": {Name: "small", Users: 5000, Rooms: 300, MaxRoom: 2000, Events: 60000, Deep: 100050, Sessions: 2000, Messages: 30000},
	"large": {Name: "large", Users: 50000, Rooms: 3000, MaxRoom: 20000, Events: 1000000, Deep: 1000000, Sessions: 20000, Messages: 500000},
}

const benchServer = "bench.hsdal.test"

func userID(i int) string      { return fmt.Sprintf("@u%07d:%s", i, benchServer) }
func roomID(i int) string      { return fmt.Sprintf("!r%07d:%s", i, benchServer) }
func deviceID(u, d int) string { return fmt.Sprintf("D%07dX%d", u, d) }
func rawToken(u, d int) string {
	return fmt.Sprintf("syt_bench_%07d_%d_%016x", u, d, uint64(u)*0x9E3779B97F4A7C15^uint64(d))
}
func eventID(room, n int) string { return fmt.Sprintf("$e%07d_%08d", room, n) }
func deepRoomID() string         { return roomID(0) }
func deviceCount(u int) int      { return 1 + u%5 }
func firstTokenOf(u int) string  { return rawToken(u, 0) }
func sessionPair(i, users int) (int, int) {
	a, b := (i*7919)%users, (i*104729+1)%users
	if a == b {
		b = (b + 1) % users
	}
	return a, b
}

// dataset is what the harness knows about the loaded data, for choosing keys.
type dataset struct {
	sc        scale
	roomSizes []int // members per room; room 0 is the deep room
	members   [][]int
	sessions  []int64
}

// paretoSizes returns n heavy-tailed sizes in [1, maxSize], largest first,
// summing to about total when total > 0.
func paretoSizes(rng *rand.Rand, n, maxSize, total int) []int {
	out := make([]int, n)
	var sum float64
	raw := make([]float64, n)
	for i := range n {
		raw[i] = 1 / math.Pow(float64(i+1), 1.1) // Zipf-like rank/size law
		sum += raw[i]
	}
	for i := range n {
		v := raw[i] / raw[0] * float64(maxSize)
		if total > 0 {
			v = raw[i] / sum * float64(total)
		}
		out[i] = max(1, min(maxSize, int(v)))
	}
	_ = rng
	return out
}

// loadDataset bulk-loads a deterministic homeserver data set with COPY, as an
// initial import would. Everything the scenarios measure goes through the DAL.
func loadDataset(ctx context.Context, conn *pgx.Conn, sc scale, seed uint64, progress func(string, ...any)) (*dataset, error) {
	rng := rand.New(rand.NewPCG(seed, 0xbe7c))
	ds := &dataset{sc: sc}
	now := time.Now().UnixMilli()
	copyRows := func(table string, cols []string, n int, row func(i int) []any) error {
		t0 := time.Now()
		_, err := conn.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromFunc(func() func() ([]any, error) {
			i := 0
			return func() ([]any, error) {
				if i >= n {
					return nil, nil
				}
				r := row(i)
				i++
				return r, nil
			}
		}()))
		if err != nil {
			return fmt.Errorf("bench: load %s: %w", table, err)
		}
		progress("loaded %-24s %8d rows in %v", table, n, time.Since(t0).Round(time.Millisecond))
		return nil
	}
	if err := copyRows("users", []string{"user_id", "displayname", "created_ts", "updated_ts"}, sc.Users, func(i int) []any {
		return []any{userID(i), fmt.Sprintf("User %d", i), now - int64(sc.Users-i)*1000, now}
	}); err != nil {
		return nil, err
	}
	type dev struct{ u, d int }
	var devs []dev
	for u := range sc.Users {
		for d := range deviceCount(u) {
			devs = append(devs, dev{u, d})
		}
	}
	if err := copyRows("devices", []string{"user_id", "device_id", "display_name", "last_seen_ts", "created_ts"}, len(devs), func(i int) []any {
		d := devs[i]
		return []any{userID(d.u), deviceID(d.u, d.d), "bench device", now, now}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("access_tokens", []string{"token_hash", "user_id", "device_id", "created_ts"}, len(devs), func(i int) []any {
		d := devs[i]
		h := repos.HashToken(rawToken(d.u, d.d))
		return []any{h[:], userID(d.u), deviceID(d.u, d.d), now}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("rooms", []string{"room_id", "creator", "is_public", "name", "created_ts", "updated_ts"}, sc.Rooms, func(i int) []any {
		return []any{roomID(i), userID(i % sc.Users), i%3 == 0, fmt.Sprintf("Room %d", i), now, now}
	}); err != nil {
		return nil, err
	}
	ds.roomSizes = paretoSizes(rng, sc.Rooms, min(sc.MaxRoom, sc.Users), 0)
	ds.members = make([][]int, sc.Rooms)
	type mem struct{ r, u int }
	var mems []mem
	for r, size := range ds.roomSizes {
		start := rng.IntN(sc.Users)
		for k := range size {
			u := (start + k*7) % sc.Users
			ds.members[r] = append(ds.members[r], u)
			mems = append(mems, mem{r, u})
		}
	}
	seen := map[[2]int]bool{}
	uniq := mems[:0]
	for _, m := range mems {
		if !seen[[2]int{m.r, m.u}] {
			seen[[2]int{m.r, m.u}] = true
			uniq = append(uniq, m)
		}
	}
	mems = uniq
	if err := copyRows("room_memberships", []string{"room_id", "user_id", "membership", "sender", "membership_ts", "updated_ts"}, len(mems), func(i int) []any {
		m := mems[i]
		return []any{roomID(m.r), userID(m.u), "join", userID(m.u), now - int64(len(mems)-i), now}
	}); err != nil {
		return nil, err
	}
	if err := copyRows("room_membership_history", []string{"room_id", "user_id", "membership", "sender", "created_ts"}, len(mems), func(i int) []any {
		m := mems[i]
		return []any{roomID(m.r), userID(m.u), "join", userID(m.u), now - int64(len(mems)-i)}
	}); err != nil {
		return nil, err
	}
	// Events: the deep room first (its history is what paging walks), then
	// heavy-tailed counts over the other rooms.
	perRoom := paretoSizes(rng, max(1, sc.Rooms-1), sc.Events, sc.Events)
	type ev struct{ r, n int }
	evs := make([]ev, 0, sc.Deep+sc.Events)
	for n := range sc.Deep {
		evs = append(evs, ev{0, n})
	}
	for r, cnt := range perRoom {
		for n := range cnt {
			evs = append(evs, ev{r + 1, n})
		}
	}
	if err := copyRows("room_events", []string{"event_id", "room_id", "sender", "type", "content", "origin_server_ts", "created_ts"}, len(evs), func(i int) []any {
		e := evs[i]
		members := ds.members[e.r]
		sender := userID(members[e.n%len(members)])
		typ := "m.room.message"
		if e.n%10 == 9 {
			typ = "m.reaction"
		}
		return []any{eventID(e.r, e.n), roomID(e.r), sender, typ,
			fmt.Sprintf(`{"msgtype":"m.text","body":"message %d in room %d"}`, e.n, e.r), now - int64(len(evs)-i), now}
	}); err != nil {
		return nil, err
	}
	// Private sessions between distinct pairs, and heavy-tailed messages.
	pairs := map[[2]string]bool{}
	var sess [][2]string
	for i := 0; len(sess) < sc.Sessions && i < sc.Sessions*4; i++ {
		a, b := sessionPair(i, sc.Users)
		lo, hi := userID(a), userID(b)
		if hi < lo {
			lo, hi = hi, lo
		}
		if !pairs[[2]string{lo, hi}] {
			pairs[[2]string{lo, hi}] = true
			sess = append(sess, [2]string{lo, hi})
		}
	}
	if err := copyRows("private_sessions", []string{"user_low", "user_high", "created_ts", "updated_ts"}, len(sess), func(i int) []any {
		return []any{sess[i][0], sess[i][1], now, now}
	}); err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, "SELECT id FROM private_sessions ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("bench: session ids: %w", err)
	}
	ds.sessions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("bench: session ids: %w", err)
	}
	msgCounts := paretoSizes(rng, len(ds.sessions), sc.Messages, sc.Messages)
	type msg struct{ s, n int }
	var msgs []msg
	for s, cnt := range msgCounts {
		for n := range cnt {
			msgs = append(msgs, msg{s, n})
		}
	}
	if err := copyRows("private_messages", []string{"session_id", "sender_id", "content", "created_ts"}, len(msgs), func(i int) []any {
		m := msgs[i]
		sender := sess[m.s][m.n%2]
		return []any{ds.sessions[m.s], sender, fmt.Sprintf(`{"body":"pm %d"}`, m.n), now - int64(len(msgs)-i)}
	}); err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return nil, fmt.Errorf("bench: analyze: %w", err)
	}
	return ds, nil
}
