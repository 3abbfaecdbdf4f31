package integration

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Outcome is how an operation ended, as its caller could tell.
type Outcome uint8

// Outcomes. A write is Acked when the DAL returned success, Failed when it
// returned an error that guarantees nothing was committed (ErrUnavailable
// before COMMIT, a refused statement, a cancelled context before COMMIT),
// and Unknown when the commit may or may not have happened
// (router.ErrCommitUnknown, or an error the driver cannot classify). A read
// is Acked when it returned an answer (including "not found", which is an
// observation) and Failed when it returned an error.
const (
	Acked Outcome = iota + 1
	Failed
	Unknown
)

var outcomeNames = map[Outcome]string{Acked: "acked", Failed: "failed", Unknown: "unknown"}

// String names the outcome ("acked", "failed", "unknown").
func (o Outcome) String() string {
	if s, ok := outcomeNames[o]; ok {
		return s
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// MarshalText implements encoding.TextMarshaler.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (o *Outcome) UnmarshalText(b []byte) error {
	for k, v := range outcomeNames {
		if v == string(b) {
			*o = k
			return nil
		}
	}
	return fmt.Errorf("integration: unknown outcome %q", b)
}

// Level is the consistency a read asked for; it decides which writes the
// read must reflect (its floor, see Checker).
type Level string

// Read levels.
const (
	// LevelStrong: a Strong read. Must reflect every write acknowledged
	// before the read started.
	LevelStrong Level = "strong"
	// LevelSession: a read of the user's own data inside the user's session
	// (ReadYourWrites of the carried token, explicitly or through the
	// session). Must reflect every write of this user acknowledged before
	// the read started.
	LevelSession Level = "session"
	// LevelBounded: a BoundedStaleness(Op.Bound) read. Must reflect every
	// write acknowledged more than Bound + slack before the read started.
	LevelBounded Level = "bounded"
	// LevelPrimary: what a write learned about the primary's state when it
	// was refused (e.g. DeleteEvent found no live event). Same floor as
	// LevelStrong.
	LevelPrimary Level = "primary"
	// LevelFinal: the final state read with Strong after quiescence. Must
	// reflect every acknowledged write not superseded.
	LevelFinal Level = "final"
)

// Object states. Profiles use "v<N>" (displayname version N).
const (
	StateAbsent  = "absent"  // never written (or a write that did not apply)
	StateLive    = "live"    // present and not soft-deleted
	StateDeleted = "deleted" // present and soft-deleted
	StateNone    = "none"    // no membership row
	StateJoin    = "join"
	StateLeave   = "leave"
)

// VersionState is the state of a profile whose displayname carries version v.
func VersionState(v int64) string { return "v" + strconv.FormatInt(v, 10) }

// stateVersion parses a VersionState; ok is false for other states.
func stateVersion(s string) (int64, bool) {
	if !strings.HasPrefix(s, "v") {
		return 0, false
	}
	v, err := strconv.ParseInt(s[1:], 10, 64)
	return v, err == nil
}

// Observation is what one read (or refused write) saw of one object.
type Observation struct {
	// Object is the object's key (see History.Declare).
	Object string `json:"object"`
	// States is the set of states consistent with what was seen: one state
	// when the read returned the row ("live", "v7", "join"), several when
	// the API cannot tell them apart (a hidden event is "absent" or
	// "deleted").
	States []string `json:"states"`
	// Corrupt is non-empty when the row was returned but differs from what
	// the write that created it sent (a half-applied or mangled write).
	Corrupt string `json:"corrupt,omitempty"`
}

// Op is one operation of the history: a write (Object/Target set) or a read
// (Obs set), with its timing and outcome. Times are offsets from the
// history's epoch (monotonic clock).
type Op struct {
	ID   int64  `json:"id"`
	User int    `json:"user"`
	DAL  int    `json:"dal"`
	Kind string `json:"kind"`

	Start time.Duration `json:"start_ns"`
	End   time.Duration `json:"end_ns"`

	// Object and Target: the object a write changes and the state it sets
	// when it applies. Empty for reads.
	Object string `json:"object,omitempty"`
	Target string `json:"target,omitempty"`

	// Level and Bound describe a read (Bound only for LevelBounded).
	Level Level         `json:"level,omitempty"`
	Bound time.Duration `json:"bound_ns,omitempty"`

	Outcome Outcome `json:"outcome"`
	// ErrKind classifies the error ("unavailable", "commit_unknown",
	// "not_found", "conflict", "deadline", "other", ...); "" on success.
	ErrKind string `json:"err_kind,omitempty"`
	Err     string `json:"err,omitempty"`
	// TokenBefore and Token are the encoded session tokens the user
	// carried into and out of the op.
	TokenBefore string `json:"token_before,omitempty"`
	Token       string `json:"token,omitempty"`
	// WriteToken is the encoded token a write returned (its commit
	// position), when it returned one.
	WriteToken string `json:"write_token,omitempty"`
	// TokenReturned: an Unknown write for which the router still returned
	// a token (committed on the primary, replication unconfirmed).
	TokenReturned bool `json:"token_returned,omitempty"`

	Obs []Observation `json:"obs,omitempty"`
}

// IsWrite reports whether op changes an object.
func (op *Op) IsWrite() bool { return op.Object != "" }

// History is the record of a workload run: the objects it writes (with their
// initial states and the content each write sent) and every operation. Safe
// for concurrent use; ops are appended when they finish.
type History struct {
	epoch time.Time

	mu       sync.Mutex
	nextID   int64
	ops      []*Op
	initial  map[string]string
	content  map[string]map[string]any // object → content the creating write sent
	streamOf map[string]int64          // event object → stream ordering (acked appends)
}

// NewHistory starts an empty history whose times are offsets from epoch.
func NewHistory(epoch time.Time) *History {
	return &History{epoch: epoch, initial: map[string]string{}, content: map[string]map[string]any{},
		streamOf: map[string]int64{}}
}

// Epoch is the time offsets are measured from.
func (h *History) Epoch() time.Time { return h.epoch }

// Since is the offset of t from the epoch (monotonic clock).
func (h *History) Since(t time.Time) time.Duration { return t.Sub(h.epoch) }

// Now is the current offset from the epoch.
func (h *History) Now() time.Duration { return time.Since(h.epoch) }

// Declare registers an object with its state before the run (e.g. "v0" for a
// profile created during setup, StateAbsent for an event not yet sent).
// Declaring twice keeps the first state.
func (h *History) Declare(object, initial string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.initial[object]; !ok {
		h.initial[object] = initial
	}
}

// SetContent records the content the write creating object sent, for
// half-applied checks.
func (h *History) SetContent(object string, content map[string]any) {
	h.mu.Lock()
	h.content[object] = content
	h.mu.Unlock()
}

// Content returns what SetContent recorded.
func (h *History) Content(object string) (map[string]any, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c, ok := h.content[object]
	return c, ok
}

// SetStreamOrdering records an acknowledged event's stream ordering.
func (h *History) SetStreamOrdering(object string, so int64) {
	h.mu.Lock()
	h.streamOf[object] = so
	h.mu.Unlock()
}

// StreamOrdering returns what SetStreamOrdering recorded.
func (h *History) StreamOrdering(object string) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	so, ok := h.streamOf[object]
	return so, ok
}

