package call

import (
	"strings"
	"sync"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// dialogLog is a DialogObserver that keeps what it was told.
type dialogLog struct {
	mu  sync.Mutex
	evs []DialogEvent
}

func (l *dialogLog) DialogChanged(ev DialogEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

func (l *dialogLog) of(entity string) (states []string, last DialogEvent) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.evs {
		if e.Entity == entity {
			states = append(states, e.State.String())
			last = e
		}
	}
	return states, last
}

// TestObserverCallStates: a sipp call 101 → 102 (the callee rings, then
// answers; the caller hangs up) is reported for both extensions, in
// order, each state once, with direction, the other party and the leg's
// identifiers; an outside number dialled is reported as a number.
func TestObserverCallStates(t *testing.T) {
	obs := &dialogLog{}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Observer = obs })
	// The callee rings before it answers: a 180 that crosses its 200 is
	// dropped by the transaction layer, and no early state is seen.
	h.dir.set("102", sippUAS(t, "uas_ring_answer.xml"))
	sippUAC(t, "uac.xml", "102", h.addr, 1, 1, 1, "-d", "200")
	waitEnded(t, h)
	want := "trying,early,confirmed,terminated"
	for _, c := range []struct {
		ext    string
		dir    Direction
		remote Party
	}{
		{"101", Initiator, Party{Extension: "102"}},
		{"102", Recipient, Party{Extension: "101"}},
	} {
		states, last := obs.of(c.ext)
		if got := strings.Join(states, ","); got != want {
			t.Fatalf("%s: %s, want %s", c.ext, got, want)
		}
		if last.Direction != c.dir || last.Remote != c.remote || last.ID == "" || last.CallID == "" || last.RemoteTag == "" || last.LocalTag == "" {
			t.Fatalf("%s: %+v", c.ext, last)
		}
	}
	_, a := obs.of("101")
	_, b := obs.of("102")
	if a.ID == b.ID || a.CallID == b.CallID {
		t.Fatalf("the two sides share identifiers: %+v %+v", a, b)
	}
}
