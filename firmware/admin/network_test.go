package admin

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/init/netconf/netspec"
)

// memNetApply records the networks the real committer applies.
type memNetApply struct {
	mu      sync.Mutex
	applied []netspec.Network
}

func (m *memNetApply) ApplyNetwork(_ context.Context, n netspec.Network, _ []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applied = append(m.applied, n)
	return nil
}

func (m *memNetApply) count() int { m.mu.Lock(); defer m.mu.Unlock(); return len(m.applied) }

func bootNetwork() netspec.Network {
	return netspec.Network{Hostname: "box", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeDHCP}}}
}

func (p *pid1Recorder) GetNetwork(ctx context.Context) (netspec.State, error) {
	return p.policy.GetNetwork(ctx)
}

func (p *pid1Recorder) SetNetwork(ctx context.Context, n netspec.Network) (netspec.Pending, error) {
	return p.policy.SetNetwork(ctx, n)
}

func (p *pid1Recorder) ConfirmNetwork(ctx context.Context, id string) error {
	return p.policy.ConfirmNetwork(ctx, id)
}

func (p *pid1Recorder) GetTime(ctx context.Context) (netspec.TimeState, error) {
	return p.policy.GetTime(ctx)
}

func (p *pid1Recorder) SetTime(ctx context.Context, t netspec.Time) error {
	return p.policy.SetTime(ctx, t)
}

func staticNetwork() NetworkRequest {
	return NetworkRequest{Hostname: "pbx-office", Interfaces: []netspec.Interface{{Name: "eth0", Mode: netspec.ModeStatic,
		Addresses: []netip.Prefix{netip.MustParsePrefix("192.0.2.10/24"), netip.MustParsePrefix("2001:db8::10/64")},
		Gateway4:  netip.MustParseAddr("192.0.2.1")}},
		VLANs: []netspec.VLAN{{ID: 20, Parent: "eth0", Mode: netspec.ModeStatic, Addresses: []netip.Prefix{netip.MustParsePrefix("10.20.0.1/24")}}},
		DNS:   []netip.Addr{netip.MustParseAddr("192.0.2.53")}}
}

func TestNetworkChangeAndConfirm(t *testing.T) {
	e, admin := claimed(t)
	v := admin.must(200, "GET", "/api/v1/system/network", nil)
	var st NetworkView
	if err := json.Unmarshal(v.body, &st); err != nil || st.Pending != nil || st.Confirmed.Hostname != "box" || len(st.NICs) != 2 {
		t.Fatalf("initial %s (%v)", v.body, err)
	}
	// Refusals name the field as a JSON pointer, are audited, apply nothing.
	for _, tt := range []struct {
		edit  func(*NetworkRequest)
		field string
	}{
		{func(n *NetworkRequest) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("198.51.100.1") }, "/interfaces/0/gateway4"},
		{func(n *NetworkRequest) { n.Interfaces[0].Addresses[0] = netip.MustParsePrefix("127.0.0.9/8") }, "/interfaces/0/addresses/0"},
		{func(n *NetworkRequest) { n.VLANs[0].ID = 5000 }, "/vlans/0/id"},
		{func(n *NetworkRequest) { n.Hostname = "has space" }, "/hostname"},
		{func(n *NetworkRequest) { n.Interfaces[0].Name = "eth9" }, "/interfaces/0/name"},
	} {
		n := staticNetwork()
		tt.edit(&n)
		r := admin.must(422, "PUT", "/api/v1/system/network", n)
		if r.str("field") != tt.field {
			t.Errorf("field %q, want %q (%s)", r.str("field"), tt.field, r.body)
		}
	}
	if a := e.lastAudit("system.network.set"); a.Outcome != audit.Failed {
		t.Fatalf("refusal audit %+v", a)
	}
	if r := admin.must(400, "PUT", "/api/v1/system/network", `{"hostname":"x","interfaces":[],"Hostname":"y"}`); r.str("field") == "" {
		t.Fatalf("strict decoding: %s", r.body)
	}
	if e.pid1.netApp.count() != 0 {
		t.Fatal("refused network applied")
	}

	oldConn := e.srv.ConnContext(context.Background(), nil)
	r := admin.must(202, "PUT", "/api/v1/system/network", staticNetwork())
	if r.hdr.Get("Connection") != "close" {
		t.Fatal("the change's answer must close its connection")
	}
	id := r.str("id")
	if !netspec.ValidPendingID(id) || e.pid1.netApp.count() != 1 {
		t.Fatalf("pending %s, applies %d", r.body, e.pid1.netApp.count())
	}
	set := e.lastAudit("system.network.set")
	if set.Outcome != audit.OK || set.Target != id || !strings.Contains(string(set.After), "192.0.2.10/24") {
		t.Fatalf("change audit %+v", set)
	}
	// Confirmations that prove nothing are refused (fails closed).
	admin.must(409, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: id})
	admin.conn = oldConn
	if r := admin.must(409, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: id}); !strings.Contains(r.str("detail"), "new connection") {
		t.Fatalf("stale connection: %s", r.body)
	}
	admin.conn = e.srv.ConnContext(context.Background(), nil)
	admin.must(400, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: "nope"})
	admin.must(409, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: strings.Repeat("ab", 16)})
	admin.must(200, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: id})
	if c := e.lastAudit("system.network.confirm"); c.Outcome != audit.OK || c.Target != id {
		t.Fatalf("confirm audit %+v", c)
	}
	v = admin.must(200, "GET", "/api/v1/system/network", nil)
	st = NetworkView{}
	json.Unmarshal(v.body, &st)
	if st.Pending != nil || st.Confirmed.Hostname != "pbx-office" || len(st.Confirmed.VLANs) != 1 {
		t.Fatalf("after confirm %s", v.body)
	}
	admin.must(409, "POST", "/api/v1/system/network/confirm", ConfirmRequest{ID: id})
	page := admin.must(200, "GET", "/system", nil)
	for _, want := range []string{"Network", "192.0.2.10/24", "pbx-office"} {
		if !strings.Contains(string(page.body), want) {
			t.Errorf("system page lacks %q", want)
		}
	}
}

