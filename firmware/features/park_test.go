package features

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/queue"
)

func TestParkSlots(t *testing.T) {
	tests := []struct {
		p    ParkSlots
		want []string
	}{
		{ParkSlots{First: "71", Count: 3}, []string{"71", "72", "73"}},
		{ParkSlots{First: "0701", Count: 2}, []string{"0701", "0702"}},
		{ParkSlots{First: "71"}, nil},
		{ParkSlots{First: "7x", Count: 2}, nil},
		{ParkSlots{First: "71", Count: MaxParkSlots + 1}, nil},
	}
	for _, tc := range tests {
		if got := tc.p.Slots(); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestParkValidate(t *testing.T) {
	isExt := func(n string) bool { return n == "201" || n == "202" || n == "75" }
	base := Config{Groups: []RingGroup{{Number: "600", Strategy: RingAll, Members: []Member{{Extension: "201"}}}},
		Queues: []queue.Queue{{Number: "810", Strategy: queue.RingAll, Agents: []queue.Agent{{Extension: "202"}}}}}
	if err := base.Validate(isExt); err != nil {
		t.Fatalf("base: %v", err)
	}
	tests := []struct {
		name string
		p    ParkSlots
		ok   bool
	}{
		{"off", ParkSlots{}, true},
		{"71-74", ParkSlots{First: "71", Count: 4, Timeout: 60, Fallback: "voicemail/201", Music: "default"}, true},
		{"fallback group", ParkSlots{First: "71", Count: 1, Fallback: "600"}, true},
		{"count 0 with fields", ParkSlots{First: "71"}, false},
		{"too many", ParkSlots{First: "71", Count: MaxParkSlots + 1}, false},
		{"not digits", ParkSlots{First: "7a", Count: 1}, false},
		{"width changes", ParkSlots{First: "98", Count: 3}, false},
		{"an extension", ParkSlots{First: "71", Count: 5}, false}, // 75
		{"a group", ParkSlots{First: "599", Count: 2}, false},
		{"a queue", ParkSlots{First: "810", Count: 1}, false},
		{"timeout short", ParkSlots{First: "71", Count: 1, Timeout: MinParkTimeout - 1}, false},
		{"timeout long", ParkSlots{First: "71", Count: 1, Timeout: MaxParkTimeout + 1}, false},
		{"fallback unknown", ParkSlots{First: "71", Count: 1, Fallback: "999"}, false},
		{"fallback itself", ParkSlots{First: "71", Count: 1, Fallback: "71"}, false},
		{"music path", ParkSlots{First: "71", Count: 1, Music: "../x"}, false},
	}
	for _, tc := range tests {
		c := base
		c.Park = tc.p
		err := c.Validate(isExt)
		if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrConfig) {
			t.Errorf("%s: %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// newParkEngine is newEngine with slots 71-72 and pickup group 201, 202.
func newParkEngine(t testing.TB) *Engine {
	e := newEngine(t)
	conf := e.conf()
	conf.Park = ParkSlots{First: "71", Count: 2}
	conf.PickupGroups = []PickupGroup{{Name: "sales", Members: []string{"201", "202"}}}
	e.conf = func() Config { return conf }
	return e
}

// TestParkRouting: the park code and slot numbers are the box's (never
// the dial plan's, never a trunk's); a slot names only the extensions the
// dialler may see; only group members may watch slot lamps.
func TestParkRouting(t *testing.T) {
	e := newParkEngine(t)
	tests := []struct{ from, dialled, target string }{
		{"202", "*70", call.ParkApp + "71,72"},
		{"202", "71", call.RetrieveApp + "71/201,202"},
		{"201", "72", call.RetrieveApp + "72/201,202"},
		{"203", "71", call.RetrieveApp + "71/203"},
		{"100", "%2A70", call.ParkApp + "71,72"},
	}
	for _, tc := range tests {
		d, lease, err := e.RouteOutbound(tc.from, tc.dialled)
		lease.Release()
		if err != nil || d.Kind != dialplan.KindApp || d.Target != tc.target || d.Trunk != "" {
			t.Errorf("%s dials %s: %+v %v, want %s", tc.from, tc.dialled, d, err, tc.target)
		}
	}
	// 73 is no slot: the dial plan routes it (to the trunk here).
	if d, lease, err := e.RouteOutbound("202", "73"); err == nil && strings.HasPrefix(d.Target, call.RetrieveApp) {
		t.Fatalf("73: %+v", d)
	} else {
		lease.Release()
	}
	// A trunk's caller never reaches a slot.
	if d, lease, err := e.RouteInbound("itsp", "71"); err == nil && d.Kind == dialplan.KindApp {
		t.Fatalf("trunk to 71: %+v", d)
	} else {
		lease.Release()
	}
	for _, tc := range []struct {
		who, slot string
		ok        bool
	}{{"201", "71", true}, {"202", "72", true}, {"203", "71", false}, {"201", "73", false}, {"", "71", false}} {
		if got := e.MaySee(tc.who, tc.slot); got != tc.ok {
			t.Errorf("%s watches %s: %v", tc.who, tc.slot, got)
		}
	}
}

func FuzzParkAppOpen(f *testing.F) {
	for _, s := range []string{"71/202", "73/202", "71/", "/202", "71/20x", "71/202/1", "\x00/\xff"} {
		f.Add(call.AppParked, s)
	}
	e := newParkEngine(f)
	a := e.ParkApp(nil, nil)
	f.Fuzz(func(t *testing.T, app, arg string) {
		_, err := a.Open(app, arg, call.Caller{})
		slot, parker, _ := strings.Cut(arg, "/")
		valid := app == call.AppParked && (slot == "71" || slot == "72") && digits(parker)
		if (err == nil) != valid || err != nil && !errors.Is(err, call.ErrNoApp) {
			t.Fatalf("%q %q: %v", app, arg, err)
		}
	})
}
