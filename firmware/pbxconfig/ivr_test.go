package pbxconfig

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/ivr"
)

// TestTelephonyIVR: menus and time conditions are validated with the
// configuration; DIDs may name them; an external destination is checked
// against the class of service of the extension it is charged to, like
// a forward; the dial plan routes their numbers.
func TestTelephonyIVR(t *testing.T) {
	known := func(n string) bool { return n == "201" || n == "202" }
	base := func() Telephony {
		t := DefaultTelephony()
		t.Trunks = []TelephonyTrunk{{Name: "itsp", Host: "192.0.2.1:5060", Transport: "udp", Auth: TrunkAuthIP,
			Peers: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}}}
		t.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
		t.Extensions = []dialplan.Extension{{Number: "202", Classes: []dialplan.Class{dialplan.Internal}}}
		t.Features.Groups = []features.RingGroup{{Number: "600", Strategy: features.RingAll,
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}}}}
		t.IVR = ivr.Config{
			TimeConditions: []ivr.TimeCondition{{Number: "700", Hours: []ivr.Hours{{Days: []string{"mon"}, From: "08:00", To: "17:00"}},
				Open: "800", Closed: "voicemail/201"}},
			Menus: []ivr.Menu{{Number: "800", Options: []ivr.Option{{Key: "1", Dest: "201"}, {Key: "2", Dest: "600"},
				{Key: "3", Dest: "external/201/030123456"}}}},
		}
		t.DIDs = []dialplan.DID{{Number: "4930999000", Extension: "700"}, {Number: "4930999001", Extension: "800"}}
		return t
	}
	if err := base().Validate(known); err != nil {
		t.Fatalf("valid configuration refused: %v", err)
	}
	for _, k := range []struct {
		name  string
		dest  string
		field string
	}{
		{"premium", "external/201/09001234567", "/menus/0/options/2/dest"},
		{"emergency", "external/201/112", "/menus/0/options/2/dest"},
		{"internal-only class", "external/202/030123456", "/menus/0/options/2/dest"},
		{"internal number as external", "external/201/202", "/menus/0/options/2/dest"},
		{"not a destination", "9999", "/menus/0/options/2/dest"},
	} {
		c := base()
		c.IVR.Menus[0].Options[2].Dest = k.dest
		err := c.Validate(known)
		fe, ok := errors.AsType[*ivr.FieldError](err)
		if !errors.Is(err, ErrTelephony) || !ok || fe.Field != k.field {
			t.Errorf("%s: %v, want a refusal of %s", k.name, err, k.field)
		}
	}
	c := base()
	c.IVR.Menus[0].Number = "600"
	if err := c.Validate(known); !errors.Is(err, ivr.ErrConfig) {
		t.Errorf("menu with a ring group's number: %v", err)
	}
	// The dial plan routes the numbers (a DID to a menu is admitted).
	p := base().Plan([]string{"201", "202", "600", "700", "800"})
	eng, err := dialplan.New(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	d, lease, err := eng.RouteInbound("itsp", "4930999001")
	if err != nil || d.Target != "800" {
		t.Fatalf("DID to menu: %+v %v", d, err)
	}
	lease.Release()
	// The clone does not share the menus.
	o := base()
	cp := o.clone()
	cp.IVR.Menus[0].Options[0].Dest = "202"
	if o.IVR.Menus[0].Options[0].Dest != "201" {
		t.Error("clone shares the menus")
	}
}
