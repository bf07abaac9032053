package admin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/provision"
)

// TestPhonesAPI drives the Phones API as the page does: add, see the
// enrolment card and its QR, assign, reprovision, revoke; refusals name
// the field; readers cannot change or see one-time URLs.
func TestPhonesAPI(t *testing.T) {
	e, admin := claimed(t)
	admin.must(409, "GET", "/api/v1/phones", nil) // not running on this box
	ps, err := provision.New(provision.Deps{Store: e.db, Audit: e.srv.audit, Extensions: e.exts, Host: "box.example", Clock: e.clock.Now,
		DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	e.srv.phones = ps
	admin.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "201"})

	r := admin.must(422, "POST", "/api/v1/phones", provision.AddRequest{MAC: "80:5e:c0:11:22", Vendor: provision.Yealink})
	if r.str("field") != "mac" {
		t.Fatalf("field %q", r.str("field"))
	}
	if r := admin.must(422, "POST", "/api/v1/phones", provision.AddRequest{MAC: "805ec0112233", Vendor: provision.Yealink, Extensions: []string{"999"}}); r.str("field") != "extensions" {
		t.Fatalf("field %q", r.str("field"))
	}
	admin.must(400, "POST", "/api/v1/phones", `{"mac":"805ec0112233","vendor":"yealink","secret":"x"}`)
	admin.must(201, "POST", "/api/v1/phones", provision.AddRequest{MAC: "80:5E:C0:11:22:33", Vendor: provision.Yealink, Extensions: []string{"201"}, Approve: true})
	admin.must(409, "POST", "/api/v1/phones", provision.AddRequest{MAC: "805ec0112233", Vendor: provision.Yealink})

	var v PhonesView
	if err := json.Unmarshal(admin.must(200, "GET", "/api/v1/phones", nil).body, &v); err != nil || len(v.Phones) != 1 || v.Phones[0].State != provision.Approved ||
		v.HTTPSURL != "https://box.example:8443/" || len(v.DHCP) == 0 {
		t.Fatalf("%+v %v", v, err)
	}
	var en provision.Enrolment
	if err := json.Unmarshal(admin.must(200, "GET", "/api/v1/phones/805ec0112233/enrolment", nil).body, &en); err != nil || !strings.Contains(en.URL, "/t/") {
		t.Fatalf("enrolment %+v %v", en, err)
	}
	qr := admin.must(200, "GET", "/api/v1/phones/805ec0112233/qr.svg", nil)
	if qr.hdr.Get("Content-Type") != "image/svg+xml" || !strings.HasPrefix(string(qr.body), "<svg") {
		t.Fatalf("QR: %s", qr.body[:min(len(qr.body), 80)])
	}
	card := admin.must(200, "GET", "/phones/805ec0112233/card", nil)
	if !strings.Contains(string(card.body), "qr.svg") || !strings.Contains(string(card.body), en.URL) {
		t.Fatal("card lacks the QR code or the URL")
	}
	if page := admin.must(200, "GET", "/phones", nil); !strings.Contains(string(page.body), "805ec0112233") {
		t.Fatal("Phones page lacks the phone")
	}
	admin.must(200, "PUT", "/api/v1/phones/805ec0112233/extensions", PhoneExtensionsRequest{Extensions: []string{"201"}})
	admin.must(200, "POST", "/api/v1/phones/805ec0112233/reprovision", nil)
	admin.must(409, "DELETE", "/api/v1/phones/805ec0112233", nil) // approved: revoke first
	admin.must(200, "POST", "/api/v1/phones/805ec0112233/revoke", nil)
	admin.must(200, "DELETE", "/api/v1/phones/805ec0112233", nil)
	admin.must(404, "GET", "/api/v1/phones/805ec0112233", nil)
	if !e.auditHas("phone.revoke", "ok") || !e.auditHas("phone.add", "ok") {
		t.Fatal("phone changes not audited")
	}

	// Settings: bounded, field named.
	if r := admin.must(422, "PUT", "/api/v1/phones/settings", provision.Settings{WindowMinutes: 0, NTP: "x", Timezone: "UTC", Language: "English", Transport: "tls", Codecs: []string{"PCMA"}}); r.str("field") != "window_minutes" {
		t.Fatalf("field %q", r.str("field"))
	}
	// The DHCP server is configured through the settings: refused with
	// the field named, off by default, its state readable.
	bad := provision.DefaultSettings()
	bad.DHCP = provision.DHCPSettings{Enabled: true, Interface: "eth0; rm", PoolStart: netip.MustParseAddr("10.9.0.100"), PoolEnd: netip.MustParseAddr("10.9.0.109")}
	if r := admin.must(422, "PUT", "/api/v1/phones/settings", bad); r.str("field") != "dhcp.interface" {
		t.Fatalf("field %q", r.str("field"))
	}
	bad.DHCP.Interface, bad.DHCP.PoolEnd = "eth0.20", netip.MustParseAddr("10.9.8.1")
	if r := admin.must(422, "PUT", "/api/v1/phones/settings", bad); r.str("field") != "dhcp.pool_end" {
		t.Fatalf("field %q", r.str("field"))
	}
	if r := admin.must(200, "GET", "/api/v1/phones/zerotouch", nil); !strings.Contains(string(r.body), `"state": "off"`) {
		t.Fatalf("zero-touch status %s", r.body)
	}
	// The Phones page's DHCP form sends only the DHCP settings (as its
	// formJSON builds them); the other settings stay, refusals change nothing.
	before := admin.must(200, "GET", "/api/v1/phones/settings", nil).body
	if r := admin.must(422, "PUT", "/api/v1/phones/settings/dhcp", `{"enabled":true,"interface":"eth0; rm","pool_start":"10.9.0.100","pool_end":"10.9.0.109"}`); r.str("field") != "dhcp.interface" {
		t.Fatalf("field %q", r.str("field"))
	}
	admin.must(400, "PUT", "/api/v1/phones/settings/dhcp", `{"enabled":true,"interface":"eth0.20","pool_start":"10.9.0.100","pool_end":"10.9.0.109","option43":"x"}`)
	if after := admin.must(200, "GET", "/api/v1/phones/settings", nil).body; string(after) != string(before) {
		t.Fatalf("a refused DHCP form changed the settings:\n%s\n%s", before, after)
	}
	admin.must(200, "PUT", "/api/v1/phones/settings/dhcp", `{"enabled":true,"interface":"eth0.20","pool_start":"10.9.0.100","pool_end":"10.9.0.109","dns":["10.9.0.1"],"lease_minutes":30}`)
	got := ps.Settings()
	want := provision.DefaultSettings()
	if got.DHCP.Interface != "eth0.20" || !got.DHCP.Enabled || got.DHCP.LeaseMinutes != 30 || len(got.DHCP.DNS) != 1 || got.WindowMinutes != want.WindowMinutes || got.Transport != want.Transport {
		t.Fatalf("settings after the DHCP form: %+v", got)
	}
	if page := string(admin.must(200, "GET", "/phones", nil).body); !strings.Contains(page, `id="phone-dhcp"`) || !strings.Contains(page, `value="eth0.20"`) || !strings.Contains(page, `value="10.9.0.109"`) {
		t.Fatal("the Phones page lacks the DHCP form with the saved values")
	}
	if !e.auditHas("provision.settings", "ok") {
		t.Fatal("DHCP settings change not audited")
	}
	// An auditor reads, and sees no one-time URL.
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "aud1", Role: auth.RoleAuditor, Password: userPW})
	aud := e.client("192.0.2.52")
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})
	aud.must(200, "GET", "/api/v1/phones", nil)
	aud.must(403, "GET", "/api/v1/phones/805ec0112233/enrolment", nil)
	aud.must(403, "POST", "/api/v1/phones", provision.AddRequest{MAC: "805ec0112234", Vendor: provision.Yealink})
	aud.must(403, "PUT", "/api/v1/phones/settings/dhcp", `{"enabled":false}`)
}
