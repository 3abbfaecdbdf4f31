package repos

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/hsdal/hsdal/cache"
	"github.com/hsdal/hsdal/router"
)

// Cache entity kinds: the "kind" part of every cache key and invalidation.
const (
	cacheKindToken   = "tok"     // SHA-256 hash of a raw token → owner
	cacheKindUser    = "user"    // user ID → User
	cacheKindDevices = "devs"    // user ID → the user's live devices
	cacheKindRoom    = "room"    // room ID → Room
	cacheKindMembers = "members" // room ID → the room's joined members
	cacheKindJoined  = "joined"  // room ID + NUL + user ID → joined or not
)

// Bounds of the cached lists.
const (
	// DefaultCacheMaxMembers is the default Config.CacheMaxMembers.
	DefaultCacheMaxMembers = 256
	// DefaultCacheMaxDevices is the default Config.CacheMaxDevices.
	DefaultCacheMaxDevices = 128
)

// Codec layout versions; bump one when its encoder changes.
const (
	codecToken   = 1
	codecUser    = 1
	codecDevices = 1
	codecRoom    = 1
	codecMembers = 1
	codecJoined  = 1
)

// stamped is a cached value with where it was read: upper is a WAL position
// at or after the read's snapshot (every write the value includes is below
// it), tl the timeline. A later read in the same session must cover upper
// (monotonic reads), which is why every value carries it, found or not.
type stamped[T any] struct {
	v     T
	upper router.LSN
	tl    uint32
}

func stampedCodec[T any](version uint, enc func(w *cache.Writer, v T), dec func(r *cache.Reader) T) cache.Codec[stamped[T]] {
	return cache.Binary(version, func(w *cache.Writer, s stamped[T]) {
		w.Uvarint(uint64(s.upper))
		w.Uvarint(uint64(s.tl))
		enc(w, s.v)
	}, func(r *cache.Reader) stamped[T] {
		var s stamped[T]
		s.upper = router.LSN(r.Uvarint())
		s.tl = uint32(r.Uvarint())
		s.v = dec(r)
		return s
	})
}

// tokenValue is a cached token lookup: the owner of a live token (its expiry
// is checked at use, so an entry never outlives the token's validity).
type tokenValue = TokenOwner

// deviceList is a user's live devices in device_id order (the database's
// order), or Large when the user has more than the cached bound.
type deviceList struct {
	Large   bool
	Devices []Device
}

// memberList is a room's joined members in (membership_ts, user_id) order
// (the database's order), or Large when there are more than the bound.
type memberList struct {
	Large   bool
	Members []Membership
}

// caches holds the typed cache entities; nil when no cache is configured.
type caches struct {
	c          *cache.Cache
	token      *cache.Entity[stamped[tokenValue]]
	user       *cache.Entity[stamped[User]]
	devices    *cache.Entity[stamped[deviceList]]
	room       *cache.Entity[stamped[Room]]
	members    *cache.Entity[stamped[memberList]]
	joined     *cache.Entity[stamped[bool]]
	maxMembers int
	maxDevices int
	noReadPos  bool
}

func newCaches(cfg Config) (*caches, error) {
	if cfg.Cache == nil {
		return nil, nil
	}
	cs := &caches{c: cfg.Cache, maxMembers: cfg.CacheMaxMembers, maxDevices: cfg.CacheMaxDevices,
		noReadPos: cfg.CacheNoReadPositions}
	switch {
	case cs.maxMembers < 0:
		return nil, invalid("cache_max_members", "negative")
	case cs.maxDevices < 0:
		return nil, invalid("cache_max_devices", "negative")
	}
	if cs.maxMembers == 0 {
		cs.maxMembers = DefaultCacheMaxMembers
	}
	if cs.maxDevices == 0 {
		cs.maxDevices = DefaultCacheMaxDevices
	}
	var err error
	if cs.token, err = newEntity(cfg.Cache, cacheKindToken, codecToken, encodeTokenOwner, decodeTokenOwner, false); err != nil {
		return nil, err
	}
	if cs.user, err = newEntity(cfg.Cache, cacheKindUser, codecUser, encodeUser, decodeUser, false); err != nil {
		return nil, err
	}
	// Lists are shared by the in-process tier (decoding a long list costs
	// far more than finding it); pages cut from them copy what they return.
	if cs.devices, err = newEntity(cfg.Cache, cacheKindDevices, codecDevices, encodeDeviceList, decodeDeviceList, true); err != nil {
		return nil, err
	}
	if cs.room, err = newEntity(cfg.Cache, cacheKindRoom, codecRoom, encodeRoom, decodeRoom, false); err != nil {
		return nil, err
	}
	if cs.members, err = newEntity(cfg.Cache, cacheKindMembers, codecMembers, encodeMemberList, decodeMemberList, true); err != nil {
		return nil, err
	}
	if cs.joined, err = newEntity(cfg.Cache, cacheKindJoined, codecJoined,
		func(w *cache.Writer, b bool) { w.Bool(b) }, func(r *cache.Reader) bool { return r.Bool() }, false); err != nil {
		return nil, err
	}
	return cs, nil
}

