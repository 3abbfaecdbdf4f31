package integration

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hsdal/hsdal/router"
)

// Violation kinds reported by Check. Every one of them must be 0.
const (
	// VLostWrite: the final state (Strong, after quiescence) misses an
	// acknowledged write that no later acknowledged write superseded.
	VLostWrite = "lost_write"
	// VPrimaryMissingWrite: a write refused by the primary (e.g. "no live
	// event to delete") proves the primary did not have an acknowledged
	// write that precedes it.
	VPrimaryMissingWrite = "primary_missing_write"
	// VReadYourWrites: a read in the user's session missed one of the
	// user's own writes acknowledged before the read started.
	VReadYourWrites = "read_your_writes"
	// VStaleRead: a BoundedStaleness(d) read missed a write acknowledged
	// more than d + slack before the read started.
	VStaleRead = "stale_read"
	// VStrongReadStale: a Strong read missed a write acknowledged before
	// the read started.
	VStrongReadStale = "strong_read_stale"
	// VSessionToken: a read in a session missed another user's
	// acknowledged write that the session's token covered (the token a
	// client carries promises every write below it, whoever made it:
	// reads of positions recorded in the session, or the user's own later
	// writes, make later reads at least that fresh).
	VSessionToken = "session_token"
	// VMonotonicRead: a user saw a profile version lower than one it had
	// seen before, where the API promised the later read would cover it.
	VMonotonicRead = "monotonic_read"
	// VSoftDeletedReturned: a row was returned although every state the
	// read may legally see has it soft-deleted.
	VSoftDeletedReturned = "soft_deleted_returned"
	// VHalfApplied: a row present with content other than what its write
	// sent, or a membership whose current row disagrees with its history
	// (one transaction applied in part).
	VHalfApplied = "half_applied"
	// VFailedWriteApplied: the effect of a write that returned a definite
	// failure (nothing committed) was observed.
	VFailedWriteApplied = "failed_write_applied"
	// VPhantom: a state no write produced (or one produced by a write that
	// started after the read ended).
	VPhantom = "phantom"
	// VDuplicateWrite: one write applied twice (e.g. a blind retry).
	VDuplicateWrite = "duplicate_write"
	// VHistoryMismatch: a membership history that no order of the
	// attempted changes explains.
	VHistoryMismatch = "history_mismatch"
)

// ViolationKinds lists every kind Check can report, in report order.
var ViolationKinds = []string{VLostWrite, VPrimaryMissingWrite, VReadYourWrites, VStaleRead, VStrongReadStale,
	VSessionToken, VMonotonicRead, VSoftDeletedReturned, VHalfApplied, VFailedWriteApplied, VPhantom, VDuplicateWrite, VHistoryMismatch,
	VCacheStale}

// Anomaly kinds: counted and reported, not violations, because the API does
// not promise otherwise (see Check).
const (
	// AMonotonicUnpromised: a user saw a profile version lower than one it
	// had seen before, on a read the API does not promise to be monotonic
	// (a bounded-staleness read of another user's data, or a version that
	// came from a write whose outcome was unknown).
	AMonotonicUnpromised = "monotonic_regression_unpromised"
	// ALossInduced: (asynchronous replication only) an observation that is
	// explained only by the loss of acknowledged writes at a failover.
	ALossInduced = "loss_induced_observation"
)

// CheckConfig tunes Check. The zero value checks a synchronous-replication
// run with the default slack.
type CheckConfig struct {
	// Slack widens every staleness bound: a BoundedStaleness(d) read must
	// reflect the writes acknowledged before start - d - Slack. It covers
	// the router timestamping a probed primary position when the probe's
	// answer is published rather than when the server read it (one probe
	// round trip: the router's staleness estimate can be short by that).
	// Zero means no slack (Check is then as strict as the router's claim);
	// RunChaos uses DefaultSlack unless told otherwise.
	Slack time.Duration
	// AllowLoss: the run used asynchronous replication. An acknowledged
	// write made before a primary kill may be lost at that failover: it is
	// counted in CheckResult.LostAtFailover instead of being a violation,
	// and observations explained only by such losses are anomalies.
	AllowLoss bool
	// PrimaryKills are the offsets (from the history epoch) at which the
	// primary was killed, in order. Used with AllowLoss.
	PrimaryKills []time.Duration
	// MaxSamples bounds the violation samples kept per kind. Default 10.
	MaxSamples int
}

