package pbxconfig

import (
	"errors"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
)

// TestTelephonyFeatures: ring groups are validated with the configuration;
// a DID may name a group number, a group may not take an extension's.
func TestTelephonyFeatures(t *testing.T) {
	known := func(n string) bool { return n == "201" || n == "202" }
	base := func() Telephony {
		t := DefaultTelephony()
		t.Features.Groups = []features.RingGroup{{Number: "600", Strategy: features.RingAll,
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}}}}
		return t
	}
	c := base()
	c.Trunks = []TelephonyTrunk{{Name: "itsp", Host: "192.0.2.1:5060", Transport: "udp", Auth: TrunkAuthRegister, Username: "u", Domain: "d", Password: "p"}}
	c.EmergencyTrunk = "itsp"
	c.DIDs = []dialplan.DID{{Number: "4930123", Extension: "600"}}
	if err := c.Validate(known); err != nil {
		t.Fatalf("DID to a ring group: %v", err)
	}
	c = base()
	c.Features.Groups[0].Number = "201"
	if err := c.Validate(known); !errors.Is(err, ErrTelephony) || !errors.Is(err, features.ErrConfig) {
		t.Fatalf("group with an extension's number: %v", err)
	}
	c = base()
	c.Features.Groups[0].Number = "112"
	if err := c.Validate(known); !errors.Is(err, ErrTelephony) {
		t.Fatalf("group with an emergency number: %v", err)
	}
	c = base()
	c.Features.PickupGroups = []features.PickupGroup{{Name: "sales", Members: []string{"201", "999"}}}
	if err := c.Validate(known); !errors.Is(err, ErrTelephony) {
		t.Fatalf("pickup group with an unknown extension: %v", err)
	}
	// The plan routes the group number as an internal destination.
	p := base().Plan([]string{"201", "202", "600"})
	e, err := dialplan.New(p, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d, lease, err := e.RouteOutbound("201", "600"); err != nil || d.Kind != dialplan.KindInternal {
		t.Fatalf("201 dials 600: %+v %v", d, err)
	} else {
		lease.Release()
	}
	// Clone is deep: editing a copy leaves the original.
	o := base()
	cp := o.clone()
	cp.Features.Groups[0].Members[0].Extension = "202"
	if o.Features.Groups[0].Members[0].Extension != "201" {
		t.Fatal("clone shares the ring group members")
	}
}
