package integration_test

import (
	"encoding/json"
	"maps"
	"testing"
	"time"

	"github.com/hsdal/hsdal/integration"
	"github.com/hsdal/hsdal/router"
)

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// doctor builds histories by hand for the checker's self-test.
type doctor struct {
	h   *integration.History
	fin *integration.Final
}

func newDoctor() *doctor {
	d := &doctor{h: integration.NewHistory(time.Unix(1_700_000_000, 0))}
	d.h.Declare("profile/@a:t", integration.VersionState(0))
	d.h.Declare("profile/@b:t", integration.VersionState(0))
	d.h.Declare("event/$e1:t", integration.StateAbsent)
	d.h.Declare("member/!r:t/@a:t", integration.StateNone)
	return d
}

// write records a write by user of obj to target over [start, end] ms.
func (d *doctor) write(user int, obj, target string, start, end int, o integration.Outcome) *doctor {
	op := &integration.Op{User: user, Kind: "write", Object: obj, Target: target, Start: ms(start), End: ms(end), Outcome: o}
	if o == integration.Failed {
		op.ErrKind = "unavailable"
	}
	if o == integration.Unknown {
		op.ErrKind = "commit_unknown"
	}
	d.h.Add(op)
	return d
}

// read records a read by user that saw obj in one of states.
func (d *doctor) read(user int, lvl integration.Level, bound, start, end int, obj string, states ...string) *doctor {
	return d.readObs(user, lvl, bound, start, end, integration.Observation{Object: obj, States: states})
}

func (d *doctor) readObs(user int, lvl integration.Level, bound, start, end int, ob integration.Observation) *doctor {
	d.h.Add(&integration.Op{User: user, Kind: "read", Level: lvl, Bound: ms(bound), Start: ms(start), End: ms(end),
		Outcome: integration.Acked, Obs: []integration.Observation{ob}})
	return d
}

// writeTok records an acknowledged write that returned token t.
func (d *doctor) writeTok(user int, obj, target string, start, end int, t string) *doctor {
	d.h.Add(&integration.Op{User: user, Kind: "write", Object: obj, Target: target, Start: ms(start), End: ms(end),
		Outcome: integration.Acked, WriteToken: t})
	return d
}

// readTok records a read made with session token t.
func (d *doctor) readTok(user int, lvl integration.Level, bound, start, end int, t, obj string, states ...string) *doctor {
	d.h.Add(&integration.Op{User: user, Kind: "read", Level: lvl, Bound: ms(bound), Start: ms(start), End: ms(end),
		Outcome: integration.Acked, TokenBefore: t, Obs: []integration.Observation{{Object: obj, States: states}}})
	return d
}

func tok(timeline uint32, lsn uint64) string {
	return router.Token{LSN: router.LSN(lsn), Timeline: timeline}.Encode()
}

func (d *doctor) final(at int, obj string, states ...string) *doctor {
	return d.read(-1, integration.LevelFinal, 0, at, at+10, obj, states...)
}

const (
	acked   = integration.Acked
	failed  = integration.Failed
	unknown = integration.Unknown
	live    = integration.StateLive
	deleted = integration.StateDeleted
	absent  = integration.StateAbsent
)

var v = integration.VersionState