// DefaultSlack is the staleness slack RunChaos gives Check when none is
// configured: one probe round trip on a loaded 2-core test machine is well
// under it. (Runs with no slack at all found no stale read either.)
const DefaultSlack = 50 * time.Millisecond

// Violation is one failed check, with the ops needed to understand it.
type Violation struct {
	Kind   string `json:"kind"`
	Object string `json:"object,omitempty"`
	User   int    `json:"user"`
	OpID   int64  `json:"op_id,omitempty"`
	Detail string `json:"detail"`
	// Excerpt: the read (or final) op and the object's writes around it.
	Excerpt []*Op `json:"excerpt,omitempty"`
}

// CheckResult is what Check found.
type CheckResult struct {
	// Violations counts violations by kind; every kind of ViolationKinds is
	// present (0 when none).
	Violations map[string]int `json:"violations"`
	// Samples holds up to MaxSamples violations per kind.
	Samples []Violation `json:"violation_samples,omitempty"`
	// Anomalies counts the AMonotonicUnpromised and ALossInduced cases.
	Anomalies map[string]int `json:"anomalies"`
	// LostAtFailover[i] is the number of acknowledged writes lost at the
	// i-th primary kill (AllowLoss only).
	LostAtFailover []int `json:"lost_at_failover,omitempty"`
	// Observations is how many observations were checked.
	Observations int `json:"observations_checked"`
}

// Total is the number of violations of every kind.
func (r CheckResult) Total() int {
	n := 0
	for _, v := range r.Violations {
		n += v
	}
	return n
}

// FinalMembership is a membership's final state read with Strong: the
// current row and the whole transition history, oldest first.
type FinalMembership struct {
	Current string   `json:"current"`
	History []string `json:"history"`
	// ChainBroken is non-empty when a history entry's prev_membership is
	// not the membership of the entry before it.
	ChainBroken string `json:"chain_broken,omitempty"`
}

// Final is the part of the final state that is not a plain observation
// (those are recorded in the history as an op with LevelFinal).
type Final struct {
	// Memberships by member object key.
	Memberships map[string]FinalMembership `json:"memberships,omitempty"`
	// Duplicates: objects found more than once (count of copies).
	Duplicates map[string]int `json:"duplicates,omitempty"`
	// Unexpected: rows in the workload's namespace that no op wrote.
	Unexpected []string `json:"unexpected,omitempty"`
}

