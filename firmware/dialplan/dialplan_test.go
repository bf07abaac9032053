package dialplan

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// degradedGate behaves like license.Manager in degraded mode: only
// emergency numbers pass (the licence package owns that list; here 112).
type degradedGate struct{ degraded bool }

func (g degradedGate) AllowOutboundCall(n string) bool { return !g.degraded || n == "112" }

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock               { return &clock{t: time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)} }
func kinds(l *logs.Log) (out []logs.Kind) {
	for _, e := range l.Recent(100) {
		out = append(out, e.Kind)
	}
	return out
}

func testPlan() Plan {
	return Plan{
		Country: "DE",
		Trunks:  []Trunk{{Name: "itsp", Limits: Limits{MaxConcurrent: 3, MaxPerHour: 100}}, {Name: "backup"}},
		Extensions: []Extension{
			{Number: "100"},
			{Number: "101", Classes: []Class{Internal, National, International}},
			{Number: "102", Classes: []Class{Internal, National, International, Premium}, Limits: Limits{MaxConcurrent: 1, MaxPerHour: 3}},
			{Number: "103", Classes: []Class{Internal}},
		},
		Routes: []Route{
			{Prefix: "", Trunk: "itsp"},
			{Prefix: "+", Trunk: "itsp", Strip: 1, Add: "00"},
			{Prefix: "089", Trunk: "backup"},
		},
		DIDs: []DID{{Number: "+4930123456", Extension: "100"}, {Number: "0301234567", Trunk: "backup", Extension: "101"}},
	}
}

