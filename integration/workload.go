package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hsdal/hsdal/dal"
	"github.com/hsdal/hsdal/repos"
	"github.com/hsdal/hsdal/router"
)

// Mix weighs the operations a simulated user picks from. A zero Mix means
// DefaultMix. Weights are relative; a zero weight disables the operation.
type Mix struct {
	SetProfile       int // write own displayname with the next version
	AppendEvent      int // append an event with a fresh ID to a room
	ToggleEvent      int // soft-delete or restore one of one's events
	SendMessage      int // send a private message
	ToggleMessage    int // soft-delete or restore one of one's messages
	ToggleMembership int // join or leave a room
	ReadOwnProfile   int // own profile, ReadYourWrites(carried token)
	ReadOwnStrong    int // own profile, Strong
	ReadOwnEvents    int // own recent events, in the session
	ReadOwnMessage   int // one own message, in the session
	ReadOwnMember    int // own membership, in the session
	ReadOtherProfile int // a followed user's profile (one of the next two users), BoundedStaleness(d)
	ReadTimeline     int // a room's newest events, BoundedStaleness(d)
	ReadOwnJoined    int // IsJoined for oneself, in the session (a cached entity)
	ReadOtherJoined  int // IsJoined for a followed user, BoundedStaleness(d)
	ReadMembers      int // a room's joined members, BoundedStaleness(d) (a cached entity)
	// ReadPublic: a followed user's profile or a room's members read
	// outside any session (a request without the client's token, e.g. a
	// federation or public-directory read), BoundedStaleness(d).
	ReadPublic int
}

// DefaultMix is a homeserver-like mix: about 40% writes.
var DefaultMix = Mix{
	SetProfile: 12, AppendEvent: 14, ToggleEvent: 5, SendMessage: 8, ToggleMessage: 3, ToggleMembership: 4,
	ReadOwnProfile: 10, ReadOwnStrong: 2, ReadOwnEvents: 8, ReadOwnMessage: 5, ReadOwnMember: 4,
	ReadOtherProfile: 12, ReadTimeline: 10, ReadOwnJoined: 3, ReadOtherJoined: 3, ReadMembers: 3,
	ReadPublic: 8,
}

// WorkloadConfig configures a Workload. Only DALs is required.
type WorkloadConfig struct {
	// DALs are independently opened DALs over one cluster (homeserver
	// instances behind a load balancer): every request of every user goes
	// through one picked at random, with the user's token carried between
	// requests as its encoded string.
	DALs []*dal.DAL
	// Users is the number of simulated users, each running its requests
	// one after another on its own goroutine. Default 16.
	Users int
	// TimelineRooms is the number of rooms users append events to.
	// Default 3.
	TimelineRooms int
	// ToggleRooms is the number of rooms users join and leave. Default 2.
	ToggleRooms int
	// Seed makes every user's choice of operations reproducible.
	Seed uint64
	// OpTimeout bounds each request. Default 5s.
	OpTimeout time.Duration
	// ThinkTime is the pause between two requests of one user. Default 0.
	ThinkTime time.Duration
	// ErrorBackoff is the pause after a request failed with ErrUnavailable,
	// as a client would back off, so that fast failures during an outage do
	// not flood the history. Default 50ms; negative means none.
	ErrorBackoff time.Duration
	// Bounds are the staleness bounds bounded reads pick from. Default
	// 250ms, 500ms, 1s, 2s.
	Bounds []time.Duration
	// Mix weighs the operations. Zero means DefaultMix.
	Mix Mix
	// Prefix namespaces every ID the workload creates. Default: derived
	// from the seed and the clock, so runs never collide.
	Prefix string
	// Server is the server name of the Matrix IDs. Default "chaos.test".
	Server string
}

// Workload is a set of simulated homeserver users driving DALs and
// recording every request and its result in a History. Create it with
// NewWorkload, then call Setup once, Run once and ReadFinal once, in that
// order, from one goroutine; Attempted and TokenErrors are safe to call
// concurrently with Run.
type Workload struct {
	cfg    WorkloadConfig
	h      *History
	users  []*user
	rooms  []string // timeline rooms
	toggle []string // membership rooms
	ops    []opFunc
	total  int

	mu       sync.Mutex
	roomEvts map[string][]roomEvent // timeline room → acked appends (stream ordering, object)

	attempted   atomic.Int64
	tokenErrors atomic.Int64
}

type roomEvent struct {
	so  int64
	obj string
}

