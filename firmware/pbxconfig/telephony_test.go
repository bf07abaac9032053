package pbxconfig

import (
	"errors"
	"github.com/edgepbx/edgepbx/firmware/features"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// goodTelephony has one trunk of each kind, routes, a DID and classes.
func goodTelephony() Telephony {
	t := DefaultTelephony()
	t.Trunks = []TelephonyTrunk{
		{Name: "itsp", Host: "sip.example.net:5060", Transport: "udp", Auth: TrunkAuthRegister, Username: "u1", Domain: "sip.example.net", Password: "s3cret-trunk"},
		{Name: "carrier", Host: "192.0.2.7:5061", Transport: "tls", Auth: TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}},
	}
	t.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}, {Prefix: "+", Trunk: "carrier"}}
	t.Extensions = []dialplan.Extension{{Number: "1001", Classes: []dialplan.Class{dialplan.Internal}}}
	t.DIDs = []dialplan.DID{{Number: "4930123456", Extension: "1001"}}
	return t
}

func TestDefaultTelephonyValid(t *testing.T) {
	if err := DefaultTelephony().Validate(nil); err != nil {
		t.Fatal(err)
	}
	if err := goodTelephony().Validate(nil); err != nil {
		t.Fatal(err)
	}
	if d := DefaultTelephony().DefaultClasses; slices.Contains(d, dialplan.International) || slices.Contains(d, dialplan.Premium) {
		t.Fatalf("default classes %v allow international or premium", d)
	}
}

func TestTelephonyValidateRejects(t *testing.T) {
	tests := []struct {
		name, want string
		mod        func(*Telephony)
	}{
		{"unknown country", "country", func(c *Telephony) { c.Country = "XX" }},
		{"no default class", "default_classes", func(c *Telephony) { c.DefaultClasses = nil }},
		{"bad default class", "default class", func(c *Telephony) { c.DefaultClasses = []dialplan.Class{"gold"} }},
		{"route prefix letters", "route prefix", func(c *Telephony) { c.Routes[0].Prefix = "0a" }},
		{"route prefix star", "route prefix", func(c *Telephony) { c.Routes[0].Prefix = "*9" }},
		{"route prefix plus inside", "route prefix", func(c *Telephony) { c.Routes[0].Prefix = "+49" }},
		{"route unknown trunk", "unknown trunk", func(c *Telephony) { c.Routes[0].Trunk = "nope" }},
		{"premium prefix letters", "premium prefix", func(c *Telephony) { c.PremiumPrefixes = []string{"09x"} }},
		{"DID unknown extension", "unknown extension", func(c *Telephony) { c.DIDs[0].Extension = "2002" }},
		{"DID bad number", "DID", func(c *Telephony) { c.DIDs[0].Number = "49-30;x" }},
		{"duplicate trunk", "listed twice", func(c *Telephony) { c.Trunks = append(c.Trunks, c.Trunks[1]) }},
		{"trunk name", "trunk name", func(c *Telephony) { c.Trunks[1].Name = "a b" }},
		{"trunk host no port", "host", func(c *Telephony) { c.Trunks[1].Host = "192.0.2.7" }},
		{"trunk port", "port", func(c *Telephony) { c.Trunks[1].Host = "192.0.2.7:70000" }},
		{"trunk transport", "transport", func(c *Telephony) { c.Trunks[1].Transport = "sctp" }},
		{"trunk auth", "auth", func(c *Telephony) { c.Trunks[1].Auth = "none" }},
		{"ip auth without peers", "peer", func(c *Telephony) { c.Trunks[1].Peers = nil }},
		{"register without password", "password", func(c *Telephony) { c.Trunks[0].Password = "" }},
		{"register without username", "username", func(c *Telephony) { c.Trunks[0].Username = "" }},
		{"password control char", "password", func(c *Telephony) { c.Trunks[0].Password = "a\nb" }},
		{"extension class", "class", func(c *Telephony) { c.Extensions[0].Classes = []dialplan.Class{"vip"} }},
		{"extension limits", "limits", func(c *Telephony) { c.Extensions[0].Limits.MaxPerHour = -1 }},
		// Emergency numbers can never be blocked.
		{"premium covers 112", "emergency number 112", func(c *Telephony) { c.PremiumPrefixes = []string{"11"} }},
		{"premium covers added", "emergency number 19222", func(c *Telephony) {
			c.Emergency = []string{"19222"}
			c.PremiumPrefixes = []string{"192"}
		}},
		{"extension is 110", "emergency number", func(c *Telephony) { c.Extensions[0].Number, c.DIDs = "110", nil }},
		{"park slot is 112", "park slot 112 is an emergency number", func(c *Telephony) { c.Features.Park = features.ParkSlots{First: "111", Count: 2} }},
		{"emergency unrouted", "no route", func(c *Telephony) { c.Routes = c.Routes[1:] }},
		{"emergency trunk unknown", "emergency trunk", func(c *Telephony) { c.EmergencyTrunk = "nope" }},
		{"emergency letters", "emergency number", func(c *Telephony) { c.Emergency = []string{"11x"} }},
		{"caller ID letters", "caller ID", func(c *Telephony) { c.CallerIDs = map[string]string{"2001": "+49x"} }},
		{"caller ID header injection", "caller ID", func(c *Telephony) { c.CallerIDs = map[string]string{"2001": "1>\r\nX: y"} }},
		{"caller ID extension", "caller ID", func(c *Telephony) { c.CallerIDs = map[string]string{"a;b": "+4930123"} }},
		{"unsolicited MWI extension", "unsolicited MWI", func(c *Telephony) { c.UnsolicitedMWI = []string{"1>\r\nX: y"} }},
		{"unsolicited MWI twice", "unsolicited MWI", func(c *Telephony) { c.UnsolicitedMWI = []string{"2001", "2001"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodTelephony()
			tt.mod(&c)
			err := c.Validate(nil)
			if err == nil {
				t.Fatal("Validate accepted an invalid configuration")
			}
			if !errors.Is(err, ErrTelephony) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q: want ErrTelephony mentioning %q", err, tt.want)
			}
		})
	}
}