func newEntity[T any](c *cache.Cache, kind string, version uint, enc func(*cache.Writer, T), dec func(*cache.Reader) T, share bool) (*cache.Entity[stamped[T]], error) {
	e, err := cache.NewEntity(c, cache.EntityConfig[stamped[T]]{
		Kind:           kind,
		Codec:          stampedCodec(version, enc, dec),
		NegativeValues: true,
		ShareValues:    share,
	})
	if err != nil {
		return nil, fmt.Errorf("repos: cache entity %s: %w", kind, err)
	}
	return e, nil
}

// cacheToken is the consistency token a read must see: the session's,
// merged with a read-your-writes requirement.
func cacheToken(ctx context.Context, cons router.Consistency) router.Token {
	t := router.SessionToken(ctx)
	if cons.Level == router.LevelReadYourWrites {
		t = t.Merge(cons.Token)
	}
	return t
}

// stampedLoad reads one value at cons and says where: the router's ReadInfo
// (Pos: the position the data covers) and an upper bound of the snapshot.
type stampedLoad[T any] func(ctx context.Context, cons router.Consistency) (v T, found bool, info router.ReadInfo, upper router.LSN, err error)

// cachedGet is the cache-aside read of one hot entity.
//
//   - Strong reads, and bounded-staleness reads with an explicit bound,
//     bypass the cache (and do not fill it): the cache proves positions,
//     not ages, so a caller asking for a specific age is served by the
//     router, which measures replica lag in time.
//   - Other reads use a cached entry only if it covers the read's token (the
//     session's, merged with a read-your-writes token), or the token is
//     below the relay's watermark; otherwise they load at cons (the router
//     enforces the same token) and offer the result to the cache, which
//     accepts it only if no invalidation at or above its position happened.
//     Default-consistency reads accept any current entry: entries are
//     invalidated right after each write commits and again by the relay
//     from the durable outbox, and expire after the cache TTL. Every load
//     for the cache runs at the default bounded staleness plus the token,
//     so a load shared by concurrent Gets satisfies each of them.
//   - A token minted on another timeline than the entry's reads through.
//   - Every result's upper bound is merged into the ctx's session, so later
//     reads in the session (cached or not) never return older data (unless
//     Config.CacheNoReadPositions).
func cachedGet[T any](ctx context.Context, cs *caches, e *cache.Entity[stamped[T]], cons router.Consistency, id string, load stampedLoad[T]) (T, bool, error) {
	record := func(upper router.LSN, tl uint32) {
		if !cs.noReadPos {
			router.MergeSession(ctx, router.Token{LSN: upper, Timeline: tl})
		}
	}
	direct := func() (T, bool, error) {
		v, found, info, upper, err := load(ctx, cons)
		if err != nil {
			var zero T
			return zero, false, err
		}
		record(upper, info.Timeline)
		return v, found, nil
	}
	if cons.Level == router.LevelStrong || cons.Level == router.LevelBoundedStaleness && cons.MaxStaleness > 0 {
		return direct()
	}
	tok := cacheToken(ctx, cons)
	sv, info, err := e.GetShared(ctx, id, uint64(tok.LSN), flightGroup(cons), func(ctx context.Context) (stamped[T], uint64, bool, error) {
		// Concurrent Gets of the key share this load (singleflight), so it
		// must satisfy any of them: the router's default staleness bound
		// and the token. (For read-your-writes alone the router would take
		// a replica that has the token however far behind it is.) Each
		// joiner still checks the token itself.
		v, found, ri, upper, err := load(router.WithSession(ctx, tok), router.Consistency{})
		if err != nil {
			return stamped[T]{}, 0, false, err
		}
		return stamped[T]{v: v, upper: upper, tl: ri.Timeline}, uint64(ri.Pos), found, nil
	})
	if err != nil {
		var zero T
		return zero, false, err
	}
	if tok.Timeline != 0 && sv.tl != tok.Timeline {
		return direct()
	}
	record(sv.upper, sv.tl)
	return sv.v, info.Found, nil
}