type opFunc struct {
	weight int
	name   string
	run    func(w *Workload, u *user)
}

// user is one simulated user; only its own goroutine touches it.
type user struct {
	idx      int
	id       string
	rng      *rand.Rand
	token    string
	lastGood router.Token
	version  int64
	session  int64 // private session with the next user
	nEvent   int
	nMsg     int
	events   []*ownEvent
	msgs     []*ownMsg
	member   map[string]string // toggle room → believed membership
	// unavailable: the last request failed with ErrUnavailable.
	unavailable bool
}

type ownEvent struct {
	id      string
	room    string
	outcome Outcome
	live    bool // believed state
}

type ownMsg struct {
	key  string
	id   int64
	live bool
}

// NewWorkload validates cfg and fills its defaults.
func NewWorkload(cfg WorkloadConfig) (*Workload, error) {
	if len(cfg.DALs) == 0 {
		return nil, errors.New("integration: workload needs at least one DAL")
	}
	if cfg.Users == 0 {
		cfg.Users = 16
	}
	if cfg.Users < 2 || cfg.Users > repos.DefaultMaxPageSize {
		return nil, fmt.Errorf("integration: workload needs 2 to %d users", repos.DefaultMaxPageSize)
	}
	if cfg.TimelineRooms <= 0 {
		cfg.TimelineRooms = 3
	}
	if cfg.ToggleRooms <= 0 {
		cfg.ToggleRooms = 2
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	switch {
	case cfg.ErrorBackoff == 0:
		cfg.ErrorBackoff = 50 * time.Millisecond
	case cfg.ErrorBackoff < 0:
		cfg.ErrorBackoff = 0
	}
	if len(cfg.Bounds) == 0 {
		cfg.Bounds = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second}
	}
	if cfg.Mix == (Mix{}) {
		cfg.Mix = DefaultMix
	}
	if cfg.Server == "" {
		cfg.Server = "chaos.test"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "c" + strconv.FormatUint(cfg.Seed%100000, 36) + "x" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	}
	w := &Workload{cfg: cfg, roomEvts: map[string][]roomEvent{}}
	m := cfg.Mix
	for _, o := range []opFunc{
		{m.SetProfile, "set_profile", (*Workload).setProfile},
		{m.AppendEvent, "append_event", (*Workload).appendEvent},
		{m.ToggleEvent, "toggle_event", (*Workload).toggleEvent},
		{m.SendMessage, "send_message", (*Workload).sendMessage},
		{m.ToggleMessage, "toggle_message", (*Workload).toggleMessage},
		{m.ToggleMembership, "toggle_membership", (*Workload).toggleMembership},
		{m.ReadOwnProfile, "read_own_profile", (*Workload).readOwnProfile},
		{m.ReadOwnStrong, "read_own_profile_strong", (*Workload).readOwnStrong},
		{m.ReadOwnEvents, "read_own_events", (*Workload).readOwnEvents},
		{m.ReadOwnMessage, "read_own_message", (*Workload).readOwnMessage},
		{m.ReadOwnMember, "read_own_membership", (*Workload).readOwnMember},
		{m.ReadOtherProfile, "read_other_profile", (*Workload).readOtherProfile},
		{m.ReadTimeline, "read_timeline", (*Workload).readTimeline},
		{m.ReadOwnJoined, "read_own_joined", (*Workload).readOwnJoined},
		{m.ReadOtherJoined, "read_other_joined", (*Workload).readOtherJoined},
		{m.ReadMembers, "read_members", (*Workload).readMembers},
		{m.ReadPublic, "read_public", (*Workload).readPublic},
	} {
		if o.weight < 0 {
			return nil, fmt.Errorf("integration: negative weight for %s", o.name)
		}
		if o.weight > 0 {
			w.ops = append(w.ops, o)
			w.total += o.weight
		}
	}
	return w, nil
}

// History is the workload's history (nil before Setup).
func (w *Workload) History() *History { return w.h }

// Attempted is the number of requests started so far (safe for concurrent
// use, e.g. for a progress line).
func (w *Workload) Attempted() int64 { return w.attempted.Load() }

// TokenErrors is the number of carried tokens that did not decode (must be 0).
func (w *Workload) TokenErrors() int64 { return w.tokenErrors.Load() }

// UserIDs returns the simulated users' Matrix IDs (after Setup).
func (w *Workload) UserIDs() []string {
	out := make([]string, len(w.users))
	for i, u := range w.users {
		out[i] = u.id
	}
	return out
}

