package queue

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func none(string) bool               { return false }
func exts(as []Agent) (out []string) {
	for _, a := range as {
		out = append(out, a.Extension)
	}
	return out
}

func agents(static bool, es ...string) []Agent {
	var out []Agent
	for _, e := range es {
		out = append(out, Agent{Extension: e, Static: static})
	}
	return out
}

// answer runs one complete queue call answered by the first agent Pick
// offers, talking for talk.
func answer(t *testing.T, m *Manager, c *clock, q Queue, talk time.Duration) string {
	t.Helper()
	w, err := m.Enter(q)
	if err != nil {
		t.Fatal(err)
	}
	got := w.Pick(q, none)
	if len(got) == 0 {
		t.Fatal("nobody offered")
	}
	w.Answered(got[0].Extension)
	c.add(talk)
	w.Ended(time.Duration(q.WrapUp) * time.Second)
	return got[0].Extension
}

func TestStrategies(t *testing.T) {
	for _, tc := range []struct {
		strategy Strategy
		want     []string // who answers calls 1..n (each answered by the agent offered)
	}{
		{LeastRecent, []string{"201", "202", "203", "201", "202"}},
		{FewestCalls, []string{"201", "202", "203", "201", "202"}},
	} {
		t.Run(string(tc.strategy), func(t *testing.T) {
			c := &clock{t: time.Unix(1e9, 0)}
			m := NewManager(c.now)
			q := Queue{Number: "800", Strategy: tc.strategy, Agents: agents(true, "201", "202", "203")}
			var got []string
			for range tc.want {
				got = append(got, answer(t, m, c, q, time.Second))
				c.add(time.Second)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("answered by %v, want %v", got, tc.want)
			}
		})
	}
	// Fewest calls and least recent differ: 203 joined late (logged in
	// after 201 and 202 took two calls each): fewest-calls gives it the
	// next two, least-recent only one.
	for _, tc := range []struct {
		strategy Strategy
		want     []string
	}{
		{FewestCalls, []string{"203", "203", "201"}},
		{LeastRecent, []string{"203", "201", "202"}},
	} {
		t.Run(string(tc.strategy)+"/late", func(t *testing.T) {
			c := &clock{t: time.Unix(1e9, 0)}
			m := NewManager(c.now)
			q := Queue{Number: "800", Strategy: tc.strategy, Agents: agents(false, "201", "202", "203")}
			for _, e := range []string{"201", "202"} {
				if err := m.Login(q, e); err != nil {
					t.Fatal(err)
				}
			}
			for range 4 {
				answer(t, m, c, q, time.Second)
				c.add(time.Second)
			}
			if err := m.Login(q, "203"); err != nil {
				t.Fatal(err)
			}
			var got []string
			for range tc.want {
				got = append(got, answer(t, m, c, q, time.Second))
				c.add(time.Second)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("answered by %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPickSkipsAndRingAll(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	m := NewManager(c.now)
	q := Queue{Number: "800", Strategy: RingAll, WrapUp: 10, Agents: append(agents(true, "201", "202"), agents(false, "203", "204")...)}
	if err := m.Login(q, "204"); err != nil {
		t.Fatal(err)
	}
	m.DialogChanged(call.DialogEvent{Entity: "202", ID: "x", State: call.DialogConfirmed})
	w, _ := m.Enter(q)
	// 202 talks, 203 is logged out, 204 in DND (skip).
	if got := exts(w.Pick(q, func(e string) bool { return e == "204" })); !slices.Equal(got, []string{"201"}) {
		t.Fatalf("ring-all offered %v, want [201]", got)
	}
	// A second caller waits: 201 rings for the first, and the first
	// caller is served first.
	w2, _ := m.Enter(q)
	if got := w2.Pick(q, none); len(got) != 1 || got[0].Extension != "204" {
		t.Fatalf("second caller offered %v, want [204]", exts(got))
	}
	w2.NotAnswered()
	w.Answered("201")
	m.DialogChanged(call.DialogEvent{Entity: "202", ID: "x", State: call.DialogTerminated})
	w.Ended(10 * time.Second)
	// 201 is in wrap-up for 10 s.
	if got := exts(w2.Pick(q, none)); !slices.Equal(got, []string{"202", "204"}) {
		t.Fatalf("during 201's wrap-up offered %v", got)
	}
	w2.NotAnswered()
	c.add(10 * time.Second)
	if got := exts(w2.Pick(q, none)); !slices.Equal(got, []string{"201", "202", "204"}) {
		t.Fatalf("after wrap-up offered %v", got)
	}
	w2.Ended(0) // the caller hung up while it rang: abandoned
	st := m.Stats([]Queue{q}, nil)[0]
	if st.Offered != 2 || st.Answered != 1 || st.Abandoned != 1 || len(st.Waiting) != 0 {
		t.Fatalf("stats %+v", st)
	}
	a := map[string]AgentStats{}
	for _, x := range st.Agents {
		a[x.Extension] = x
	}
	if a["201"].Answered != 1 || a["204"].Missed != 2 || a["204"].Offered != 3 || a["203"].State != StateLoggedOut {
		t.Fatalf("agents %+v", st.Agents)
	}
}

func TestCapacityTimeoutLogin(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	m := NewManager(c.now)
	q := Queue{Number: "800", Strategy: LeastRecent, MaxCallers: 1, Agents: append(agents(true, "201"), agents(false, "202")...)}
	w, err := m.Enter(q)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Enter(q); !errors.Is(err, ErrFull) {
		t.Fatalf("second caller: %v, want ErrFull", err)
	}
	c.add(30 * time.Second)
	w.TimedOut()
	w.Ended(0)
	if err := m.Logout(q, "201"); !errors.Is(err, ErrStatic) {
		t.Fatalf("static logout: %v", err)
	}
	if err := m.Login(q, "999"); !errors.Is(err, ErrNotAgent) {
		t.Fatalf("stranger login: %v", err)
	}
	st := m.Stats([]Queue{q}, nil)[0]
	if st.TimedOut != 1 || st.Refused != 1 || st.Abandoned != 0 || st.LongestWait != 30 {
		t.Fatalf("stats %+v", st)
	}
}

func TestValidate(t *testing.T) {
	isExt := func(s string) bool { return s >= "200" && s < "300" }
	fb := func(s string) bool { return isExt(s) || s == "voicemail/201" }
	ok := Queue{Number: "800", Strategy: RingAll, Agents: agents(true, "201")}
	for _, tc := range []struct {
		name string
		mod  func(*Queue)
		bad  bool
	}{
		{"valid", func(*Queue) {}, false},
		{"number", func(q *Queue) { q.Number = "8a" }, true},
		{"strategy", func(q *Queue) { q.Strategy = "random" }, true},
		{"no agents", func(q *Queue) { q.Agents = nil }, true},
		{"stranger", func(q *Queue) { q.Agents = agents(true, "999") }, true},
		{"twice", func(q *Queue) { q.Agents = agents(true, "201", "201") }, true},
		{"ring", func(q *Queue) { q.Ring = 2 }, true},
		{"agent ring", func(q *Queue) { q.Agents[0].Ring = 500 }, true},
		{"wait", func(q *Queue) { q.MaxWait = 4000 }, true},
		{"callers", func(q *Queue) { q.MaxCallers = -1 }, true},
		{"wrap", func(q *Queue) { q.WrapUp = 601 }, true},
		{"fallback self", func(q *Queue) { q.Fallback = "800" }, true},
		{"fallback unknown", func(q *Queue) { q.Fallback = "555" }, true},
		{"fallback voicemail", func(q *Queue) { q.Fallback = "voicemail/201" }, false},
		{"name", func(q *Queue) { q.Name = "a\nb" }, true},
		{"announce", func(q *Queue) { q.Announce = 30 }, false},
		{"announce short", func(q *Queue) { q.Announce = 3 }, true},
		{"announce long", func(q *Queue) { q.Announce = 601 }, true},
		{"music", func(q *Queue) { q.Music = "jazz-2" }, false},
		{"music upper", func(q *Queue) { q.Music = "Jazz" }, true},
		{"music path", func(q *Queue) { q.Music = "../x" }, true},
		{"music dash", func(q *Queue) { q.Music = "-x" }, true},
		{"music long", func(q *Queue) { q.Music = "abcdefghijklmnopqrstuvwxyz0123456" }, true},
		{"ringback", func(q *Queue) { q.Ringback = true }, false},
	} {
		q := ok.Clone()
		tc.mod(&q)
		err := q.Validate(isExt, fb)
		if (err != nil) != tc.bad || err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestPosition: a caller's place follows those who came before it
// leaving, and is 0 once it left.
func TestPosition(t *testing.T) {
	m := NewManager(nil)
	q := Queue{Number: "800", Strategy: RingAll, Agents: agents(false, "201")}
	w1, _ := m.Enter(q)
	w2, _ := m.Enter(q)
	w3, _ := m.Enter(q)
	if p := []int{w1.Position(), w2.Position(), w3.Position()}; !slices.Equal(p, []int{1, 2, 3}) {
		t.Fatalf("positions %v", p)
	}
	w1.Ended(0) // abandoned
	w2.TimedOut()
	if p := []int{w1.Position(), w2.Position(), w3.Position()}; !slices.Equal(p, []int{0, 0, 1}) {
		t.Fatalf("positions after two left %v", p)
	}
}