// sqlWALPosition reads the node's WAL position: the replay position on a
// standby, the insert position on the primary. Read first in a batch it is a
// lower bound of what the statements after it see (on a standby every
// commit replayed up to it; on the primary every write whose token, read
// after its commit became visible, is below it); read last, an upper bound
// of every commit their snapshots saw.
const sqlWALPosition = `SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text`

func scanWALPosition(br pgx.BatchResults) (standby bool, pos router.LSN, err error) {
	var s *string
	if err := br.QueryRow().Scan(&standby, &s); err != nil || s == nil {
		return standby, 0, err
	}
	pos, err = router.ParseLSN(*s)
	return standby, pos, err
}

// readStamped runs queue's statements between two sqlWALPosition reads in
// one batch (one round trip) through the router, collects the value, and
// returns it with where it was read and the upper bound of its snapshot.
// The ReadInfo's Pos is raised to the position read just before the
// statements when that is fresher than the router's probe (so fills right
// after a write are not refused for a stale lower bound). collect reports
// an absent row as found=false with a nil error.
func readStamped[T any](ctx context.Context, c *core, op string, cons router.Consistency,
	queue func(b *pgx.Batch), collect func(br pgx.BatchResults) (T, bool, error)) (T, bool, router.ReadInfo, router.LSN, error) {
	type out struct {
		v            T
		found        bool
		lower, upper router.LSN
	}
	o, info, err := read(ctx, c, op, cons, false, func(ctx context.Context, q router.Querier) (out, error) {
		b := &pgx.Batch{}
		b.Queue(sqlWALPosition)
		queue(b)
		b.Queue(sqlWALPosition)
		br := q.SendBatch(ctx, b)
		var o out
		standby, lower, err := scanWALPosition(br)
		if err == nil {
			if standby && lower > 0 {
				lower++ // every commit up to the replay position is visible
			}
			o.lower = lower
			o.v, o.found, err = collect(br)
		}
		if err == nil {
			_, o.upper, err = scanWALPosition(br)
		}
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		return o, err
	})
	if err == nil && o.lower > info.Pos {
		info.Pos = o.lower
	}
	return o.v, o.found, info, o.upper, err
}

// collectOne collects exactly one row, reporting none as found=false.
func collectOne[T any](br pgx.BatchResults, rowTo pgx.RowToFunc[T]) (T, bool, error) {
	rows, err := br.Query()
	if err != nil {
		var zero T
		return zero, false, err
	}
	v, err := pgx.CollectExactlyOneRow(rows, rowTo)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, false, nil
	}
	return v, err == nil, err
}

// notFound is the error of a cached read that found nothing, shaped like
// the uncached path's.
func notFound(op string) error { return wrap(op, pgx.ErrNoRows) }

