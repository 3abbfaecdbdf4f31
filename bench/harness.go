package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// The variants, in report order.
//
// raw-replica and hsdal-nocache-1r exist for the routing-replica scenario:
// raw pgx on the first replica vs hsdal configured with only that replica,
// so both read from the same node.
var allVariants = []string{"raw-primary", "hsdal-nocache", "hsdal", "hsdal-l1", "pgpool", "offset", "raw-replica", "hsdal-nocache-1r"}

// errVariantUnavailable marks a variant that cannot run here; the report says why.
var errVariantUnavailable = errors.New("variant unavailable")

// cursorKey is shared by every variant so a cursor made by one is valid in all.
var cursorKey = []byte("hsdal-bench-cursor-key-32-bytes!")

// variant is one way of serving the same repository calls.
type variant struct {
	name   string
	r      *repos.Repos
	dal    *dal.DAL
	pool   *pgxpool.Pool
	reader *sdkmetric.ManualReader // router metrics, for the replica share
	closer func()
}

// harness holds everything the scenarios share.
type harness struct {
	o        options
	cl       *cluster
	ds       *dataset
	progress func(string, ...any)
	started  time.Time

	variants    map[string]*variant
	unavailable map[string]string // variant → why it did not run
	pgpool      *pgpool
	// cursors[depth] is a backward cursor that many events below the deep
	// room's live edge.
	cursors map[int]string
	depths  []int
	notes   []string
}

func newHarness(ctx context.Context, o options, cl *cluster, ds *dataset, progress func(string, ...any)) (*harness, error) {
	h := &harness{o: o, cl: cl, ds: ds, progress: progress, started: time.Now(),
		variants: map[string]*variant{}, unavailable: map[string]string{}, cursors: map[int]string{}}
	want := func(name string) bool {
		if o.variants == "" {
			return true
		}
		return slices.Contains(strings.Split(o.variants, ","), name)
	}
	for _, name := range allVariants {
		if !want(name) {
			continue
		}
		v, err := h.openVariant(ctx, name)
		if errors.Is(err, errVariantUnavailable) {
			h.unavailable[name] = err.Error()
			progress("variant %s not run: %v", name, err)
			continue
		}
		if err != nil {
			h.close()
			return nil, fmt.Errorf("bench: variant %s: %w", name, err)
		}
		h.variants[name] = v
	}
	if err := h.findCursors(ctx); err != nil {
		h.close()
		return nil, err
	}
	return h, nil
}