// Check verifies a history (and the final state) against the guarantees of
// hsdal, under these definitions:
//
//   - Every object (a profile, an event, a private message, a membership) is
//     written only by its owner, whose operations are sequential, so its
//     writes are totally ordered. Every write sets the object to a state
//     (its Target). A read that saw state s is correct when s is the
//     initial state or the Target of some write j that may have applied
//     (acknowledged or unknown outcome, never a definite failure), that
//     started before the read ended, and that is not older than the last
//     acknowledged write the read must reflect (its floor write k): j >= k.
//   - The floor: for Strong reads, session reads of one's own data and
//     refused writes, the last write acknowledged before the read started;
//     for BoundedStaleness(d) reads, the last write acknowledged before
//     start - d - Slack; for the final state, the last acknowledged write.
//     Every read of the workload runs in the user's session, so its floor
//     is also at least the newest write (of anyone) acknowledged before the
//     read started whose token the session token carried into the read
//     covers: the router
//     promises that every non-Strong read in a session is at least
//     ReadYourWrites(session token), and a token covers every commit below
//     it. Missing such a write of another user is VSessionToken.
//   - Monotonic reads: a user's successive observations of a profile never
//     go back to a lower version. A regression is a violation when the
//     later read had to reflect the version seen earlier: its write was
//     acknowledged before that read's floor, or the session token carried
//     into that read covers the write's token. Otherwise the API does not
//     promise it (e.g. a bounded read of another user's profile on a
//     replica behind the one read before, when the DAL does not record
//     read positions in the session, or a version seen from an
//     unknown-outcome write); such regressions are counted as the anomaly
//     AMonotonicUnpromised.
//   - Half-applied: a returned row must equal what its write sent; a
//     membership's current row must be the last entry of its history, the
//     history's prev_membership chain must be intact, and the history must
//     be exactly the transitions that applied, in order, including every
//     acknowledged one.
func Check(h *History, final *Final, cfg CheckConfig) CheckResult {
	if cfg.MaxSamples <= 0 {
		cfg.MaxSamples = 10
	}
	c := &checker{cfg: cfg, objs: map[string]*objHist{}, tokens: map[string]router.Token{}, res: CheckResult{Violations: map[string]int{}, Anomalies: map[string]int{}}}
	for _, k := range ViolationKinds {
		c.res.Violations[k] = 0
	}
	c.res.Anomalies[AMonotonicUnpromised] = 0
	if cfg.AllowLoss {
		c.res.Anomalies[ALossInduced] = 0
		c.res.LostAtFailover = make([]int, len(cfg.PrimaryKills))
	}
	for obj, init := range h.Objects() {
		c.objs[obj] = &objHist{initial: init}
	}
	ops := h.Ops()
	for _, op := range ops {
		if !op.IsWrite() {
			continue
		}
		o := c.obj(op.Object)
		o.ops = append(o.ops, op)
	}
	for obj, o := range c.objs {
		sort.SliceStable(o.ops, func(i, j int) bool { return o.ops[i].Start < o.ops[j].Start })
		for i := 1; i < len(o.ops); i++ {
			if o.ops[i].Start < o.ops[i-1].End {
				c.violate(Violation{Kind: VHistoryMismatch, Object: obj, OpID: o.ops[i].ID, User: o.ops[i].User,
					Detail: "writes of one object overlap: the driver broke its one-writer rule", Excerpt: []*Op{o.ops[i-1], o.ops[i]}})
			}
		}
	}
	for _, op := range ops {
		for i := range op.Obs {
			c.observe(op, &op.Obs[i])
		}
	}
	c.monotonic(ops)
	if final != nil {
		c.final(final)
	}
	return c.res
}

type objHist struct {
	initial string
	ops     []*Op // writes, by start
}

type checker struct {
	cfg     CheckConfig
	tokens  map[string]router.Token
	objs    map[string]*objHist
	res     CheckResult
	samples map[string]int
}

func (c *checker) obj(key string) *objHist {
	o := c.objs[key]
	if o == nil {
		// Undeclared: objects the workload creates start absent.
		o = &objHist{initial: StateAbsent}
		if strings.HasPrefix(key, "member/") {
			o.initial = StateNone
		}
		c.objs[key] = o
	}
	return o
}

func (c *checker) violate(v Violation) {
	c.res.Violations[v.Kind]++
	if c.samples == nil {
		c.samples = map[string]int{}
	}
	if c.samples[v.Kind] < c.cfg.MaxSamples {
		c.samples[v.Kind]++
		c.res.Samples = append(c.res.Samples, v)
	}
}

// floorOf is the time before which acknowledged writes must be reflected by
// op's observations, and the time by which they must have started at the
// latest (the read's end).
func (c *checker) floorOf(op *Op) (floor, end time.Duration) {
	switch op.Level {
	case LevelFinal:
		return math.MaxInt64, math.MaxInt64
	case LevelBounded:
		return op.Start - op.Bound - c.cfg.Slack, op.End
	}
	return op.Start, op.End
}

// atRisk reports whether an acknowledged write may have been lost at a
// failover before readStart (AllowLoss only): a primary kill happened after
// the write started.
func (c *checker) atRisk(w *Op, readStart time.Duration) (int, bool) {
	if !c.cfg.AllowLoss {
		return -1, false
	}
	for i, k := range c.cfg.PrimaryKills {
		if k > w.Start && k < readStart {
			return i, true
		}
	}
	return -1, false
}

// window is the verdict on one observation's legal states.
type window struct {
	k       int      // index of the floor write, -1 if none
	allowed []string // legal states
	last    int      // index past the last candidate
}

// token decodes (and caches) an encoded token; the zero Token if it does
// not decode.
func (c *checker) token(enc string) router.Token {
	if enc == "" {
		return router.Token{}
	}
	t, ok := c.tokens[enc]
	if !ok {
		t, _ = router.DecodeToken(enc)
		c.tokens[enc] = t
	}
	return t
}

