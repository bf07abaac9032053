package features

import (
	"testing"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestPickupTargets: a pickup code names exactly the extensions the picker
// may see; one it may not see is left out (the B2BUA then answers as for
// nothing ringing, so a refusal tells nothing).
func TestPickupTargets(t *testing.T) {
	conf := Config{PickupGroups: []PickupGroup{
		{Name: "sales", Members: []string{"202", "201"}},
		{Name: "desk", Members: []string{"203", "201"}},
	}}
	users, err := LoadStore(storetest.Open(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dialplan.New(dialplan.Plan{Country: "DE", Extensions: []dialplan.Extension{{Number: "201"}, {Number: "202"}, {Number: "203"}, {Number: "204"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := New(plan, func() Config { return conf }, users, nil)
	for _, tc := range []struct{ from, dialled, want string }{
		{"201", "*8", "201,202,203"}, // member of both groups
		{"202", "*8", "201,202"},
		{"204", "*8", "204"}, // no group: itself only
		{"202", "**201", "201"},
		{"202", "**203", ""}, // other group
		{"204", "**201", ""},
		{"202", "**202", "202"}, // itself (another of its phones rings)
	} {
		d, lease, err := e.RouteOutbound(tc.from, tc.dialled)
		if err != nil {
			t.Fatalf("%s dials %s: %v", tc.from, tc.dialled, err)
		}
		lease.Release()
		if d.Kind != dialplan.KindApp || d.Target != call.PickupApp+tc.want {
			t.Errorf("%s dials %s: %s %q, want app %q", tc.from, tc.dialled, d.Kind, d.Target, call.PickupApp+tc.want)
		}
	}
}