func TestRouteOutbound(t *testing.T) {
	tests := []struct {
		from, dialled string
		kind          Kind
		class         Class
		trunk, target string
		err           error
		status        int
	}{
		{"100", "101", KindInternal, Internal, "", "101", nil, 0},
		{"103", "100", KindInternal, Internal, "", "100", nil, 0},
		{"100", "030 123-456", KindOutbound, National, "itsp", "030123456", nil, 0},
		{"100", "+49 30 123456", KindOutbound, National, "itsp", "030123456", nil, 0},
		{"100", "0049 89 1234", KindOutbound, National, "backup", "0891234", nil, 0},
		{"100", "+44 20 7946 0000", "", International, "", "", ErrBlocked, 403},
		{"100", "0044 20 7946 0000", "", International, "", "", ErrBlocked, 403},
		{"101", "+44 20 7946 0000", KindOutbound, International, "itsp", "00442079460000", nil, 0},
		{"101", "0900 123456", "", Premium, "", "", ErrBlocked, 403},
		{"101", "+49 900 123456", "", Premium, "", "", ErrBlocked, 403},
		{"102", "0900 123456", KindOutbound, Premium, "itsp", "0900123456", nil, 0},
		{"103", "030123456", "", National, "", "", ErrBlocked, 403},
		{"103", "112", KindEmergency, National, "itsp", "112", nil, 0},
		{"100", "110", KindEmergency, National, "itsp", "110", nil, 0},
		{"999", "101", "", "", "", "", ErrUnknownExtension, 403},
		{"100", "sip:evil", "", "", "", "", ErrInvalidNumber, 404},
	}
	for _, tc := range tests {
		t.Run(tc.from+"→"+tc.dialled, func(t *testing.T) {
			e, err := New(testPlan(), degradedGate{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			d, lease, err := e.RouteOutbound(tc.from, tc.dialled)
			defer lease.Release()
			if !errors.Is(err, tc.err) || SIPStatus(err) != tc.status {
				t.Fatalf("err = %v (status %d), want %v (%d)", err, SIPStatus(err), tc.err, tc.status)
			}
			if err != nil {
				if lease != nil {
					t.Fatal("lease on refusal")
				}
				return
			}
			if d.Kind != tc.kind || d.Class != tc.class || d.Trunk != tc.trunk || d.Target != tc.target {
				t.Fatalf("decision %+v", d)
			}
		})
	}
}

func TestEmergencyAlwaysAllowed(t *testing.T) {
	for _, country := range []struct{ iso, number string }{{"DE", "112"}, {"US", "911"}, {"GB", "999"}, {"GB", "112"}, {"AU", "000"}} {
		p := testPlan()
		p.Country = country.iso
		p.Emergency = []string{"19222"}
		p.Extensions[3].Limits = Limits{MaxConcurrent: 1, MaxPerHour: 1}
		log, _ := logs.New(nil, 100)
		e, err := New(p, degradedGate{degraded: true}, log)
		if err != nil {
			t.Fatal(err)
		}
		// Licence degraded: normal calls refused…
		if _, _, err := e.RouteOutbound("101", "030123456"); !errors.Is(err, ErrLicence) && country.iso == "DE" {
			t.Fatalf("%s: degraded licence let a normal call out: %v", country.iso, err)
		}
		// …suspended and at its limits, 103 still reaches emergency numbers.
		for range p.BurstAttempts + DefaultBurstAttempts {
			e.RouteOutbound("103", "+1 212 555 0100")
		}
		if _, ok := e.Suspended("103"); !ok {
			t.Fatalf("%s: 103 not suspended", country.iso)
		}
		for _, n := range []string{country.number, "19222", country.number} {
			d, lease, err := e.RouteOutbound("103", n)
			if err != nil || d.Kind != KindEmergency {
				t.Fatalf("%s: emergency %s refused: %v", country.iso, n, err)
			}
			defer lease.Release()
		}
	}
}

func TestLimitsAndBurst(t *testing.T) {
	c := newClock()
	log, _ := logs.New(nil, 100)
	p := testPlan()
	p.BurstAttempts = 4
	e, err := New(p, nil, log, WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	// 102: one call at a time.
	_, l1, err := e.RouteOutbound("102", "030111")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.RouteOutbound("102", "030222"); !errors.Is(err, ErrConcurrent) || SIPStatus(err) != 486 {
		t.Fatalf("second concurrent call: %v", err)
	}
	l1.Release()
	l1.Release() // idempotent
	if n, _ := e.Active("102", "itsp"); n != 0 {
		t.Fatalf("%d active after release", n)
	}
	// Three per hour: two more admitted, then refused until the hour passes.
	for i := range 2 {
		_, l, err := e.RouteOutbound("102", "030333")
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		l.Release()
	}
	if _, _, err := e.RouteOutbound("102", "030444"); !errors.Is(err, ErrRate) {
		t.Fatalf("fourth call in an hour: %v", err)
	}
	c.add(61 * time.Minute)
	_, l, err := e.RouteOutbound("102", "030555")
	if err != nil {
		t.Fatalf("after an hour: %v", err)
	}
	l.Release()
	// Trunk limit: itsp carries 3 at once, then 503.
	var leases []*Lease
	for _, from := range []string{"100", "101", "100"} {
		_, l, err := e.RouteOutbound(from, "030999")
		if err != nil {
			t.Fatal(err)
		}
		leases = append(leases, l)
	}
	if _, _, err := e.RouteOutbound("101", "030999"); SIPStatus(err) != 503 {
		t.Fatalf("trunk full: %v", err)
	}
	for _, l := range leases {
		l.Release()
	}
	// A burst of blocked international attempts from 100 suspends it and
	// raises events.
	for range 4 {
		e.RouteOutbound("100", "+882 1234 5678")
	}
	if _, ok := e.Suspended("100"); !ok {
		t.Fatal("100 not suspended after a burst")
	}
	if _, _, err := e.RouteOutbound("100", "030123"); !errors.Is(err, ErrSuspended) {
		t.Fatalf("suspended extension called out: %v", err)
	}
	if _, l, err := e.RouteOutbound("100", "101"); err != nil {
		t.Fatalf("internal call of a suspended extension: %v", err)
	} else {
		l.Release()
	}
	got := strings.Join(func() (s []string) {
		for _, k := range kinds(log) {
			s = append(s, string(k))
		}
		return
	}(), ",")
	if !strings.Contains(got, string(KindBurst)) || !strings.Contains(got, string(KindSuspended)) || !strings.Contains(got, string(KindBlocked)) {
		t.Fatalf("events %s", got)
	}
	e.Unsuspend("100")
	if _, l, err := e.RouteOutbound("100", "030123"); err != nil {
		t.Fatalf("after unsuspend: %v", err)
	} else {
		l.Release()
	}
	// Slow refused attempts (outside the burst window) do not suspend.
	for range 6 {
		c.add(11 * time.Minute)
		e.RouteOutbound("101", "0900123")
	}
	if _, ok := e.Suspended("101"); ok {
		t.Fatal("slow refusals suspended 101")
	}
}

func TestRouteInbound(t *testing.T) {
	e, err := New(testPlan(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		trunk, called, ext string
		err                error
	}{
		{"itsp", "+49 30 123456", "100", nil},
		{"itsp", "030123456", "", ErrNoRoute}, // DID listed in E.164 form only
		{"backup", "+49 301234567", "101", nil},
		{"itsp", "0301234567", "", ErrNoRoute}, // DID bound to the backup trunk
		{"nope", "+4930123456", "", ErrNoRoute},
	}
	for _, tc := range tests {
		d, l, err := e.RouteInbound(tc.trunk, tc.called)
		if !errors.Is(err, tc.err) || (err == nil && d.Target != tc.ext) {
			t.Errorf("%s %s: %+v %v", tc.trunk, tc.called, d, err)
		}
		l.Release()
	}
}

func TestValidate(t *testing.T) {
	bad := []func(*Plan){
		func(p *Plan) { p.Country = "XX" },
		func(p *Plan) { p.Extensions = append(p.Extensions, Extension{Number: "100"}) },
		func(p *Plan) { p.Extensions[0].Number = "+100" },
		func(p *Plan) { p.Extensions[0].Classes = []Class{"everything"} },
		func(p *Plan) { p.Routes[0].Trunk = "ghost" },
		func(p *Plan) { p.Routes[1].Strip = 5 },
		func(p *Plan) { p.DIDs[0].Extension = "555" },
		func(p *Plan) { p.Emergency = []string{"11 2"} },
		func(p *Plan) { p.Trunks[0].Limits.MaxPerHour = -1 },
	}
	for i, f := range bad {
		p := testPlan()
		f(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("case %d: bad plan accepted", i)
		}
	}
	if err := testPlan().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, out string }{
		{"+49 (30) 123-456.7", "+49301234567"},
		{"*21#", "*21#"},
		{"112", "112"},
		{"", ""},
		{"+", ""},
		{"1+2", ""},
		{"+49*1", ""},
		{"12a", ""},
		{"١٢", "12"}, // Unicode digits are mapped to ASCII (see Normalize)
		{strings.Repeat("1", MaxDigits+1), ""},
	}
	for _, tc := range tests {
		got, err := Normalize(tc.in)
		if got != tc.out || (tc.out == "") != (err != nil) {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.out)
		}
	}
}

func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"+49 (30) 123", "*21#", "00442079460000", "112"} {
		f.Add(s)
	}
	e, err := New(testPlan(), degradedGate{degraded: true}, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := Normalize(s)
		if err != nil {
			return
		}
		if len(n) == 0 || len(n) > MaxDigits || strings.Trim(n, "+0123456789*#") != "" || (strings.LastIndex(n, "+") > 0 && (n[0] == '+' || n[strings.LastIndex(n, "+")-1] != '#' || strings.Trim(n[:1], "*#") != "")) {
			t.Fatalf("Normalize(%q) = %q", s, n)
		}
		if again, err := Normalize(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q → %q", n, again)
		}
		// Whatever is dialled, a default-class extension never gets an
		// international or premium call out, and nothing but an emergency
		// number passes the degraded licence.
		d, l, err := e.RouteOutbound("100", s)
		l.Release()
		if err == nil && (d.Class == International || d.Class == Premium || (d.Kind == KindOutbound)) {
			t.Fatalf("%q went out as %+v", s, d)
		}
	})
}