// covers reports whether a session carrying s must see write w: w returned
// a token on s's timeline at or below s (or, with synchronous replication,
// on an earlier timeline: a later timeline contains every acknowledged
// write of the ones before it).
func (c *checker) covers(s router.Token, w *Op) bool {
	t := c.token(w.WriteToken)
	if s.IsZero() || t.IsZero() || t.Timeline == 0 || s.Timeline == 0 {
		return false
	}
	if s.Timeline == t.Timeline {
		return s.LSN >= t.LSN
	}
	return s.Timeline > t.Timeline && !c.cfg.AllowLoss
}

// sessionFloor returns the index of the newest write of o acknowledged
// before readStart whose token the session token s covers, if it is above
// index lowest; else -1.
//
// Acknowledged before the read, not merely covered: a token is an insert
// position, so it can be above the commit record of another transaction
// that is still waiting for its synchronous standby, and such a commit is
// not yet visible on the primary (PostgreSQL removes a transaction from the
// running set only after that wait). No client can know of that write yet.
func (c *checker) sessionFloor(o *objHist, s router.Token, readStart time.Duration, lowest int, relax bool) int {
	if s.IsZero() {
		return -1
	}
	n := sort.Search(len(o.ops), func(i int) bool { return o.ops[i].End >= readStart })
	for i := n - 1; i > lowest; i-- {
		op := o.ops[i]
		if op.Outcome != Acked {
			continue
		}
		if relax {
			if _, risky := c.atRisk(op, readStart); risky {
				continue
			}
		}
		if c.covers(s, op) {
			return i
		}
	}
	return -1
}

// legal computes the states a read of o with the given floor/end may see.
// minK, if above the floor write found by time, is the floor write instead
// (a write the read's session token covers). With relax, acknowledged
// writes at risk of failover loss do not count as floor writes.
func (c *checker) legal(o *objHist, floor, end, readStart time.Duration, relax bool, minK int) window {
	// Writes are sequential: ends increase with the index.
	n := sort.Search(len(o.ops), func(i int) bool { return o.ops[i].End >= floor })
	w := window{k: -1}
	for i := n - 1; i >= 0; i-- {
		op := o.ops[i]
		if op.Outcome != Acked {
			continue
		}
		if relax {
			if _, risky := c.atRisk(op, readStart); risky {
				continue
			}
		}
		w.k = i
		break
	}
	w.k = max(w.k, minK)
	from := w.k
	if from < 0 {
		from = 0
		w.allowed = append(w.allowed, o.initial)
	}
	j := from
	for ; j < len(o.ops) && o.ops[j].Start < end; j++ {
		if o.ops[j].Outcome != Failed {
			w.allowed = append(w.allowed, o.ops[j].Target)
		}
	}
	w.last = j
	return w
}

func intersects(a, b []string) bool {
	for _, x := range a {
		if slices.Contains(b, x) {
			return true
		}
	}
	return false
}

func (c *checker) observe(op *Op, ob *Observation) {
	c.res.Observations++
	o := c.obj(ob.Object)
	if ob.Corrupt != "" {
		c.violate(Violation{Kind: VHalfApplied, Object: ob.Object, User: op.User, OpID: op.ID,
			Detail: ob.Corrupt, Excerpt: excerpt(o, op, 0, len(o.ops))})
	}
	floor, end := c.floorOf(op)
	byTime := c.legal(o, floor, end, op.Start, c.cfg.AllowLoss, -1)
	w := byTime
	if op.Level == LevelSession || op.Level == LevelBounded {
		if k := c.sessionFloor(o, c.token(op.TokenBefore), op.Start, byTime.k, c.cfg.AllowLoss); k > byTime.k {
			w = c.legal(o, floor, end, op.Start, c.cfg.AllowLoss, k)
		}
	}
	if intersects(ob.States, w.allowed) {
		if c.cfg.AllowLoss {
			strict := c.legal(o, floor, end, op.Start, false, -1)
			if !intersects(ob.States, strict.allowed) {
				c.res.Anomalies[ALossInduced]++
				if op.Level == LevelFinal {
					c.countLost(o, ob.States, strict.k, w.k, op.Start)
				}
			}
		}
		return
	}
	var kind, why string
	if intersects(ob.States, byTime.allowed) {
		// Only the session token made this read stale.
		fw := o.ops[w.k]
		kind, why = VSessionToken, fmt.Sprintf("missing acknowledged write #%d (%s → %s by user %d, token %s) that the session token %s covered",
			fw.ID, fw.Kind, fw.Target, fw.User, fw.WriteToken, op.TokenBefore)
		if fw.User == op.User {
			kind = VReadYourWrites
		}
	} else {
		kind, why = c.classify(o, op, ob, byTime)
	}
	c.violate(Violation{Kind: kind, Object: ob.Object, User: op.User, OpID: op.ID,
		Detail:  fmt.Sprintf("%s read (%s) saw %v; legal: %v; %s", op.Level, op.Kind, ob.States, w.allowed, why),
		Excerpt: excerpt(o, op, w.k-2, w.last+2)})
}

