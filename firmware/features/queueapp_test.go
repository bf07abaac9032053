package features

import (
	"errors"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// newQueueEngine is a features engine over a real dial plan and store
// with queues 810 (static agent 201), 811 (dynamic agent 202, nobody
// logged in) and 812 (like 811, callers hear ringing).
func newQueueEngine(t *testing.T) *Engine {
	t.Helper()
	plan := dialplan.Plan{Country: "DE",
		Extensions:    []dialplan.Extension{{Number: "100"}, {Number: "201"}, {Number: "202"}},
		BurstAttempts: 1000}
	eng, err := dialplan.New(plan, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf := Config{Queues: []queue.Queue{
		{Number: "810", Strategy: queue.RingAll, Agents: []queue.Agent{{Extension: "201", Static: true}}},
		{Number: "811", Strategy: queue.RingAll, Agents: []queue.Agent{{Extension: "202"}}},
		{Number: "812", Strategy: queue.RingAll, Ringback: true, Agents: []queue.Agent{{Extension: "202"}}},
	}}
	users, err := LoadStore(storetest.Open(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	return New(eng, func() Config { return conf }, users, nil)
}

// TestQueueAppTickets: a queue caller nobody can answer at once ends its
// hunt at the queue application with a single-use ticket; one an agent
// could answer rings the agent first; a ringback queue keeps waiting in
// the hunt. Forged, reused or misdirected tickets open nothing.
func TestQueueAppTickets(t *testing.T) {
	e := newQueueEngine(t)
	apps := e.QueueApp(nil, nil)
	hunt := func(n string) call.Hunt {
		return e.Hunt("100", dialplan.Decision{Kind: dialplan.KindInternal, Target: n})
	}

	// 811: nobody logged in: the application at once.
	st, ok := hunt("811").Next(call.Outcome{First: true})
	name, arg := dialplan.SplitAppTarget(st.App)
	if !ok || name != AppQueue || !strings.HasPrefix(arg, "811/") || len(st.Dests) != 0 {
		t.Fatalf("811 first stage: %+v %v", st, ok)
	}
	if _, err := apps.Open(AppQueue, "811/forged", call.Caller{}); !errors.Is(err, call.ErrNoApp) {
		t.Fatalf("forged ticket: %v", err)
	}
	if _, err := apps.Open(AppQueue, arg, call.Caller{}); err != nil {
		t.Fatalf("ticket: %v", err)
	}
	if _, err := apps.Open(AppQueue, arg, call.Caller{}); !errors.Is(err, call.ErrNoApp) {
		t.Fatalf("ticket used twice: %v", err)
	}
	st, _ = hunt("811").Next(call.Outcome{First: true})
	_, arg = dialplan.SplitAppTarget(st.App)
	if _, err := apps.Open(AppQueue, "810/"+strings.TrimPrefix(arg, "811/"), call.Caller{}); !errors.Is(err, call.ErrNoApp) {
		t.Fatalf("another queue's ticket: %v", err)
	}

	// 810: its agent is free: rung first (ringback), then the
	// application.
	h := hunt("810")
	st, _ = h.Next(call.Outcome{First: true})
	if len(st.Dests) != 1 || st.Dests[0].Extension != "201" || st.App != "" {
		t.Fatalf("810 first stage: %+v", st)
	}
	st, _ = h.Next(call.Outcome{Code: 487, TimedOut: true})
	if name, arg := dialplan.SplitAppTarget(st.App); name != AppQueue || !strings.HasPrefix(arg, "810/") {
		t.Fatalf("810 after no answer: %+v", st)
	}

	// 812 keeps the caller ringing.
	st, _ = hunt("812").Next(call.Outcome{First: true})
	if st.App != "" || st.Wait == 0 {
		t.Fatalf("ringback queue: %+v", st)
	}

	qs := map[string]queue.Stats{}
	for _, s := range e.Queues() {
		qs[s.Number] = s
	}
	if qs["811"].Offered != 2 || len(qs["811"].Waiting) != 2 || agentOffered(qs["810"], "201") != 1 {
		t.Fatalf("stats: %+v", qs)
	}
}

// FuzzQueueAppOpen: whatever a target names, only an issued ticket
// opens, and nothing panics.
func FuzzQueueAppOpen(f *testing.F) {
	for _, s := range []string{"810/", "810/00", "/x", "810/810/1", "\x00/\xff"} {
		f.Add(AppQueue, s)
	}
	f.Fuzz(func(t *testing.T, app, arg string) {
		a := (&Engine{}).QueueApp(nil, nil)
		if _, err := a.Open(app, arg, call.Caller{}); !errors.Is(err, call.ErrNoApp) {
			t.Fatalf("%q %q opened: %v", app, arg, err)
		}
	})
}

func agentOffered(s queue.Stats, ext string) int {
	for _, a := range s.Agents {
		if a.Extension == ext {
			return a.Offered
		}
	}
	return -1
}