// TestCheckerCatchesViolations feeds Check doctored histories: each must be
// reported with exactly the expected kinds, and the legal variants (unknown
// outcomes either way, reads within their staleness bound) with none.
func TestCheckerCatchesViolations(t *testing.T) {
	const pa, pb, ev, mem = "profile/@a:t", "profile/@b:t", "event/$e1:t", "member/!r:t/@a:t"
	tests := []struct {
		name       string
		build      func(d *doctor)
		cfg        integration.CheckConfig
		violations map[string]int
		anomalies  map[string]int
		lost       []int
	}{
		{
			name: "clean history",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).
					read(0, integration.LevelSession, 0, 120, 130, pa, v(1)).
					read(1, integration.LevelBounded, 1000, 300, 310, pa, v(0)). // within its 1s bound
					write(0, pa, v(2), 400, 410, unknown).
					read(0, integration.LevelSession, 0, 420, 430, pa, v(1)). // unknown may be absent...
					read(0, integration.LevelSession, 0, 440, 450, pa, v(2)). // ...or present
					final(5000, pa, v(2))
			},
		},
		{
			name: "lost write",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 200, 210, acked).final(5000, pa, v(1))
			},
			violations: map[string]int{integration.VLostWrite: 1},
		},
		{
			name: "superseded write is not lost",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 200, 210, acked).final(5000, pa, v(2))
			},
		},
		{
			name: "stale bounded read",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).
					read(1, integration.LevelBounded, 500, 3000, 3010, pa, v(0))
			},
			violations: map[string]int{integration.VStaleRead: 1},
		},
		{
			name: "stale read within slack is allowed",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).
					read(1, integration.LevelBounded, 500, 650, 660, pa, v(0)) // floor 650-500-50 = 100 < 110
			},
			cfg: integration.CheckConfig{Slack: 50 * time.Millisecond},
		},
		{
			name: "read your writes",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).read(0, integration.LevelSession, 0, 120, 130, pa, v(0))
			},
			violations: map[string]int{integration.VReadYourWrites: 1},
		},
		{
			name: "stale strong read",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).read(1, integration.LevelStrong, 0, 120, 130, pa, v(0))
			},
			violations: map[string]int{integration.VStrongReadStale: 1},
		},
		{
			name: "resurrected soft-deleted row",
			build: func(d *doctor) {
				d.write(0, ev, live, 100, 110, acked).write(0, ev, deleted, 200, 210, acked).
					read(0, integration.LevelSession, 0, 300, 310, ev, live).
					read(1, integration.LevelBounded, 500, 2000, 2010, ev, live).
					final(5000, ev, live)
			},
			violations: map[string]int{integration.VSoftDeletedReturned: 3},
		},
		{
			name: "row deleted by an unknown write may still show",
			build: func(d *doctor) {
				d.write(0, ev, live, 100, 110, acked).write(0, ev, deleted, 200, 210, unknown).
					read(0, integration.LevelSession, 0, 300, 310, ev, live).
					final(5000, ev, absent, deleted)
			},
		},
		{
			name: "non-monotonic read the API promised",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 200, 210, acked).
					read(1, integration.LevelBounded, 1000, 5000, 5010, pa, v(2)).
					read(1, integration.LevelBounded, 1000, 6000, 6010, pa, v(1))
			},
			violations: map[string]int{integration.VMonotonicRead: 1, integration.VStaleRead: 1},
		},
		{
			name: "session token covers another user's write",
			build: func(d *doctor) {
				d.writeTok(0, pa, v(1), 100, 110, tok(1, 100)).
					readTok(1, integration.LevelBounded, 2000, 300, 310, tok(1, 150), pa, v(0)). // token above the write
					readTok(1, integration.LevelBounded, 2000, 320, 330, tok(1, 50), pa, v(0)).  // token below it: fine
					readTok(1, integration.LevelBounded, 2000, 340, 350, tok(2, 10), pa, v(0)).  // later timeline covers it (sync)
					writeTok(0, pa, v(2), 400, 500, tok(1, 300)).
					// Covered by the token but not yet acknowledged when the
					// read started: its commit may not be visible yet.
					readTok(1, integration.LevelBounded, 2000, 450, 460, tok(1, 300), pa, v(1))
			},
			violations: map[string]int{integration.VSessionToken: 2},
		},
		{
			name: "non-monotonic read the session token promised",
			build: func(d *doctor) {
				d.writeTok(0, pa, v(1), 100, 110, tok(1, 100)).writeTok(0, pa, v(2), 200, 210, tok(1, 200)).
					readTok(1, integration.LevelBounded, 2000, 300, 310, tok(1, 150), pa, v(2)).
					readTok(1, integration.LevelBounded, 2000, 400, 410, tok(1, 250), pa, v(1))
			},
			violations: map[string]int{integration.VMonotonicRead: 1, integration.VSessionToken: 1},
		},
		{
			name: "non-monotonic read within the bound is only an anomaly",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 200, 210, acked).
					read(1, integration.LevelBounded, 2000, 300, 310, pa, v(2)).
					read(1, integration.LevelBounded, 2000, 400, 410, pa, v(1))
			},
			anomalies: map[string]int{integration.AMonotonicUnpromised: 1},
		},
		{
			name: "half-applied unknown write",
			build: func(d *doctor) {
				d.write(0, ev, live, 100, 110, unknown).
					readObs(0, integration.LevelSession, 0, 300, 310, integration.Observation{Object: ev, States: []string{live},
						Corrupt: "content differs from what the write sent"})
				d.write(0, mem, integration.StateJoin, 400, 410, unknown)
				d.fin = &integration.Final{Memberships: map[string]integration.FinalMembership{
					mem: {Current: integration.StateJoin}, // current row without its history entry
				}}
			},
			violations: map[string]int{integration.VHalfApplied: 2},
		},
		{
			name: "unknown membership change applied whole or not at all",
			build: func(d *doctor) {
				d.write(0, mem, integration.StateJoin, 100, 110, acked).
					write(0, mem, integration.StateLeave, 200, 210, unknown).
					write(0, mem, integration.StateJoin, 300, 310, acked)
				d.fin = &integration.Final{Memberships: map[string]integration.FinalMembership{
					mem: {Current: integration.StateJoin, History: []string{integration.StateJoin, integration.StateJoin}},
				}}
			},
		},
		{
			name: "acknowledged membership change missing from history",
			build: func(d *doctor) {
				d.write(0, mem, integration.StateJoin, 100, 110, acked).
					write(0, mem, integration.StateLeave, 200, 210, acked)
				d.fin = &integration.Final{Memberships: map[string]integration.FinalMembership{
					mem: {Current: integration.StateJoin, History: []string{integration.StateJoin}},
				}}
			},
			violations: map[string]int{integration.VLostWrite: 1},
		},
		{
			name: "failed write applied",
			build: func(d *doctor) {
				d.write(0, ev, live, 100, 110, failed).final(5000, ev, live)
			},
			violations: map[string]int{integration.VFailedWriteApplied: 1},
		},
		{
			name: "phantom state",
			build: func(d *doctor) {
				d.read(1, integration.LevelBounded, 500, 100, 110, pb, v(7))
			},
			violations: map[string]int{integration.VPhantom: 1},
		},
		{
			name: "write seen before it started",
			build: func(d *doctor) {
				d.read(0, integration.LevelSession, 0, 100, 110, pa, v(1)).write(0, pa, v(1), 200, 210, acked)
			},
			violations: map[string]int{integration.VPhantom: 1},
		},
		{
			name: "primary refuses a write as if an acknowledged one were missing",
			build: func(d *doctor) {
				d.write(0, ev, live, 100, 110, acked).
					read(0, integration.LevelPrimary, 0, 200, 210, ev, absent, deleted) // "no live event to delete"
			},
			violations: map[string]int{integration.VPrimaryMissingWrite: 1},
		},
		{
			name: "duplicate and unexpected rows",
			build: func(d *doctor) {
				d.write(0, "msg/k1", live, 100, 110, unknown)
				d.fin = &integration.Final{Duplicates: map[string]int{"msg/k1": 2}, Unexpected: []string{"msg/zz"}}
			},
			violations: map[string]int{integration.VDuplicateWrite: 1, integration.VPhantom: 1},
		},
		{
			name: "async: a write lost at a failover is counted, not a violation",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 200, 210, acked).
					read(0, integration.LevelSession, 0, 2000, 2010, pa, v(1)).
					final(5000, pa, v(1))
			},
			cfg:       integration.CheckConfig{AllowLoss: true, PrimaryKills: []time.Duration{ms(220), ms(3000)}},
			anomalies: map[string]int{integration.ALossInduced: 2},
			lost:      []int{1, 0},
		},
		{
			name: "async: a write after the failover still counts",
			build: func(d *doctor) {
				d.write(0, pa, v(1), 100, 110, acked).write(0, pa, v(2), 400, 410, acked).final(5000, pa, v(1))
			},
			cfg:        integration.CheckConfig{AllowLoss: true, PrimaryKills: []time.Duration{ms(220)}},
			violations: map[string]int{integration.VLostWrite: 1},
			lost:       []int{0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := newDoctor()
			tc.build(d)
			res := integration.Check(d.h, d.fin, tc.cfg)
			got := map[string]int{}
			for k, n := range res.Violations {
				if n != 0 {
					got[k] = n
				}
			}
			want := tc.violations
			if want == nil {
				want = map[string]int{}
			}
			if !maps.Equal(got, want) {
				b, _ := json.MarshalIndent(res.Samples, "", "  ")
				t.Fatalf("violations %v, want %v; samples:\n%s", got, want, b)
			}
			if res.Total() > 0 && len(res.Samples) == 0 {
				t.Fatal("violations without samples")
			}
			for _, s := range res.Samples {
				if len(s.Excerpt) == 0 && s.Kind != integration.VPhantom {
					t.Errorf("sample %s has no history excerpt", s.Kind)
				}
			}
			for k, n := range tc.anomalies {
				if res.Anomalies[k] != n {
					t.Errorf("anomaly %s = %d, want %d (all: %v)", k, res.Anomalies[k], n, res.Anomalies)
				}
			}
			if tc.lost != nil && !equalInts(res.LostAtFailover, tc.lost) {
				t.Errorf("lost at failover %v, want %v", res.LostAtFailover, tc.lost)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestHistoryJSONRoundTrip: a history written for a post-mortem reads back
// to the same verdict.
func TestHistoryJSONRoundTrip(t *testing.T) {
	d := newDoctor()
	d.write(0, "profile/@a:t", v(1), 100, 110, acked).write(0, "profile/@a:t", v(2), 200, 210, acked).
		final(5000, "profile/@a:t", v(1))
	b, err := json.Marshal(d.h)
	if err != nil {
		t.Fatal(err)
	}
	var back integration.History
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	a, c := integration.Check(d.h, nil, integration.CheckConfig{}), integration.Check(&back, nil, integration.CheckConfig{})
	if !maps.Equal(a.Violations, c.Violations) || a.Violations[integration.VLostWrite] != 1 {
		t.Fatalf("before %v, after round trip %v", a.Violations, c.Violations)
	}
	if back.Len() != d.h.Len() {
		t.Fatalf("%d ops after round trip, want %d", back.Len(), d.h.Len())
	}
}