// countLost attributes to the failovers that put them at risk the
// acknowledged writes between the newest write the final state reflects and
// the strict floor write.
func (c *checker) countLost(o *objHist, states []string, strictK, relaxedK int, readStart time.Duration) {
	for i := strictK; i > relaxedK && i >= 0; i-- {
		op := o.ops[i]
		if op.Outcome != Failed && slices.Contains(states, op.Target) {
			return // the state the read saw: nothing at or before it is lost
		}
		if op.Outcome != Acked {
			continue
		}
		if f, risky := c.atRisk(op, readStart); risky {
			c.res.LostAtFailover[f]++
		}
	}
}

func (c *checker) classify(o *objHist, op *Op, ob *Observation, w window) (string, string) {
	if slices.Equal(ob.States, []string{StateLive}) && slices.Contains(w.allowed, StateDeleted) && !slices.Contains(w.allowed, StateLive) {
		return VSoftDeletedReturned, "the row was soft-deleted by an acknowledged write the read had to reflect"
	}
	older := slices.Contains(ob.States, o.initial)
	for i := 0; i < w.k && !older; i++ {
		if o.ops[i].Outcome != Failed && slices.Contains(ob.States, o.ops[i].Target) {
			older = true
		}
	}
	if older {
		why := fmt.Sprintf("missing acknowledged write #%d (%s → %s, acked at %v)", o.ops[w.k].ID, o.ops[w.k].Kind, o.ops[w.k].Target, o.ops[w.k].End)
		switch op.Level {
		case LevelFinal:
			return VLostWrite, why
		case LevelPrimary:
			return VPrimaryMissingWrite, why
		case LevelSession:
			return VReadYourWrites, why
		case LevelStrong:
			return VStrongReadStale, why
		}
		return VStaleRead, why + fmt.Sprintf("; bound %v, floor %v", op.Bound, op.Start-op.Bound-c.cfg.Slack)
	}
	for _, x := range o.ops {
		if x.Outcome == Failed && slices.Contains(ob.States, x.Target) {
			return VFailedWriteApplied, fmt.Sprintf("write #%d failed with %s (%s) but its state is visible", x.ID, x.ErrKind, x.Err)
		}
	}
	return VPhantom, "no write that could have applied before the read ended produces this state"
}

// excerpt returns op plus o's writes in [from, to).
func excerpt(o *objHist, op *Op, from, to int) []*Op {
	from = max(from, 0)
	to = min(to, len(o.ops))
	out := []*Op{op}
	if to-from > 12 {
		from = to - 12
	}
	for i := from; i < to; i++ {
		out = append(out, o.ops[i])
	}
	return out
}

// monotonic checks, per user and profile, that observed versions never go
// down (see Check).
func (c *checker) monotonic(ops []*Op) {
	type seen struct {
		version int64
		op      *Op // the write that produced the version; nil for the initial state
	}
	last := map[[2]string]seen{} // (user, object) → highest version seen so far
	for _, op := range ops {
		if op.IsWrite() || op.Level == LevelFinal || op.Level == LevelPrimary {
			continue
		}
		for _, ob := range op.Obs {
			if len(ob.States) != 1 || !strings.HasPrefix(ob.Object, "profile/") {
				continue
			}
			v, ok := stateVersion(ob.States[0])
			if !ok {
				continue
			}
			key := [2]string{fmt.Sprint(op.User), ob.Object}
			prev, had := last[key]
			if had && v < prev.version {
				floor, _ := c.floorOf(op)
				_, risky := c.atRisk(orZero(prev.op), op.Start)
				promised := prev.op != nil && prev.op.Outcome == Acked && !risky &&
					(prev.op.End < floor || prev.op.End < op.Start && c.covers(c.token(op.TokenBefore), prev.op))
				if promised {
					o := c.obj(ob.Object)
					c.violate(Violation{Kind: VMonotonicRead, Object: ob.Object, User: op.User, OpID: op.ID,
						Detail: fmt.Sprintf("saw v%d after having seen v%d (write #%d acknowledged at %v, before this read's floor %v)",
							v, prev.version, prev.op.ID, prev.op.End, floor),
						Excerpt: excerpt(o, op, 0, 0)})
				} else {
					c.res.Anomalies[AMonotonicUnpromised]++
				}
			}
			if !had || v > prev.version {
				last[key] = seen{version: v, op: c.writerOf(ob.Object, ob.States[0])}
			}
		}
	}
}