// Add appends a finished op, assigning its ID, and returns it.
func (h *History) Add(op *Op) *Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	op.ID = h.nextID
	h.ops = append(h.ops, op)
	return op
}

// Ops returns a snapshot of the ops, ordered by start time.
func (h *History) Ops() []*Op {
	h.mu.Lock()
	ops := slices.Clone(h.ops)
	h.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Start < ops[j].Start })
	return ops
}

// Objects returns every declared object with its initial state.
func (h *History) Objects() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]string, len(h.initial))
	for k, v := range h.initial {
		out[k] = v
	}
	return out
}

// Len is the number of ops recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// historyJSON is the serialised form of a History.
type historyJSON struct {
	Epoch   time.Time                 `json:"epoch"`
	Initial map[string]string         `json:"initial"`
	Content map[string]map[string]any `json:"content"`
	Stream  map[string]int64          `json:"stream_ordering"`
	Ops     []*Op                     `json:"ops"`
}

// MarshalJSON writes the whole history (for post-mortems of a failed run).
func (h *History) MarshalJSON() ([]byte, error) {
	ops := h.Ops()
	h.mu.Lock()
	defer h.mu.Unlock()
	return json.Marshal(historyJSON{Epoch: h.epoch, Initial: h.initial, Content: h.content, Stream: h.streamOf, Ops: ops})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (h *History) UnmarshalJSON(b []byte) error {
	var v historyJSON
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*h = History{epoch: v.Epoch, initial: v.Initial, content: v.Content, streamOf: v.Stream, ops: v.Ops}
	if h.initial == nil {
		h.initial = map[string]string{}
	}
	if h.content == nil {
		h.content = map[string]map[string]any{}
	}
	if h.streamOf == nil {
		h.streamOf = map[string]int64{}
	}
	for _, op := range v.Ops {
		h.nextID = max(h.nextID, op.ID)
	}
	return nil
}

// Object keys.
func profileObj(userID string) string        { return "profile/" + userID }
func eventObj(eventID string) string         { return "event/" + eventID }
func messageObj(key string) string           { return "msg/" + key }
func memberObj(roomID, userID string) string { return "member/" + roomID + "/" + userID }