func (h *harness) openVariant(ctx context.Context, name string) (*variant, error) {
	maxConns := int32(max(h.o.concurrency, 8))
	direct := func(dsn string) (*variant, error) {
		pool, err := newDirectPool(ctx, dsn, maxConns)
		if err != nil {
			return nil, err
		}
		r, err := repos.New(directDB{pool}, repos.Config{CursorKey: cursorKey})
		if err != nil {
			pool.Close()
			return nil, err
		}
		return &variant{name: name, r: r, pool: pool, closer: pool.Close}, nil
	}
	switch name {
	case "raw-primary", "offset":
		return direct(h.cl.primary)
	case "raw-replica":
		if len(h.cl.replicas) == 0 {
			return nil, fmt.Errorf("%w: no replica", errVariantUnavailable)
		}
		return direct(h.cl.replicas[0])
	case "hsdal-nocache":
		return h.openDAL(ctx, name, h.cl.replicas, maxConns, nil)
	case "hsdal-nocache-1r":
		if len(h.cl.replicas) == 0 {
			return nil, fmt.Errorf("%w: no replica", errVariantUnavailable)
		}
		return h.openDAL(ctx, name, h.cl.replicas[:1], maxConns, nil)
	case "hsdal", "hsdal-l1":
		if h.cl.redis == "" {
			return nil, fmt.Errorf("%w: no Redis (-redis)", errVariantUnavailable)
		}
		return h.openDAL(ctx, name, h.cl.replicas, maxConns, func(c *dal.Config) {
			c.RedisAddr = h.cl.redis
			// Both cached variants share one key space: the database has
			// one outbox and one active relay, which invalidates one
			// key space.
			c.Cache.Prefix = "hsdal-bench"
			c.Cache.L1.Enabled = name == "hsdal-l1"
		})
	case "pgpool":
		if h.o.pgpool == "off" {
			return nil, fmt.Errorf("%w: -pgpool=off", errVariantUnavailable)
		}
		if h.cl.local == nil {
			return nil, fmt.Errorf("%w: pgpool is started only over the local cluster", errVariantUnavailable)
		}
		bin, err := findOrInstallPgpool(ctx, true, h.progress)
		if err == nil {
			var backends []string
			for _, n := range h.cl.local.Nodes() {
				backends = append(backends, "127.0.0.1:"+strconv.Itoa(n.Port))
			}
			// pgpool queues clients beyond num_init_children: give it one
			// child per client connection, with room for the sr check.
			h.pgpool, err = startPgpool(ctx, bin, backends, "hsdal", int(maxConns)+4, h.progress)
		}
		if err != nil {
			if h.o.pgpool == "require" {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %v", errVariantUnavailable, err)
		}
		return direct(h.pgpool.DSN())
	}
	return nil, fmt.Errorf("unknown variant %q", name)
}

func (h *harness) openDAL(ctx context.Context, name string, replicas []string, maxConns int32, tune func(*dal.Config)) (*variant, error) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	cfg := dal.Config{PrimaryDSN: h.cl.primary, ReplicaDSNs: replicas, CursorKey: cursorKey}
	cfg.Router.MeterProvider = mp
	cfg.Router.Pool.MaxConns = maxConns
	if tune != nil {
		tune(&cfg)
	}
	d, err := dal.Open(ctx, cfg)
	if err != nil {
		_ = mp.Shutdown(ctx)
		return nil, err
	}
	return &variant{name: name, r: d.Repos, dal: d, reader: reader, closer: func() {
		d.Close()
		_ = mp.Shutdown(context.Background())
	}}, nil
}

func (h *harness) close() {
	for _, v := range h.variants {
		v.closer()
	}
	if h.pgpool != nil {
		h.pgpool.Stop()
	}
}

func (h *harness) redisVersion(ctx context.Context) string {
	if h.cl.redis == "" {
		return "not used"
	}
	c := redis.NewClient(&redis.Options{Addr: h.cl.redis})
	defer c.Close()
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "unknown"
}

// findCursors walks the deep room backwards once and keeps a cursor at each
// measured depth.
func (h *harness) findCursors(ctx context.Context) error {
	v := h.anyVariant()
	if v == nil {
		return errors.New("bench: no variant could be opened")
	}
	for _, d := range []int{0, 100, 1000, 10000, 100000, 1000000} {
		if d+pageLimit <= h.ds.sc.Deep { // a full page below that depth
			h.depths = append(h.depths, d)
		}
	}
	h.cursors[0] = ""
	const walk = 500
	depth, from := 0, ""
	for _, target := range h.depths[1:] {
		for depth < target {
			p, err := v.r.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: deepRoomID(), From: from, Dir: repos.Backward, Limit: min(walk, target-depth)})
			if err != nil {
				return fmt.Errorf("bench: walk the deep room: %w", err)
			}
			if len(p.Items) == 0 || p.Next == "" {
				return fmt.Errorf("bench: deep room ended at depth %d", depth)
			}
			depth += len(p.Items)
			from = p.Next
		}
		h.cursors[target] = from
	}
	return nil
}

func (h *harness) anyVariant() *variant {
	for _, name := range allVariants {
		if v := h.variants[name]; v != nil && name != "offset" {
			return v
		}
	}
	return nil
}

// scenario is one measured workload.
type scenario struct {
	id       string
	variants []string
	// op builds the operation for a variant; check, when set, is the mix's
	// read-your-writes counter.
	op    func(h *harness, v *variant, viol *violations) op
	depth int
}

// violations counts reads that returned something older than the reading
// simulated user had itself written.
type violations struct {
	mu sync.Mutex
	n  int
}

func (vi *violations) add() { vi.mu.Lock(); vi.n++; vi.mu.Unlock() }

var hotVariants = []string{"raw-primary", "hsdal-nocache", "hsdal", "hsdal-l1", "pgpool"}