func TestTelephonyValidateKnownExtensions(t *testing.T) {
	c := goodTelephony()
	c.DIDs = append(c.DIDs, dialplan.DID{Number: "4930123457", Extension: "2002"})
	if err := c.Validate(nil); err == nil {
		t.Fatal("DID to an extension nobody knows accepted")
	}
	if err := c.Validate(func(n string) bool { return n == "2002" }); err != nil {
		t.Fatalf("DID to an existing SIP extension refused: %v", err)
	}
	// Unrouted emergency numbers are fine while there are no trunks at all.
	c = DefaultTelephony()
	c.Emergency = []string{"19222"}
	if err := c.Validate(nil); err != nil {
		t.Fatal(err)
	}
	c.EmergencyTrunk = "x"
	if err := c.Validate(nil); err == nil {
		t.Fatal("emergency trunk without trunks accepted")
	}
}

func TestTelephonyPlan(t *testing.T) {
	c := goodTelephony()
	p := c.Plan([]string{"1001", "1002"})
	if len(p.Extensions) != 2 || !slices.Equal(p.Extensions[0].Classes, []dialplan.Class{dialplan.Internal}) ||
		!slices.Equal(p.Extensions[1].Classes, c.DefaultClasses) {
		t.Fatalf("extensions %+v", p.Extensions)
	}
	if len(p.Trunks) != 2 || len(p.DIDs) != 1 {
		t.Fatalf("plan %+v", p)
	}
	// 1001 deleted since: its DID is left out, the plan still builds.
	p = c.Plan([]string{"1002"})
	if len(p.DIDs) != 0 {
		t.Fatalf("DID for a deleted extension kept: %+v", p.DIDs)
	}
	e, err := dialplan.New(c.Plan([]string{"1001", "1002"}), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.RouteOutbound("1001", "0044201234567"); !errors.Is(err, dialplan.ErrBlocked) {
		t.Fatalf("international from class internal: %v", err)
	}
	if d, _, err := e.RouteOutbound("1001", "112"); err != nil || d.Kind != dialplan.KindEmergency || d.Trunk != "itsp" {
		t.Fatalf("112: %+v %v", d, err)
	}
}

func openTestDB(t *testing.T) *store.DB {
	t.Helper()
	db := storetest.Open(t, nil)
	return db
}

func TestTelephonyStoreVersions(t *testing.T) {
	db := openTestDB(t)
	s, err := LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != 0 || s.Current().Country != "DE" {
		t.Fatalf("initial %+v", s.Current())
	}
	saved, err := s.Save(goodTelephony(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Version != 1 || s.Version() != 1 {
		t.Fatalf("version after save: %d/%d", saved.Version, s.Version())
	}
	tr, _ := saved.Trunk("itsp")
	if tr.Password != "" || !tr.PasswordSet {
		t.Fatalf("password kept in the config: %+v", tr)
	}
	if pw, err := s.TrunkPassword("itsp"); err != nil || string(pw) != "s3cret-trunk" {
		t.Fatalf("sealed password %q %v", pw, err)
	}
	var raw []byte
	db.View(func(tx *store.Tx) error {
		tx.ForEach(TelephonyBucket, func(k string, v []byte) error { raw = append(raw, v...); return nil })
		return nil
	})
	if strings.Contains(string(raw), "s3cret-trunk") {
		t.Fatal("trunk password stored in clear")
	}

	// Failed saves change nothing, in memory or in the store.
	before := s.Current()
	stale := goodTelephony() // version 0: stale
	if _, err := s.Save(stale, nil); !errors.Is(err, ErrVersion) {
		t.Fatalf("stale save: %v", err)
	}
	invalid := s.Current()
	invalid.PremiumPrefixes = []string{"11"}
	invalid.Trunks[0].Password = "other-password"
	if _, err := s.Save(invalid, nil); !errors.Is(err, ErrTelephony) {
		t.Fatalf("invalid save: %v", err)
	}
	if s.Version() != 1 || !slices.Equal(s.Current().PremiumPrefixes, before.PremiumPrefixes) {
		t.Fatalf("failed save changed the config: %+v", s.Current())
	}
	if pw, _ := s.TrunkPassword("itsp"); string(pw) != "s3cret-trunk" {
		t.Fatalf("failed save changed the password: %q", pw)
	}
	s2, err := LoadTelephony(db)
	if err != nil || s2.Version() != 1 || len(s2.Current().Trunks) != 2 {
		t.Fatalf("reload: %+v %v", s2.Current(), err)
	}

	// An edit without a password keeps the stored one; the next version.
	next := s.Current()
	next.Extensions[0].Classes = []dialplan.Class{dialplan.Internal, dialplan.National, dialplan.International}
	if saved, err = s.Save(next, nil); err != nil || saved.Version != 2 {
		t.Fatalf("second save: %d %v", saved.Version, err)
	}
	if pw, _ := s.TrunkPassword("itsp"); string(pw) != "s3cret-trunk" {
		t.Fatalf("password lost: %q", pw)
	}
	// Switching the trunk to IP authentication erases its password.
	next = s.Current()
	next.Trunks[0].Auth, next.Trunks[0].Username, next.Trunks[0].Domain = TrunkAuthIP, "", ""
	next.Trunks[0].Peers = []netip.Prefix{netip.MustParsePrefix("198.51.100.1/32")}
	if _, err := s.Save(next, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TrunkPassword("itsp"); err == nil {
		t.Fatal("password of a trunk that no longer registers kept")
	}
	// A renamed registering trunk needs its password again.
	next = s.Current()
	next.Trunks[0] = TelephonyTrunk{Name: "itsp2", Host: "sip.example.net:5060", Transport: "udp", Auth: TrunkAuthRegister, Username: "u", Domain: "d"}
	next.Routes[0].Trunk = "itsp2"
	if _, err := s.Save(next, nil); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("registering trunk without a password: %v", err)
	}
	// The caller's copy cannot change the stored value.
	cur := s.Current()
	cur.Trunks[0].Name = "mutated"
	if s.Current().Trunks[0].Name == "mutated" {
		t.Fatal("Current shares memory with the store")
	}
}