// Setup creates the users (displayname version 0), the rooms and one private
// session per user (with the next user), recording the profile writes in
// the history, and gives every user a token covering all of it. It retries
// transient errors until ctx ends, so run it before any fault.
func (w *Workload) Setup(ctx context.Context) error {
	w.h = NewHistory(time.Now())
	d := w.cfg.DALs[0]
	var all router.Token
	retry := func(what string, f func() (router.Token, error)) error {
		for {
			tok, err := f()
			if err == nil {
				all = all.Merge(tok)
				return nil
			}
			if !router.Retryable(err) || ctx.Err() != nil {
				return fmt.Errorf("integration: setup: %s: %w", what, err)
			}
			t := time.NewTimer(50 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
	}
	for i := range w.cfg.Users {
		u := &user{
			idx:    i,
			id:     fmt.Sprintf("@%s-u%d:%s", w.cfg.Prefix, i, w.cfg.Server),
			rng:    rand.New(rand.NewPCG(w.cfg.Seed, uint64(i)+1)),
			member: map[string]string{},
		}
		w.users = append(w.users, u)
		obj := profileObj(u.id)
		w.h.Declare(obj, StateAbsent)
		name := displayName(u, 0)
		op := &Op{User: i, Kind: "setup_profile", Object: obj, Target: VersionState(0), Start: w.h.Now()}
		err := retry("create user", func() (router.Token, error) {
			_, tok, err := d.Users.CreateUser(ctx, repos.NewUser{UserID: u.id, DisplayName: &name})
			if err == nil {
				op.WriteToken = tok.Encode()
			}
			return tok, err
		})
		op.End = w.h.Now()
		if err != nil {
			return err
		}
		op.Outcome = Acked
		w.h.Add(op)
	}
	creator := w.users[0].id
	for i := range w.cfg.TimelineRooms + w.cfg.ToggleRooms {
		id := fmt.Sprintf("!%s-r%d:%s", w.cfg.Prefix, i, w.cfg.Server)
		if err := retry("create room", func() (router.Token, error) {
			_, tok, err := d.Rooms.CreateRoom(ctx, repos.NewRoom{RoomID: id, Creator: creator})
			return tok, err
		}); err != nil {
			return err
		}
		if i < w.cfg.TimelineRooms {
			w.rooms = append(w.rooms, id)
		} else {
			w.toggle = append(w.toggle, id)
		}
	}
	for _, u := range w.users {
		for _, r := range w.toggle {
			u.member[r] = StateNone
			w.h.Declare(memberObj(r, u.id), StateNone)
		}
		peer := w.users[(u.idx+1)%len(w.users)]
		if err := retry("create session", func() (router.Token, error) {
			s, _, tok, err := d.PrivateMessages.GetOrCreateSession(ctx, u.id, peer.id)
			u.session = s.ID
			return tok, err
		}); err != nil {
			return err
		}
	}
	enc := all.Encode()
	for _, u := range w.users {
		u.token = enc
	}
	return nil
}

func displayName(u *user, v int64) string { return fmt.Sprintf("u%d#%d", u.idx, v) }

// parseVersion turns a displayname back into a profile state.
func parseVersion(u string, name *string) string {
	if name == nil {
		return "?nil"
	}
	prefix, v, ok := strings.Cut(*name, "#")
	if !ok || prefix != u {
		return "?" + *name
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return "?" + *name
	}
	return VersionState(n)
}

// Run drives every user until ctx ends, then waits for the requests in
// flight (each bounded by OpTimeout; they are not cancelled by ctx, so the
// last ones finish with a real outcome) and returns.
func (w *Workload) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, u := range w.users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				pause := w.cfg.ThinkTime
				if w.step(u) {
					pause += w.cfg.ErrorBackoff
				}
				if pause > 0 {
					t := time.NewTimer(pause)
					select {
					case <-ctx.Done():
						t.Stop()
					case <-t.C:
					}
				}
			}
		}()
	}
	wg.Wait()
}

// step runs one request of u and reports whether it failed with
// ErrUnavailable.
func (w *Workload) step(u *user) bool {
	n := u.rng.IntN(w.total)
	for _, o := range w.ops {
		if n < o.weight {
			w.attempted.Add(1)
			u.unavailable = false
			o.run(w, u)
			return u.unavailable
		}
		n -= o.weight
	}
	return false
}

// call is one request in flight.
type call struct {
	ctx    context.Context
	cancel context.CancelFunc
	d      *dal.DAL
	op     *Op
	public bool // no session: the user's token is neither used nor updated
}

