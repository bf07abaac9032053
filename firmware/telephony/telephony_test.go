package telephony

import (
	"errors"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// edge is a SIP edge bound to loopback (not serving) whose own
// configuration knows the trunk "edge-only"; extensions get SRTP required
// from its policy.
func edge(t *testing.T, db *store.DB) *sipedge.Server {
	t.Helper()
	sec, err := logs.New(db, 100)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pbxconfig.DefaultSIP()
	cfg.UDP, cfg.TCP, cfg.TLS, cfg.WSS = "127.0.0.1:0", "127.0.0.1:0", "", ""
	cfg.Domains = []string{"box.example"}
	cfg.Trunks = []pbxconfig.Trunk{{Name: "edge-only", Peers: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}}}
	s, err := sipedge.New(cfg, sipedge.Deps{Store: db, Security: sec, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func saveTelephony(t *testing.T, tel *pbxconfig.TelephonyStore, mod func(*pbxconfig.Telephony)) {
	t.Helper()
	next := tel.Current()
	mod(&next)
	if _, err := tel.Save(next, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
}

// TestPlanRebuildsOnChange: the engine is built once and reused while
// neither the configuration nor the extensions change; a new extension or a
// saved configuration gives a rebuilt engine that knows it.
func TestPlanRebuildsOnChange(t *testing.T) {
	db := storetest.Open(t, nil)
	exts, err := sipedge.LoadExtensions(db, "box.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"1001", "1002", "alice"} {
		if err := exts.Set(u, "a-long-password-"+u); err != nil {
			t.Fatal(err)
		}
	}
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	p := NewPlan(exts, tel, nil, nil)
	e1, err := p.Engine()
	if err != nil {
		t.Fatal(err)
	}
	if e2, _ := p.Engine(); e2 != e1 {
		t.Fatal("engine rebuilt without a change")
	}
	if _, _, err := p.RouteOutbound("1003", "1001"); !errors.Is(err, dialplan.ErrUnknownExtension) {
		t.Fatalf("call from an extension that does not exist: %v", err)
	}
	if err := exts.Set("1003", "a-long-password-1003"); err != nil {
		t.Fatal(err)
	}
	e3, err := p.Engine()
	if err != nil || e3 == e1 {
		t.Fatalf("new extension: engine rebuilt %v, err %v", e3 != e1, err)
	}
	d, lease, err := p.RouteOutbound("1003", "1001")
	if err != nil || d.Kind != dialplan.KindInternal || d.Target != "1001" {
		t.Fatalf("call from the new extension: %+v %v", d, err)
	}
	lease.Release()
	saveTelephony(t, tel, func(c *pbxconfig.Telephony) { c.BurstAttempts = 7 })
	if e4, _ := p.Engine(); e4 == e3 {
		t.Fatal("saved configuration: engine not rebuilt")
	}
}

// TestDirectory: stored trunks come first (target, SRTP policy,
// credentials, caller ID); extensions and trunks only the edge knows are
// the edge's answers.
func TestDirectory(t *testing.T) {
	db := storetest.Open(t, nil)
	s := edge(t, db)
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	saveTelephony(t, tel, func(c *pbxconfig.Telephony) {
		c.Trunks = []pbxconfig.TelephonyTrunk{
			{Name: "req", Host: "itsp.example:5061", Transport: "tls", Auth: pbxconfig.TrunkAuthRegister, Username: "box1", Domain: "itsp.example", Password: "trunk-secret-1", SRTP: "required", CallerID: "+4930111", AssertIdentity: true},
			{Name: "off", Host: "192.0.2.1:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}, SRTP: "off"},
			{Name: "opt", Host: "192.0.2.2:5070", Transport: "tcp", Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}, CallerID: "+4930222"},
		}
		c.EmergencyTrunk = "opt"
		c.CallerIDs = map[string]string{"1001": "+4930999"}
	})
	d := NewDirectory(s.Directory(func(call.Identity) media.Policy { return media.SRTPRequired }), tel)

	if tg, ok := d.Trunk("req"); !ok || tg.Dest != "itsp.example:5061" || tg.Transport != "tls" || tg.URI.Host != "itsp.example" || tg.URI.Port != 5061 {
		t.Fatalf("stored trunk target %+v %v", tg, ok)
	}
	if tg, ok := d.Trunk("edge-only"); !ok || tg.Dest != "198.51.100.7:5060" {
		t.Fatalf("edge trunk target %+v %v", tg, ok)
	}
	if _, ok := d.Trunk("nowhere"); ok {
		t.Fatal("unknown trunk resolved")
	}

	for _, c := range []struct {
		id   call.Identity
		want media.Policy
	}{
		{call.Identity{Trunk: "req"}, media.SRTPRequired},
		{call.Identity{Trunk: "off"}, media.SRTPOff},
		{call.Identity{Trunk: "opt"}, media.SRTPOptional},
		{call.Identity{Trunk: "edge-only"}, media.SRTPRequired}, // the edge's policy
		{call.Identity{Extension: "1001"}, media.SRTPRequired},  // the edge's policy
	} {
		if got := d.Policy(c.id); got != c.want {
			t.Errorf("Policy(%+v) = %v, want %v", c.id, got, c.want)
		}
	}

	for _, c := range []struct {
		ext, trunk string
		number     string
		assert     bool
	}{
		{"1001", "req", "+4930999", true},  // the extension's own number, trusted trunk
		{"1001", "opt", "+4930999", false}, // own number, PAI not trusted
		{"1001", "gone", "+4930999", false},
		{"1002", "req", "+4930111", true}, // the trunk's number
		{"1002", "opt", "+4930222", false},
		{"1002", "off", "", false}, // the extension number
		{"1002", "gone", "", false},
	} {
		if n, a := d.OutboundCallerID(c.ext, c.trunk); n != c.number || a != c.assert {
			t.Errorf("OutboundCallerID(%s, %s) = %q %v, want %q %v", c.ext, c.trunk, n, a, c.number, c.assert)
		}
	}

	if u, pw, ok := d.Credentials("req"); !ok || u != "box1" || pw != "trunk-secret-1" {
		t.Fatalf("stored trunk credentials %q %q %v", u, pw, ok)
	}
	if _, _, ok := d.Credentials("off"); ok {
		t.Fatal("credentials for a trunk without a username")
	}
}

// TestTrunkStatesBeforeRun: every stored trunk is listed; IP trunks are
// identified by address, registering ones are registering until Run has
// their state.
func TestTrunkStatesBeforeRun(t *testing.T) {
	db := storetest.Open(t, nil)
	s := edge(t, db)
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	saveTelephony(t, tel, func(c *pbxconfig.Telephony) {
		c.Trunks = []pbxconfig.TelephonyTrunk{
			{Name: "reg", Host: "itsp.example:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthRegister, Username: "box1", Domain: "itsp.example", Password: "trunk-secret-1"},
			{Name: "ip", Host: "192.0.2.1:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/28")}},
		}
		c.EmergencyTrunk = "ip"
	})
	m := NewTrunks(tel, s, slog.New(slog.DiscardHandler))
	st := m.States()
	if len(st) != 2 || st[0].Name != "reg" || st[0].State != sipedge.RegRegistering || st[0].Registrar != "itsp.example:5060" ||
		st[1].State != StateIP || len(st[1].Peers) != 1 || st[1].Peers[0] != "192.0.2.0/28" {
		t.Fatalf("states %+v", st)
	}
	// A save through the admin view asks Run to apply it.
	store := m.Store()
	next := store.Current()
	next.Trunks = next.Trunks[1:] // the emergency trunk stays
	if _, err := store.Save(next, func(string) bool { return true }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.kick:
	default:
		t.Fatal("a save did not ask for the trunks to be applied")
	}
	if len(m.States()) != 1 {
		t.Fatalf("states after the save %+v", m.States())
	}
}