func orZero(op *Op) *Op {
	if op == nil {
		return &Op{}
	}
	return op
}

// writerOf returns the (unique) write that sets a profile to state, or nil.
func (c *checker) writerOf(obj, state string) *Op {
	for _, w := range c.obj(obj).ops {
		if w.Target == state {
			return w
		}
	}
	return nil
}

func (c *checker) final(f *Final) {
	for obj, n := range f.Duplicates {
		if n > 1 {
			c.violate(Violation{Kind: VDuplicateWrite, Object: obj, Detail: fmt.Sprintf("found %d copies", n),
				Excerpt: excerpt(c.obj(obj), &Op{Kind: "final", Level: LevelFinal}, 0, len(c.obj(obj).ops))})
		}
	}
	for _, u := range f.Unexpected {
		c.violate(Violation{Kind: VPhantom, Object: u, Detail: "row in the workload's namespace that no operation wrote"})
	}
	keys := make([]string, 0, len(f.Memberships))
	for k := range f.Memberships {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, obj := range keys {
		c.membership(obj, f.Memberships[obj])
	}
}

func (c *checker) membership(obj string, m FinalMembership) {
	o := c.obj(obj)
	fake := &Op{Kind: "final_membership", Level: LevelFinal}
	lastState := o.initial
	if len(m.History) > 0 {
		lastState = m.History[len(m.History)-1]
	}
	if m.ChainBroken != "" || m.Current != lastState {
		c.violate(Violation{Kind: VHalfApplied, Object: obj,
			Detail:  fmt.Sprintf("current membership %q, history %v (last %q) %s", m.Current, m.History, lastState, m.ChainBroken),
			Excerpt: excerpt(o, fake, 0, len(o.ops))})
	}
	mandatory := func(op *Op) bool {
		if op.Outcome != Acked {
			return false
		}
		_, risky := c.atRisk(op, math.MaxInt64)
		return !risky
	}
	never := func(*Op) bool { return false }
	notFailed := func(op *Op) bool { return op.Outcome != Failed }
	always := func(*Op) bool { return true }
	if subsequence(o.ops, m.History, mandatory, notFailed) {
		if c.cfg.AllowLoss && !subsequence(o.ops, m.History, func(op *Op) bool { return op.Outcome == Acked }, notFailed) {
			c.res.Anomalies[ALossInduced]++
		}
		return
	}
	kind := VHistoryMismatch
	switch {
	case subsequence(o.ops, m.History, never, notFailed):
		kind = VLostWrite
	case subsequence(o.ops, m.History, never, always):
		kind = VFailedWriteApplied
	}
	c.violate(Violation{Kind: kind, Object: obj, Detail: fmt.Sprintf("membership history %v is not the sequence of applied changes", m.History),
		Excerpt: excerpt(o, fake, 0, len(o.ops))})
}

// subsequence reports whether hist equals the targets of a subsequence of
// ops that contains every op for which must is true and only ops for which
// may is true.
func subsequence(ops []*Op, hist []string, must, may func(*Op) bool) bool {
	// ok[i][p]: ops[i:] can produce hist[p:].
	n, m := len(ops), len(hist)
	next := make([]bool, m+1)
	next[m] = true // ops[n:] produces only the empty suffix
	for i := n - 1; i >= 0; i-- {
		cur := make([]bool, m+1)
		op := ops[i]
		for p := 0; p <= m; p++ {
			skip := !must(op) && next[p]
			take := may(op) && p < m && hist[p] == op.Target && next[p+1]
			cur[p] = skip || take
		}
		next = cur
	}
	return next[0]
}