// begin starts a request of u: a fresh context (not tied to Run's, so the
// last requests finish normally) with u's session token, on a random DAL.
func (w *Workload) begin(u *user, kind string) *call {
	di := u.rng.IntN(len(w.cfg.DALs))
	tok, err := router.DecodeToken(u.token)
	if err != nil {
		// A token Encode made that DecodeToken refuses: the router's bug.
		// Count it and go on with the token the user had last time.
		w.tokenErrors.Add(1)
		tok = u.lastGood
	}
	u.lastGood = tok
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout)
	ctx = router.WithSession(ctx, tok)
	return &call{ctx: ctx, cancel: cancel, d: w.cfg.DALs[di],
		op: &Op{User: u.idx, DAL: di, Kind: kind, TokenBefore: u.token, Start: w.h.Now()}}
}

// done records the request's end and u's new token, and adds it to the
// history.
func (w *Workload) done(u *user, c *call) {
	if c.op.End == 0 {
		c.op.End = w.h.Now()
	}
	if !c.public {
		u.token = router.SessionToken(c.ctx).Encode()
		c.op.Token = u.token
	}
	u.unavailable = c.op.ErrKind == "unavailable"
	c.cancel()
	w.h.Add(c.op)
}

// writeResult records a write's outcome from its error (see Outcome).
func writeResult(op *Op, tok router.Token, err error) {
	op.Outcome, op.ErrKind = classifyWrite(err)
	if err != nil {
		op.Err = err.Error()
	}
	if !tok.IsZero() {
		op.WriteToken = tok.Encode()
		op.TokenReturned = op.Outcome == Unknown
	}
}

// classifyWrite maps a DAL write error to an outcome and an error kind.
func classifyWrite(err error) (Outcome, string) {
	switch {
	case err == nil:
		return Acked, ""
	case errors.Is(err, router.ErrCommitUnknown):
		return Unknown, "commit_unknown"
	case errors.Is(err, router.ErrUnavailable):
		return Failed, "unavailable"
	case errors.Is(err, repos.ErrNotFound):
		return Failed, "not_found"
	case errors.Is(err, repos.ErrConflict):
		return Failed, "conflict"
	case errors.Is(err, repos.ErrInvalidArgument):
		return Failed, "invalid_argument"
	case errors.Is(err, context.DeadlineExceeded):
		// Without ErrCommitUnknown the router never sent COMMIT.
		return Failed, "deadline"
	case errors.Is(err, context.Canceled):
		return Failed, "canceled"
	}
	return Unknown, "other"
}

// readResult records a read's error (nil: answered).
func readResult(op *Op, err error) {
	if err == nil {
		op.Outcome = Acked
		return
	}
	op.Outcome = Failed
	op.Err = err.Error()
	switch {
	case errors.Is(err, router.ErrUnavailable):
		op.ErrKind = "unavailable"
	case errors.Is(err, context.DeadlineExceeded):
		op.ErrKind = "deadline"
	case errors.Is(err, context.Canceled):
		op.ErrKind = "canceled"
	case errors.Is(err, repos.ErrInvalidArgument), errors.Is(err, repos.ErrInvalidCursor):
		op.ErrKind = "invalid_argument"
	default:
		op.ErrKind = "other"
	}
}

func (w *Workload) bound(u *user) time.Duration { return w.cfg.Bounds[u.rng.IntN(len(w.cfg.Bounds))] }

// ---- writes ----

func (w *Workload) setProfile(u *user) {
	u.version++
	name := displayName(u, u.version)
	c := w.begin(u, "set_profile")
	c.op.Object, c.op.Target = profileObj(u.id), VersionState(u.version)
	_, tok, err := c.d.Users.UpdateProfile(c.ctx, u.id, repos.ProfileUpdate{DisplayName: &name})
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	w.done(u, c)
}

const eventType = "m.room.message"

// expectedEvent is what an event row must contain, for half-applied checks.
func expectedEvent(room, sender string, content json.RawMessage) map[string]any {
	var v any
	_ = json.Unmarshal(content, &v)
	return map[string]any{"room": room, "sender": sender, "type": eventType, "content": v}
}

func gotEvent(e repos.Event) map[string]any {
	var v any
	if err := json.Unmarshal(e.Content, &v); err != nil {
		v = "undecodable: " + err.Error()
	}
	return map[string]any{"room": e.RoomID, "sender": e.Sender, "type": e.Type, "content": v}
}