func scenarioIDs() []string {
	return []string{"hot-token", "hot-profile", "hot-devices", "hot-members", "hot-isjoined", "paging-depth-<N>", "mix", "routing", "routing-replica"}
}

func (h *harness) scenarios() []scenario {
	users, rooms := newZipf(h.ds.sc.Users, 1.1), newZipf(h.ds.sc.Rooms, 1.1)
	ss := []scenario{
		{id: "hot-token", variants: hotVariants, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.AccessTokens.LookupToken(ctx, firstTokenOf(users.next(rng)))
				return err
			}
		}},
		{id: "hot-profile", variants: hotVariants, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.Users.GetUser(ctx, userID(users.next(rng)))
				return err
			}
		}},
		{id: "hot-devices", variants: hotVariants, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: userID(users.next(rng))})
				return err
			}
		}},
		{id: "hot-members", variants: hotVariants, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: roomID(rooms.next(rng))})
				return err
			}
		}},
		{id: "hot-isjoined", variants: hotVariants, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				r := rooms.next(rng)
				m := h.ds.members[r]
				ok, err := v.r.Memberships.IsJoined(ctx, roomID(r), userID(m[rng.IntN(len(m))]))
				if err == nil && !ok {
					return errors.New("member not joined")
				}
				return err
			}
		}},
	}
	for _, d := range h.depths {
		ss = append(ss, scenario{id: fmt.Sprintf("paging-depth-%d", d), depth: d,
			variants: []string{"raw-primary", "hsdal-nocache", "hsdal", "offset"},
			op: func(h *harness, v *variant, _ *violations) op {
				if v.name == "offset" {
					return offsetPage(v.pool, d)
				}
				from := h.cursors[d]
				return func(ctx context.Context, _ int, _ *rand.Rand) error {
					p, err := v.r.Events.PageEvents(ctx, repos.EventPageRequest{RoomID: deepRoomID(), From: from, Dir: repos.Backward, Limit: pageLimit})
					if err == nil && len(p.Items) != pageLimit {
						err = fmt.Errorf("page at depth %d has %d events", d, len(p.Items))
					}
					return err
				}
			}})
	}
	ss = append(ss,
		scenario{id: "mix", variants: hotVariants, op: mixOp},
		scenario{id: "routing", variants: []string{"raw-primary", "hsdal-nocache"}, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.Users.GetUser(ctx, userID(rng.IntN(h.ds.sc.Users)), router.Strong())
				return err
			}
		}},
		scenario{id: "routing-replica", variants: []string{"raw-replica", "hsdal-nocache-1r"}, op: func(h *harness, v *variant, _ *violations) op {
			return func(ctx context.Context, _ int, rng *rand.Rand) error {
				_, err := v.r.Users.GetUser(ctx, userID(rng.IntN(h.ds.sc.Users)))
				return err
			}
		}},
	)
	if h.o.scenarios == "" {
		return ss
	}
	var out []scenario
	for _, s := range ss {
		for _, want := range strings.Split(h.o.scenarios, ",") {
			if want = strings.TrimSpace(want); want != "" && strings.HasPrefix(s.id, strings.TrimSuffix(want, "<N>")) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

const pageLimit = 50

// offsetPage is the OFFSET query a naive implementation would run for the
// same page; it lives here only, for comparison (repos never uses OFFSET).
func offsetPage(pool *pgxpool.Pool, depth int) op {
	return func(ctx context.Context, _ int, _ *rand.Rand) error {
		rows, err := pool.Query(ctx, `SELECT event_id, stream_ordering, room_id, sender, type, state_key, content, origin_server_ts, created_ts
FROM room_events WHERE room_id = $1 AND deleted_at IS NULL ORDER BY stream_ordering DESC OFFSET $2 LIMIT $3`, deepRoomID(), depth, pageLimit)
		if err != nil {
			return err
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if n != pageLimit {
			return fmt.Errorf("offset page at depth %d has %d events", depth, n)
		}
		return nil
	}
}

// mixOp is the homeserver mix: ~90% reads, ~10% writes. Worker w is the
// simulated user u(w); it carries its consistency token between requests as
// a homeserver would hand it to its client, and every read of its own profile
// is checked against the display name it last wrote.
func mixOp(h *harness, v *variant, viol *violations) op {
	type userState struct {
		token   string
		written string
		seq     int
	}
	states := make([]userState, h.o.concurrency)
	rooms := newZipf(h.ds.sc.Rooms, 1.1)
	// Each worker of each variant owns one user, so the only writes to its
	// profile are its own: a read that misses one is a real violation.
	base := slices.Index(allVariants, v.name) * h.o.concurrency
	return func(ctx context.Context, w int, rng *rand.Rand) error {
		st := &states[w]
		u := (base + w) % h.ds.sc.Users
		tok, err := router.DecodeToken(st.token)
		if err != nil {
			return err
		}
		ctx = router.WithSession(ctx, tok)
		defer func() { st.token = router.SessionToken(ctx).Encode() }()
		switch p := rng.IntN(100); {
		case p < 5: // profile change, then the user's next read must show it
			st.seq++
			name := fmt.Sprintf("user %d v%d", u, st.seq)
			if _, _, err := v.r.Users.UpdateProfile(ctx, userID(u), repos.ProfileUpdate{DisplayName: &name}); err != nil {
				return err
			}
			st.written = name
			return nil
		case p < 8: // join a room (a no-op conflict if already joined) and send a message there
			r := 1 + rng.IntN(max(1, h.ds.sc.Rooms-1))
			if _, _, err := v.r.Memberships.Join(ctx, roomID(r), userID(u)); err != nil && !errors.Is(err, repos.ErrConflict) {
				return err
			}
			_, _, err := v.r.Events.AppendEvent(ctx, repos.NewEvent{EventID: fmt.Sprintf("$mix%d_%d_%x:%s", base, w, rng.Uint64(), benchServer), RoomID: roomID(r),
				Sender: userID(u), Type: "m.room.message", Content: []byte(`{"msgtype":"m.text","body":"hi"}`)})
			return err
		case p < 10: // device seen again
			_, _, err := v.r.Devices.TouchDevice(ctx, repos.DeviceTouch{UserID: userID(u), DeviceID: deviceID(u, 0), IP: "127.0.0.1"})
			return err
		case p < 40: // own profile, checked
			got, err := v.r.Users.GetUser(ctx, userID(u))
			if err != nil {
				return err
			}
			if st.written != "" && (got.DisplayName == nil || *got.DisplayName != st.written) {
				viol.add()
			}
			return nil
		case p < 60:
			_, err := v.r.AccessTokens.LookupToken(ctx, firstTokenOf(u))
			return err
		case p < 75:
			_, err := v.r.Devices.ListDevices(ctx, repos.DevicePageRequest{UserID: userID(u)})
			return err
		case p < 90:
			_, err := v.r.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: roomID(rooms.next(rng))})
			return err
		default:
			r := rooms.next(rng)
			_, err := v.r.Memberships.IsJoined(ctx, roomID(r), userID(u))
			return err
		}
	}
}

// runAll runs every scenario against every variant that applies.
func (h *harness) runAll(ctx context.Context) (*report, error) {
	rep := &report{}
	for name, why := range h.unavailable {
		rep.Meta.Notes = append(rep.Meta.Notes, fmt.Sprintf("variant %s not run: %s", name, why))
	}
	slices.Sort(rep.Meta.Notes)
	if h.pgpool != nil {
		rep.Meta.Pgpool, rep.Meta.PgpoolMode = h.pgpool.version, pgpoolMode
	}
	for _, s := range h.scenarios() {
		levels := []int{h.o.concurrency}
		if s.id == "hot-profile" && h.o.sweep != "" {
			levels = nil
			for _, f := range strings.Split(h.o.sweep, ",") {
				if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
					levels = append(levels, n)
				}
			}
		}
		for _, conc := range levels {
			rows, err := h.runScenario(ctx, s, conc)
			if err != nil {
				return nil, err
			}
			rep.Results = append(rep.Results, rows...)
		}
	}
	return rep, nil
}

