package features

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// newEngine is the features engine over a real dial plan (DE, one trunk)
// and a real store: 201 internal only, 202-204 internal and national,
// ring groups 600 (ring-all) and 601 (round robin).
func newEngine(t testing.TB) *Engine {
	t.Helper()
	plan := dialplan.Plan{Country: "DE",
		Trunks: []dialplan.Trunk{{Name: "itsp"}},
		Routes: []dialplan.Route{{Prefix: "", Trunk: "itsp"}},
		Extensions: []dialplan.Extension{{Number: "100"}, {Number: "201", Classes: []dialplan.Class{dialplan.Internal}},
			{Number: "202"}, {Number: "203"}, {Number: "204"}, {Number: "600"}, {Number: "601"}},
		BurstAttempts: 1000}
	eng, err := dialplan.New(plan, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf := Config{Groups: []RingGroup{
		{Number: "600", Strategy: RingAll, Ring: 7, Fallback: "204", Members: []Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
		{Number: "601", Strategy: RoundRobin, Members: []Member{{Extension: "201", Ring: 5}, {Extension: "202", Ring: 6}, {Extension: "203"}}},
	}}
	users, err := LoadStore(storetest.Open(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	return New(eng, func() Config { return conf }, users, nil)
}

func TestFeatureCodes(t *testing.T) {
	e := newEngine(t)
	tests := []struct {
		from, dialled string
		status        int // dialplan.SIPStatus of the refusal; 0 done
		kind          dialplan.Kind
		target        string
	}{
		{"201", "*72030123456", 403, "", ""},   // class internal
		{"202", "*7209001234567", 403, "", ""}, // premium
		{"202", "*72112", 403, "", ""},         // emergency
		{"202", "*72202", 403, "", ""},         // itself
		{"202", "*72", 403, "", ""},            // no destination
		{"202", "*72030123456", 0, dialplan.KindFeature, string(ForwardOn)},
		{"202", "*90203", 0, dialplan.KindFeature, string(BusyOn)},
		{"202", "*72*97", 0, dialplan.KindFeature, string(ForwardOn)}, // to voicemail
		{"202", "*97", 0, dialplan.KindApp, "voicemail-access/202"},
		{"202", "*98203", 0, dialplan.KindApp, "voicemail-access/203"},
		{"202", "*8", 0, dialplan.KindApp, call.PickupApp + "202"}, // no pickup group: only itself
		{"202", "**203", 0, dialplan.KindApp, call.PickupApp},      // another group: nothing, like nothing ringing
		{"202", "*70", 404, "", ""},                                // park: no slots configured
		{"202", "*21", 403, "", ""},                                // follow-me without numbers
	}
	for _, tc := range tests {
		d, lease, err := e.RouteOutbound(tc.from, tc.dialled)
		lease.Release()
		if got := dialplan.SIPStatus(err); got != tc.status || err == nil && (d.Kind != tc.kind || d.Target != tc.target) {
			t.Errorf("%s dials %s: %+v %v (status %d), want %d %s %s", tc.from, tc.dialled, d, err, got, tc.status, tc.kind, tc.target)
		}
	}
	if s := e.Settings("202"); s.Always != Voicemail || s.Busy != "203" {
		t.Fatalf("202 settings %+v", s)
	}
	if s := e.Settings("201"); s.active() {
		t.Fatalf("refused codes changed 201: %+v", s)
	}
	// Forwarded to voicemail: the dial plan's decision is the app.
	if d, lease, err := e.RouteOutbound("100", "202"); err != nil || d.Kind != dialplan.KindApp || d.Target != "voicemail/202" {
		t.Fatalf("call to 202 forwarded to voicemail: %+v %v", d, err)
	} else {
		lease.Release()
	}
}

// stages runs a hunt against scripted outcomes (what the phones did) and
// returns what each stage rang.
func stages(t *testing.T, e *Engine, target string, outcomes ...call.Outcome) []call.Stage {
	t.Helper()
	d, lease, err := e.RouteOutbound("100", target)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	h := e.Hunt("100", d)
	if h == nil {
		return nil
	}
	var out []call.Stage
	o := call.Outcome{First: true}
	for i := 0; ; i++ {
		st, more := h.Next(o)
		if !more {
			return out
		}
		for _, d := range st.Dests {
			d.Lease.Release()
		}
		out = append(out, st)
		if len(st.Dests) == 0 || i >= len(outcomes) {
			return out
		}
		o = outcomes[i]
	}
}

func dests(st call.Stage) []string {
	var s []string
	for _, d := range st.Dests {
		if d.Extension != "" {
			s = append(s, d.Extension)
		} else {
			s = append(s, d.Trunk+":"+d.Number+" as "+d.As)
		}
	}
	return s
}

func TestHunts(t *testing.T) {
	busy := call.Outcome{Code: 486}
	noAnswer := call.Outcome{Code: 487, TimedOut: true}
	unreachable := call.Outcome{Code: 480, Unreachable: true}
	tests := []struct {
		name     string
		settings map[string]Settings
		target   string
		outcomes []call.Outcome
		want     [][]string // dests per stage
		code     int        // Code of the last stage
		ring     []time.Duration
	}{
		{name: "no settings: rung as usual", target: "203"},
		{name: "always external", settings: map[string]Settings{"202": {Always: "030123456"}}, target: "202",
			want: [][]string{{"itsp:030123456 as 202"}}},
		{name: "busy", settings: map[string]Settings{"202": {Busy: "203"}}, target: "202", outcomes: []call.Outcome{busy},
			want: [][]string{{"202"}, {"203"}}},
		{name: "busy without busy forward", settings: map[string]Settings{"202": {NoAnswer: "203"}}, target: "202", outcomes: []call.Outcome{busy},
			want: [][]string{{"202"}, nil}, code: 486},
		{name: "no answer after the ring time", settings: map[string]Settings{"202": {NoAnswer: "203", Ring: 9}}, target: "202", outcomes: []call.Outcome{noAnswer},
			want: [][]string{{"202"}, {"203"}}, ring: []time.Duration{9 * time.Second, 0}},
		{name: "unreachable", settings: map[string]Settings{"202": {Unreachable: "204", Busy: "203"}}, target: "202", outcomes: []call.Outcome{unreachable},
			want: [][]string{{"202"}, {"204"}}},
		{name: "dnd", settings: map[string]Settings{"202": {DND: true}}, target: "202", want: [][]string{nil}, code: 486},
		{name: "dnd with busy forward", settings: map[string]Settings{"202": {DND: true, Busy: "204"}}, target: "202", want: [][]string{{"204"}}},
		{name: "chain follows each extension's settings", settings: map[string]Settings{"202": {Always: "203"}, "203": {Busy: "204"}}, target: "202",
			outcomes: []call.Outcome{busy}, want: [][]string{{"203"}, {"204"}}},
		{name: "loop", settings: map[string]Settings{"202": {Always: "203"}, "203": {Always: "202"}}, target: "202", want: [][]string{nil}, code: codeLoop},
		{name: "loop through no answer", settings: map[string]Settings{"202": {NoAnswer: "203"}, "203": {NoAnswer: "202"}}, target: "202",
			outcomes: []call.Outcome{noAnswer, noAnswer}, want: [][]string{{"202"}, {"203"}, nil}, code: codeLoop},
		{name: "follow-me in sequence then no-answer forward", settings: map[string]Settings{"202": {NoAnswer: "204",
			FollowMe: FollowMe{On: true, Numbers: []string{"203", "030123456"}, Ring: 8}}}, target: "202",
			outcomes: []call.Outcome{noAnswer, noAnswer, noAnswer},
			want:     [][]string{{"202"}, {"203"}, {"itsp:030123456 as 202"}, {"204"}}},
		{name: "follow-me together", settings: map[string]Settings{"202": {FollowMe: FollowMe{On: true, Together: true, Numbers: []string{"203"}}}}, target: "202",
			outcomes: []call.Outcome{noAnswer}, want: [][]string{{"202", "203"}}},
		{name: "ring-all then fallback", target: "600", outcomes: []call.Outcome{noAnswer},
			want: [][]string{{"201", "202", "203"}, {"204"}}, ring: []time.Duration{7 * time.Second, 0}},
		{name: "ring-all skips DND members", settings: map[string]Settings{"202": {DND: true}}, target: "600",
			want: [][]string{{"201", "203"}}},
		{name: "group member's decline ends it", target: "600", outcomes: []call.Outcome{{Code: 603}}, want: [][]string{{"201", "202", "203"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t)
			for ext, s := range tc.settings {
				if _, err := e.users.Update(ext, func(cur *Settings) error { *cur = s; return nil }, nil); err != nil {
					t.Fatal(err)
				}
			}
			got := stages(t, e, tc.target, tc.outcomes...)
			if len(got) != len(tc.want) {
				t.Fatalf("%d stages %+v, want %v", len(got), got, tc.want)
			}
			for i, st := range got {
				if d := dests(st); len(d) != len(tc.want[i]) || len(d) > 0 && !equal(d, tc.want[i]) {
					t.Fatalf("stage %d rang %v, want %v", i, d, tc.want[i])
				}
				if i < len(tc.ring) && st.Ring != tc.ring[i] {
					t.Fatalf("stage %d rings %v, want %v", i, st.Ring, tc.ring[i])
				}
			}
			if len(got) > 0 && got[len(got)-1].Code != tc.code {
				t.Fatalf("last stage code %d, want %d", got[len(got)-1].Code, tc.code)
			}
		})
	}
}

func equal(a, b []string) bool {
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

// TestRoundRobin: each call starts one member further; each member rings
// for its own time.
func TestRoundRobin(t *testing.T) {
	e := newEngine(t)
	noAnswer := call.Outcome{Code: 487, TimedOut: true}
	for _, first := range []string{"201", "202", "203", "201"} {
		got := stages(t, e, "601", noAnswer, noAnswer, noAnswer)
		if len(got) != 3 || dests(got[0])[0] != first {
			t.Fatalf("round robin started with %v, want %s", got, first)
		}
	}
	got := stages(t, e, "601", noAnswer, noAnswer, noAnswer)
	if got[0].Ring != 6*time.Second || got[1].Ring != DefaultRing*time.Second || got[2].Ring != 5*time.Second {
		t.Fatalf("ring times %v %v %v", got[0].Ring, got[1].Ring, got[2].Ring)
	}
}

// TestSetSettingsRefused: the API path checks every destination with the
// extension's class of service when set; nothing is stored on refusal.
func TestSetSettingsRefused(t *testing.T) {
	e := newEngine(t)
	for _, s := range []Settings{
		{Always: "030123456"},
		{FollowMe: FollowMe{Numbers: []string{"203", "030123456"}}},
		{Unreachable: "sip:evil@example.com"},
	} {
		if _, err := e.SetSettings("201", s, nil); !errors.Is(err, ErrDestination) {
			t.Fatalf("201 %+v: %v", s, err)
		}
	}
	if _, err := e.SetSettings("202", Settings{Always: "0044201234567"}, nil); dialplan.SIPStatus(err) != 403 {
		t.Fatalf("202 international: %v", err)
	}
	if s := e.Settings("201"); s.active() || len(s.FollowMe.Numbers) > 0 {
		t.Fatalf("refused settings stored: %+v", s)
	}
	if _, err := e.SetSettings("202", Settings{Always: "030123456", FollowMe: FollowMe{Numbers: []string{"203"}}}, nil); err != nil {
		t.Fatal(err)
	}
}

// FuzzRouteOutbound: whatever an extension dials, a number that starts
// with a code of the table never reaches a trunk, a pickup names only
// extensions the dialler may see, and nothing panics.
func FuzzRouteOutbound(f *testing.F) {
	for _, s := range []string{"*72030123456", "*7209001234567", "**201", "*8", "**20%2C1", "*97", "*31#030123", "%2A72%2A97", "*72+4930123", "0301234567", "71", "*70", "%2A70"} {
		f.Add(s)
	}
	e := newParkEngine(f)
	table := e.conf().Table()
	f.Fuzz(func(t *testing.T, dialled string) {
		d, lease, err := e.RouteOutbound("202", dialled)
		lease.Release()
		if rest, ok := strings.CutPrefix(d.Target, call.RetrieveApp); err == nil && ok {
			_, list, _ := strings.Cut(rest, "/")
			for _, x := range pickupList(list) {
				if !e.MaySee("202", x) {
					t.Fatalf("%q lets 202 retrieve calls parked by %q", dialled, x)
				}
			}
		}
		if list, ok := strings.CutPrefix(d.Target, call.PickupApp); err == nil && ok {
			for _, x := range pickupList(list) {
				if !e.MaySee("202", x) {
					t.Fatalf("%q lets 202 pick up at %q", dialled, x)
				}
			}
		}
		if err != nil || d.Trunk == "" {
			return
		}
		n, _ := dialplan.Normalize(dialled)
		if e.conf().Park.IsSlot(n) {
			t.Fatalf("slot %q went to trunk %s", dialled, d.Trunk)
		}
		for _, c := range table {
			if strings.HasPrefix(n, c.Code) {
				t.Fatalf("%q (code %s) went to trunk %s as %q", dialled, c.Code, d.Trunk, d.Target)
			}
		}
	})
}

func pickupList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}