func expectedMessage(sender string, session int64, content json.RawMessage) map[string]any {
	var v any
	_ = json.Unmarshal(content, &v)
	return map[string]any{"sender": sender, "session": float64(session), "content": v}
}

func gotMessage(m repos.PrivateMessage) map[string]any {
	var v any
	if err := json.Unmarshal(m.Content, &v); err != nil {
		v = "undecodable: " + err.Error()
	}
	sender := ""
	if m.SenderID != nil {
		sender = *m.SenderID
	}
	return map[string]any{"sender": sender, "session": float64(m.SessionID), "content": v}
}

// mismatch describes how got differs from the expected content of obj ("" if equal).
func (w *Workload) mismatch(obj string, got map[string]any) string {
	want, ok := w.h.Content(obj)
	if !ok {
		return "row for an object whose write content was not recorded"
	}
	if reflect.DeepEqual(want, got) {
		return ""
	}
	return fmt.Sprintf("row differs from what its write sent: got %v, want %v", got, want)
}

func (w *Workload) appendEvent(u *user) {
	u.nEvent++
	id := fmt.Sprintf("$%s-u%d-e%d:%s", w.cfg.Prefix, u.idx, u.nEvent, w.cfg.Server)
	room := w.rooms[u.rng.IntN(len(w.rooms))]
	content, _ := json.Marshal(map[string]any{"body": fmt.Sprintf("event %d of user %d", u.nEvent, u.idx), "k": id, "n": u.nEvent})
	obj := eventObj(id)
	w.h.Declare(obj, StateAbsent)
	w.h.SetContent(obj, expectedEvent(room, u.id, content))
	c := w.begin(u, "append_event")
	c.op.Object, c.op.Target = obj, StateLive
	ev, tok, err := c.d.Events.AppendEvent(c.ctx, repos.NewEvent{EventID: id, RoomID: room, Sender: u.id, Type: eventType, Content: content})
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	if c.op.Outcome == Acked {
		w.h.SetStreamOrdering(obj, ev.StreamOrdering)
		w.mu.Lock()
		evs := w.roomEvts[room]
		i := sort.Search(len(evs), func(i int) bool { return evs[i].so > ev.StreamOrdering })
		w.roomEvts[room] = slices.Insert(evs, i, roomEvent{so: ev.StreamOrdering, obj: obj})
		w.mu.Unlock()
		if m := w.mismatch(obj, gotEvent(ev)); m != "" {
			c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: "returned by AppendEvent: " + m})
		}
	}
	u.events = append(u.events, &ownEvent{id: id, room: room, outcome: c.op.Outcome, live: c.op.Outcome != Failed})
	w.done(u, c)
}

func (w *Workload) toggleEvent(u *user) {
	var cand []*ownEvent
	for _, e := range u.events {
		if e.outcome != Failed {
			cand = append(cand, e)
		}
	}
	if len(cand) == 0 {
		w.appendEvent(u)
		return
	}
	e := cand[u.rng.IntN(len(cand))]
	obj := eventObj(e.id)
	var (
		c   *call
		tok router.Token
		err error
	)
	if e.live {
		c = w.begin(u, "delete_event")
		c.op.Object, c.op.Target = obj, StateDeleted
		tok, err = c.d.Events.DeleteEvent(c.ctx, e.id)
	} else {
		c = w.begin(u, "restore_event")
		c.op.Object, c.op.Target = obj, StateLive
		tok, err = c.d.Events.RestoreEvent(c.ctx, e.id)
	}
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	w.softToggleResult(c.op, obj, &e.live)
	w.done(u, c)
}

// softToggleResult updates the belief after a delete/restore and records
// what a refusal proves about the primary: "no live row to delete" means
// absent or deleted; "no deleted row to restore" means absent or live.
func (w *Workload) softToggleResult(op *Op, obj string, live *bool) {
	switch {
	case op.Outcome == Acked:
		*live = op.Target == StateLive
	case op.ErrKind == "not_found":
		// No live row to delete: absent or already deleted; no deleted row
		// to restore: absent or already live. Either way {absent, target}.
		*live = op.Target == StateLive
		op.Obs = append(op.Obs, Observation{Object: obj, States: []string{StateAbsent, op.Target}})
		op.Level = LevelPrimary
	case op.Outcome == Unknown:
		*live = !*live // either is possible; try the other way next time half the time
	}
}