// runScenario runs s at one concurrency for every available variant, in
// rounds with rotating variant order so drift hits all variants alike.
func (h *harness) runScenario(ctx context.Context, s scenario, conc int) ([]resultRow, error) {
	var vs []*variant
	for _, name := range s.variants {
		if v := h.variants[name]; v != nil {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return nil, nil
	}
	type acc struct {
		res        loadResult
		viol       violations
		op         op
		replica    float64
		replicaAll float64
		hits       float64
		lookups    float64
	}
	accs := make([]*acc, len(vs))
	for i, v := range vs {
		accs[i] = &acc{}
		accs[i].op = s.op(h, v, &accs[i].viol)
	}
	per := h.o.duration / time.Duration(h.o.rounds)
	h.progress("%-20s conc %-3d %d variants × %d rounds × %v", s.id, conc, len(vs), h.o.rounds, per)
	// Warm up: fill every variant's pools (and caches) at this concurrency
	// before anything is measured.
	for i := range vs {
		var discard violations
		runLoad(ctx, conc, max(per/4, 100*time.Millisecond), 0, h.o.seed^0xfeed, s.op(h, vs[i], &discard))
	}
	for round := range h.o.rounds {
		for k := range vs {
			i := (k + round) % len(vs)
			v, a := vs[i], accs[i]
			r0, t0 := h.replicaCounts(ctx, v)
			h0, l0 := cacheCounts(v)
			res := runLoad(ctx, conc, per, 0, h.o.seed+uint64(round), a.op)
			r1, t1 := h.replicaCounts(ctx, v)
			h1, l1 := cacheCounts(v)
			a.replica += r1 - r0
			a.replicaAll += t1 - t0
			a.hits += h1 - h0
			a.lookups += l1 - l0
			a.res.ops += res.ops
			a.res.errors += res.errors
			a.res.elapsed += res.elapsed
			a.res.lat = append(a.res.lat, res.lat...)
			if a.res.firstErr == nil {
				a.res.firstErr = res.firstErr
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
	}
	var rows []resultRow
	for i, v := range vs {
		a := accs[i]
		slices.Sort(a.res.lat)
		row := newRow(s.id, v.name, conc, a.res)
		row.Depth = s.depth
		row.RYWViolations = a.viol.n
		if a.replicaAll > 0 {
			row.ReplicaShare = a.replica / a.replicaAll
		}
		if a.lookups > 0 {
			row.HitRate = a.hits / a.lookups
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// cacheCounts returns a cached variant's cache hits (in-process tier or
// Redis) and lookups so far; 0, 0 without a cache.
func cacheCounts(v *variant) (hits, lookups float64) {
	if v.dal == nil {
		return 0, 0
	}
	s, ok := v.dal.CacheStats()
	if !ok {
		return 0, 0
	}
	h := float64(s.L1Hits + s.RedisHits)
	return h, h + float64(s.Misses)
}

// replicaCounts returns how many queries so far went to replicas, and how
// many in all: from the router's metrics for hsdal variants, from pgpool's
// per-backend SELECT counts for pgpool, and 0, 0 otherwise.
func (h *harness) replicaCounts(ctx context.Context, v *variant) (replica, total float64) {
	switch {
	case v.reader != nil:
		var rm metricdata.ResourceMetrics
		if err := v.reader.Collect(ctx, &rm); err != nil {
			return 0, 0
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "hsdal.router.queries" {
					continue
				}
				sum, ok := m.Data.(metricdata.Sum[int64])
				if !ok {
					continue
				}
				for _, dp := range sum.DataPoints {
					total += float64(dp.Value)
					if role, ok := dp.Attributes.Value("role"); ok && role.AsString() == "replica" {
						replica += float64(dp.Value)
					}
				}
			}
		}
	case v.name == "pgpool" && v.pool != nil:
		rows, err := v.pool.Query(ctx, "SHOW pool_nodes")
		if err != nil {
			return 0, 0
		}
		defer rows.Close()
		cols := rows.FieldDescriptions()
		idx, role := -1, -1
		for i, c := range cols {
			switch c.Name {
			case "select_cnt":
				idx = i
			case "role":
				role = i
			}
		}
		for rows.Next() {
			vals, err := rows.Values()
			if err != nil || idx < 0 || role < 0 {
				return 0, 0
			}
			n, _ := strconv.ParseFloat(fmt.Sprint(vals[idx]), 64)
			total += n
			if fmt.Sprint(vals[role]) == "standby" {
				replica += n
			}
		}
	}
	return replica, total
}