// cloneString and cloneInt64 copy a pointed-to value, so that a page cut
// from a shared cached list hands the caller memory of its own.
func cloneString(p *string) *string {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneInt64(p *int64) *int64 {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneDevice(d Device) Device {
	d.DisplayName, d.LastSeenTS, d.LastSeenIP = cloneString(d.DisplayName), cloneInt64(d.LastSeenTS), cloneString(d.LastSeenIP)
	return d
}

func cloneMembership(m Membership) Membership {
	m.EventID, m.StreamOrdering = cloneString(m.EventID), cloneInt64(m.StreamOrdering)
	return m
}

// ---- Codecs ----

func optString(w *cache.Writer, s *string) {
	w.Bool(s != nil)
	if s != nil {
		w.String(*s)
	}
}

func readOptString(r *cache.Reader) *string {
	if !r.Bool() {
		return nil
	}
	s := r.String()
	return &s
}

func optInt64(w *cache.Writer, x *int64) {
	w.Bool(x != nil)
	if x != nil {
		w.Varint(*x)
	}
}

func readOptInt64(r *cache.Reader) *int64 {
	if !r.Bool() {
		return nil
	}
	x := r.Varint()
	return &x
}

func encodeTokenOwner(w *cache.Writer, o TokenOwner) {
	w.String(o.UserID)
	optString(w, o.DeviceID)
	w.Bool(o.IsAdmin)
	w.Bool(o.IsGuest)
	optInt64(w, o.ExpiresTS)
	optInt64(w, o.DeviceLastSeenTS)
	optString(w, o.DeviceLastSeenIP)
}

func decodeTokenOwner(r *cache.Reader) TokenOwner {
	var o TokenOwner
	o.UserID = r.String()
	o.DeviceID = readOptString(r)
	o.IsAdmin = r.Bool()
	o.IsGuest = r.Bool()
	o.ExpiresTS = readOptInt64(r)
	o.DeviceLastSeenTS = readOptInt64(r)
	o.DeviceLastSeenIP = readOptString(r)
	return o
}

func encodeUser(w *cache.Writer, u User) {
	w.String(u.UserID)
	optString(w, u.DisplayName)
	optString(w, u.AvatarURL)
	w.Bool(u.IsAdmin)
	w.Bool(u.IsGuest)
	w.Bool(u.Deactivated)
	w.Varint(u.CreatedTS)
	w.Varint(u.UpdatedTS)
}

func decodeUser(r *cache.Reader) User {
	var u User
	u.UserID = r.String()
	u.DisplayName = readOptString(r)
	u.AvatarURL = readOptString(r)
	u.IsAdmin = r.Bool()
	u.IsGuest = r.Bool()
	u.Deactivated = r.Bool()
	u.CreatedTS = r.Varint()
	u.UpdatedTS = r.Varint()
	return u
}

// Device lists store the user ID once (every device has the same).
func encodeDeviceList(w *cache.Writer, l deviceList) {
	w.Bool(l.Large)
	user := ""
	if len(l.Devices) > 0 {
		user = l.Devices[0].UserID
	}
	w.String(user)
	w.Uvarint(uint64(len(l.Devices)))
	for _, d := range l.Devices {
		w.String(d.DeviceID)
		optString(w, d.DisplayName)
		optInt64(w, d.LastSeenTS)
		optString(w, d.LastSeenIP)
		w.Varint(d.CreatedTS)
	}
}

func decodeDeviceList(r *cache.Reader) deviceList {
	var l deviceList
	l.Large = r.Bool()
	user := r.String()
	n := r.Count()
	if n > 0 {
		l.Devices = make([]Device, n)
	}
	for i := range l.Devices {
		d := &l.Devices[i]
		d.UserID = user
		d.DeviceID = r.String()
		d.DisplayName = readOptString(r)
		d.LastSeenTS = readOptInt64(r)
		d.LastSeenIP = readOptString(r)
		d.CreatedTS = r.Varint()
	}
	return l
}

func encodeRoom(w *cache.Writer, x Room) {
	w.String(x.RoomID)
	w.String(x.Creator)
	w.Bool(x.IsPublic)
	optString(w, x.Name)
	optString(w, x.Topic)
	w.Varint(x.CreatedTS)
	w.Varint(x.UpdatedTS)
}

func decodeRoom(r *cache.Reader) Room {
	var x Room
	x.RoomID = r.String()
	x.Creator = r.String()
	x.IsPublic = r.Bool()
	x.Name = readOptString(r)
	x.Topic = readOptString(r)
	x.CreatedTS = r.Varint()
	x.UpdatedTS = r.Varint()
	return x
}

// Member lists store the room ID once (every member has the same).
func encodeMemberList(w *cache.Writer, l memberList) {
	w.Bool(l.Large)
	room := ""
	if len(l.Members) > 0 {
		room = l.Members[0].RoomID
	}
	w.String(room)
	w.Uvarint(uint64(len(l.Members)))
	for _, m := range l.Members {
		w.String(m.UserID)
		w.String(string(m.Membership))
		w.String(m.Sender)
		optString(w, m.EventID)
		optInt64(w, m.StreamOrdering)
		w.Varint(m.MembershipTS)
		w.Varint(m.UpdatedTS)
	}
}

func decodeMemberList(r *cache.Reader) memberList {
	var l memberList
	l.Large = r.Bool()
	room := r.String()
	n := r.Count()
	if n > 0 {
		l.Members = make([]Membership, n)
	}
	for i := range l.Members {
		m := &l.Members[i]
		m.RoomID = room
		m.UserID = r.String()
		m.Membership = MembershipState(r.String())
		m.Sender = r.String()
		m.EventID = readOptString(r)
		m.StreamOrdering = readOptInt64(r)
		m.MembershipTS = r.Varint()
		m.UpdatedTS = r.Varint()
	}
	return l
}

// flightGroup names the staleness promise a cached loader makes for cons, so
// that only reads with the same promise share a load. Every read that
// reaches the cache today makes the same one (explicit bounds bypass it,
// loads run at the default bound plus the token); the group keeps that
// true should a cached path ever load with an explicit bound.
func flightGroup(cons router.Consistency) string {
	if cons.Level == router.LevelBoundedStaleness && cons.MaxStaleness > 0 {
		return "b" + strconv.FormatInt(int64(cons.MaxStaleness), 10)
	}
	return ""
}