func (w *Workload) sendMessage(u *user) {
	u.nMsg++
	key := fmt.Sprintf("%s-u%d-m%d", w.cfg.Prefix, u.idx, u.nMsg)
	content, _ := json.Marshal(map[string]any{"body": fmt.Sprintf("message %d of user %d", u.nMsg, u.idx), "k": key})
	obj := messageObj(key)
	w.h.Declare(obj, StateAbsent)
	w.h.SetContent(obj, expectedMessage(u.id, u.session, content))
	c := w.begin(u, "send_message")
	c.op.Object, c.op.Target = obj, StateLive
	m, tok, err := c.d.PrivateMessages.SendMessage(c.ctx, u.session, u.id, content)
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	if c.op.Outcome == Acked {
		u.msgs = append(u.msgs, &ownMsg{key: key, id: m.ID, live: true})
		if mm := w.mismatch(obj, gotMessage(m)); mm != "" {
			c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: "returned by SendMessage: " + mm})
		}
	}
	w.done(u, c)
}

func (w *Workload) toggleMessage(u *user) {
	if len(u.msgs) == 0 {
		w.sendMessage(u)
		return
	}
	m := u.msgs[u.rng.IntN(len(u.msgs))]
	obj := messageObj(m.key)
	var (
		c   *call
		tok router.Token
		err error
	)
	if m.live {
		c = w.begin(u, "delete_message")
		c.op.Object, c.op.Target = obj, StateDeleted
		tok, err = c.d.PrivateMessages.DeleteMessage(c.ctx, m.id)
	} else {
		c = w.begin(u, "restore_message")
		c.op.Object, c.op.Target = obj, StateLive
		tok, err = c.d.PrivateMessages.RestoreMessage(c.ctx, m.id)
	}
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	w.softToggleResult(c.op, obj, &m.live)
	w.done(u, c)
}

func (w *Workload) toggleMembership(u *user) {
	room := w.toggle[u.rng.IntN(len(w.toggle))]
	obj := memberObj(room, u.id)
	var (
		c   *call
		tok router.Token
		err error
	)
	if u.member[room] == StateJoin {
		c = w.begin(u, "leave")
		c.op.Object, c.op.Target = obj, StateLeave
		_, tok, err = c.d.Memberships.Leave(c.ctx, room, u.id)
	} else {
		c = w.begin(u, "join")
		c.op.Object, c.op.Target = obj, StateJoin
		_, tok, err = c.d.Memberships.Join(c.ctx, room, u.id)
	}
	c.op.End = w.h.Now()
	writeResult(c.op, tok, err)
	switch {
	case c.op.Outcome == Acked:
		u.member[room] = c.op.Target
	case c.op.ErrKind == "conflict" && c.op.Target == StateLeave:
		// A self-leave is refused only when not joined (nor invited/knocking).
		u.member[room] = StateLeave
		c.op.Level = LevelPrimary
		c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateNone, StateLeave}})
	case c.op.Outcome == Unknown:
		if u.rng.IntN(2) == 0 {
			u.member[room] = c.op.Target
		}
	}
	w.done(u, c)
}

// ---- reads ----

func (w *Workload) profileObs(c *call, userID string, usr repos.User, err error, index int) {
	readResult(c.op, err)
	switch {
	case err == nil:
		c.op.Obs = append(c.op.Obs, Observation{Object: profileObj(userID), States: []string{parseVersion("u"+strconv.Itoa(index), usr.DisplayName)}})
	case errors.Is(err, repos.ErrNotFound):
		c.op.Outcome, c.op.ErrKind, c.op.Err = Acked, "", ""
		c.op.Obs = append(c.op.Obs, Observation{Object: profileObj(userID), States: []string{StateAbsent}})
	}
}

func (w *Workload) readOwnProfile(u *user) {
	c := w.begin(u, "read_own_profile")
	c.op.Level = LevelSession
	tok, _ := router.DecodeToken(u.token)
	usr, err := c.d.Users.GetUser(c.ctx, u.id, router.ReadYourWrites(tok))
	c.op.End = w.h.Now()
	w.profileObs(c, u.id, usr, err, u.idx)
	w.done(u, c)
}

func (w *Workload) readOwnStrong(u *user) {
	c := w.begin(u, "read_own_profile_strong")
	c.op.Level = LevelStrong
	usr, err := c.d.Users.GetUser(c.ctx, u.id, router.Strong())
	c.op.End = w.h.Now()
	w.profileObs(c, u.id, usr, err, u.idx)
	w.done(u, c)
}