func TestTimeSettings(t *testing.T) {
	e, admin := claimed(t)
	v := admin.must(200, "GET", "/api/v1/system/time", nil)
	var tv TimeView
	if err := json.Unmarshal(v.body, &tv); err != nil || tv.Config.TimeZone != "UTC" || tv.NowUTC == "" {
		t.Fatalf("initial %s", v.body)
	}
	for _, tt := range []struct {
		body  TimeRequest
		field string
	}{
		{TimeRequest{TimeZone: "Mars/Base"}, "/time_zone"},
		{TimeRequest{TimeZone: "../../../etc/shadow"}, "/time_zone"},
		{TimeRequest{NTP: []string{"ntp_bad"}, TimeZone: "UTC"}, "/ntp/0"},
		{TimeRequest{NTP: []string{"a.org", "b.org", "c.org", "d.org", "e.org"}, TimeZone: "UTC"}, "/ntp"},
	} {
		if r := admin.must(422, "PUT", "/api/v1/system/time", tt.body); r.str("field") != tt.field {
			t.Errorf("%+v: field %q, want %q", tt.body, r.str("field"), tt.field)
		}
	}
	admin.must(200, "PUT", "/api/v1/system/time", TimeRequest{NTP: []string{"pool.ntp.org"}, TimeZone: "Europe/Berlin"})
	if a := e.lastAudit("system.time.set"); a.Outcome != audit.OK || !strings.Contains(string(a.After), "Europe/Berlin") || !strings.Contains(string(a.Before), "UTC") {
		t.Fatalf("audit %+v", a)
	}
	v = admin.must(200, "GET", "/api/v1/system/time", nil)
	tv = TimeView{}
	json.Unmarshal(v.body, &tv)
	// The env's clock is 2026-05-04 10:00 UTC: 12:00 in Berlin (CEST).
	if tv.Config.TimeZone != "Europe/Berlin" || tv.Now != "2026-05-04T12:00:00+02:00" || tv.NowUTC != "2026-05-04T10:00:00Z" {
		t.Fatalf("after set %s", v.body)
	}
	// The System page shows the box's time in its zone, UTC on hover.
	page := string(admin.must(200, "GET", "/system", nil).body)
	if !strings.Contains(page, `title="2026-05-04 10:00:00 UTC"`) || !strings.Contains(page, "2026-05-04 12:00:00 CEST") {
		t.Errorf("system page time: %s", page)
	}
}

// After a network change the admin opens the page at the box's new
// address, which was not among the names computed at start: a state change
// from that origin is accepted when the connection really arrived on that
// address, and refused otherwise.
func TestOriginOfNewAddress(t *testing.T) {
	e, admin := claimed(t)
	onAddr := func(a string) context.Context {
		ctx := e.srv.ConnContext(context.Background(), nil)
		return context.WithValue(ctx, http.LocalAddrContextKey, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(a)))
	}
	body := TimeRequest{NTP: []string{}, TimeZone: "UTC"}
	admin.origin = "https://192.0.2.77"
	admin.conn = onAddr("192.0.2.77:443")
	admin.must(200, "PUT", "/api/v1/system/time", body)
	admin.conn = onAddr("[::ffff:192.0.2.77]:443")
	admin.must(200, "PUT", "/api/v1/system/time", body)
	// Another address of the box, or a name (DNS rebinding): refused.
	admin.conn = onAddr("192.0.2.78:443")
	admin.must(403, "PUT", "/api/v1/system/time", body)
	admin.origin = "https://rebind.example"
	admin.conn = onAddr("192.0.2.77:443")
	admin.must(403, "PUT", "/api/v1/system/time", body)
	admin.origin, admin.conn = "https://192.0.2.77", nil
	admin.must(403, "PUT", "/api/v1/system/time", body)
}