func (w *Workload) readOtherProfile(u *user) {
	other := w.followed(u)
	c := w.begin(u, "read_other_profile")
	c.op.Level, c.op.Bound = LevelBounded, w.bound(u)
	usr, err := c.d.Users.GetUser(c.ctx, w.users[other].id, router.BoundedStaleness(c.op.Bound))
	c.op.End = w.h.Now()
	w.profileObs(c, w.users[other].id, usr, err, other)
	w.done(u, c)
}

func (w *Workload) readOwnEvents(u *user) {
	if len(u.events) == 0 {
		w.appendEvent(u)
		return
	}
	// Up to 20 random own events, whatever their append's outcome.
	ids := make([]string, 0, 20)
	seen := map[string]bool{}
	for range 20 {
		e := u.events[u.rng.IntN(len(u.events))]
		if !seen[e.id] {
			seen[e.id] = true
			ids = append(ids, e.id)
		}
	}
	c := w.begin(u, "read_own_events")
	c.op.Level = LevelSession
	got, err := c.d.Events.GetEvents(c.ctx, ids)
	c.op.End = w.h.Now()
	readResult(c.op, err)
	if err == nil {
		for _, id := range ids {
			obj := eventObj(id)
			if e, ok := got[id]; ok {
				c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: w.mismatch(obj, gotEvent(e))})
			} else {
				c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateAbsent, StateDeleted}})
			}
		}
	}
	w.done(u, c)
}

func (w *Workload) readOwnMessage(u *user) {
	if len(u.msgs) == 0 {
		w.sendMessage(u)
		return
	}
	m := u.msgs[u.rng.IntN(len(u.msgs))]
	obj := messageObj(m.key)
	c := w.begin(u, "read_own_message")
	c.op.Level = LevelSession
	got, err := c.d.PrivateMessages.GetMessage(c.ctx, m.id)
	c.op.End = w.h.Now()
	readResult(c.op, err)
	switch {
	case err == nil:
		c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: w.mismatch(obj, gotMessage(got))})
	case errors.Is(err, repos.ErrNotFound):
		c.op.Outcome, c.op.ErrKind, c.op.Err = Acked, "", ""
		c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateAbsent, StateDeleted}})
	}
	w.done(u, c)
}

func (w *Workload) readOwnMember(u *user) {
	room := w.toggle[u.rng.IntN(len(w.toggle))]
	c := w.begin(u, "read_own_membership")
	c.op.Level = LevelSession
	m, err := c.d.Memberships.GetMembership(c.ctx, room, u.id)
	c.op.End = w.h.Now()
	readResult(c.op, err)
	obj := memberObj(room, u.id)
	switch {
	case err == nil:
		c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{string(m.Membership)}})
	case errors.Is(err, repos.ErrNotFound):
		c.op.Outcome, c.op.ErrKind, c.op.Err = Acked, "", ""
		c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateNone}})
	}
	w.done(u, c)
}

// timelinePage is the page size of timeline reads.
const timelinePage = 50

func (w *Workload) readTimeline(u *user) {
	room := w.rooms[u.rng.IntN(len(w.rooms))]
	c := w.begin(u, "read_timeline")
	c.op.Level, c.op.Bound = LevelBounded, w.bound(u)
	page, err := c.d.Events.PageEvents(c.ctx, repos.EventPageRequest{RoomID: room, Limit: timelinePage,
		Consistency: router.BoundedStaleness(c.op.Bound)})
	c.op.End = w.h.Now()
	readResult(c.op, err)
	if err == nil {
		returned := map[string]bool{}
		minSO := int64(-1 << 63)
		if len(page.Items) == timelinePage {
			minSO = page.Items[len(page.Items)-1].StreamOrdering
			for _, e := range page.Items {
				minSO = min(minSO, e.StreamOrdering)
			}
		}
		for _, e := range page.Items {
			obj := eventObj(e.EventID)
			returned[obj] = true
			c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateLive}, Corrupt: w.mismatch(obj, gotEvent(e))})
		}
		// A page from the live edge holds every live event at or above its
		// lowest stream ordering: the acknowledged events in that range it
		// did not return were hidden at the read's snapshot.
		w.mu.Lock()
		evs := w.roomEvts[room]
		i := sort.Search(len(evs), func(i int) bool { return evs[i].so >= minSO })
		var hidden []string
		for _, e := range evs[i:] {
			if !returned[e.obj] {
				hidden = append(hidden, e.obj)
			}
		}
		w.mu.Unlock()
		for _, obj := range hidden {
			c.op.Obs = append(c.op.Obs, Observation{Object: obj, States: []string{StateAbsent, StateDeleted}})
		}
	}
	w.done(u, c)
}

// followed picks one of the two users u follows (the next two), so that u
// reads the same data again and again: what monotonic reads are about.
func (w *Workload) followed(u *user) int { return (u.idx + 1 + u.rng.IntN(2)) % len(w.users) }

// joinedObs turns an IsJoined answer into an observation.
func joinedObs(obj string, joined bool) Observation {
	if joined {
		return Observation{Object: obj, States: []string{StateJoin}}
	}
	return Observation{Object: obj, States: []string{StateNone, StateLeave}}
}

func (w *Workload) readOwnJoined(u *user) {
	room := w.toggle[u.rng.IntN(len(w.toggle))]
	c := w.begin(u, "read_own_joined")
	c.op.Level = LevelSession
	ok, err := c.d.Memberships.IsJoined(c.ctx, room, u.id)
	c.op.End = w.h.Now()
	readResult(c.op, err)
	if err == nil {
		c.op.Obs = append(c.op.Obs, joinedObs(memberObj(room, u.id), ok))
	}
	w.done(u, c)
}

func (w *Workload) readOtherJoined(u *user) {
	room := w.toggle[u.rng.IntN(len(w.toggle))]
	other := w.users[w.followed(u)]
	c := w.begin(u, "read_other_joined")
	c.op.Level, c.op.Bound = LevelBounded, w.bound(u)
	ok, err := c.d.Memberships.IsJoined(c.ctx, room, other.id, router.BoundedStaleness(c.op.Bound))
	c.op.End = w.h.Now()
	readResult(c.op, err)
	if err == nil {
		c.op.Obs = append(c.op.Obs, joinedObs(memberObj(room, other.id), ok))
	}
	w.done(u, c)
}

// readMembers reads a membership room's joined members (one page holds
// them all) and observes every user's membership from it.
func (w *Workload) readMembers(u *user) { w.readMembersAs(u, "read_members", false) }

func (w *Workload) readMembersAs(u *user, kind string, public bool) {
	room := w.toggle[u.rng.IntN(len(w.toggle))]
	c := w.begin(u, kind)
	ctx := c.ctx
	if public {
		c.public, c.op.TokenBefore = true, ""
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.Background(), w.cfg.OpTimeout)
		defer cancel()
	}
	c.op.Level, c.op.Bound = LevelBounded, w.bound(u)
	page, err := c.d.Memberships.ListJoinedMembers(ctx, repos.MemberPageRequest{RoomID: room,
		Limit: repos.DefaultMaxPageSize, Consistency: router.BoundedStaleness(c.op.Bound)})
	c.op.End = w.h.Now()
	readResult(c.op, err)
	if err == nil {
		joined := map[string]bool{}
		for _, m := range page.Items {
			joined[m.UserID] = true
			if m.Membership != repos.Join {
				c.op.Obs = append(c.op.Obs, Observation{Object: memberObj(room, m.UserID), States: []string{string(m.Membership)},
					Corrupt: "ListJoinedMembers returned a member whose membership is " + string(m.Membership)})
			}
		}
		for _, x := range w.users {
			c.op.Obs = append(c.op.Obs, joinedObs(memberObj(room, x.id), joined[x.id]))
		}
		if len(page.Items) > len(w.users) {
			c.op.Obs = append(c.op.Obs, Observation{Object: "members/" + room, States: []string{"?extra"},
				Corrupt: fmt.Sprintf("%d joined members, the workload has only %d users", len(page.Items), len(w.users))})
		}
	}
	w.done(u, c)
}

// readPublic reads a followed user's profile, or a membership room's
// joined members, with no session at all.
func (w *Workload) readPublic(u *user) {
	if u.rng.IntN(2) == 0 {
		w.readMembersAs(u, "read_public_members", true)
		return
	}
	other := w.followed(u)
	c := w.begin(u, "read_public_profile")
	c.public, c.op.TokenBefore = true, ""
	ctx, cancel := context.WithTimeout(context.Background(), w.cfg.OpTimeout) // no session
	defer cancel()
	c.op.Level, c.op.Bound = LevelBounded, w.bound(u)
	usr, err := c.d.Users.GetUser(ctx, w.users[other].id, router.BoundedStaleness(c.op.Bound))
	c.op.End = w.h.Now()
	w.profileObs(c, w.users[other].id, usr, err, other)
	w.done(u, c)
}
