package provision

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// phone is how one vendor's phone fetches: its User-Agent, the files it
// asks for first (no MAC) and its own file.
type phone struct {
	vendor Vendor
	mac    string
	ua     string
	common []string
	device string // file name; "" for Linphone (token URL only)
}

func phones() []phone {
	return []phone{
		{Yealink, "805ec0112233", "Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33", []string{"y000000000028.cfg", "y000000000000.boot"}, "805ec0112233.cfg"},
		{Poly, "0004f2aabbcc", "FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application", []string{"000000000000.cfg", "0004f2aabbcc.cfg"}, "edgepbx-0004f2aabbcc.cfg"},
		{Snom, "00041396d9b4", "Mozilla/4.0 (compatible; snomD785-SIP 10.1.169.16 1.1.5-IS 00041396D9B4 SIP)", []string{"snomD785.htm"}, "snom-00041396d9b4.xml"},
		{Grandstream, "000b828aa872", "Grandstream Model HW GXP2135 SW 1.0.7.97 DevId 000b828aa872", []string{"cfg.xml", "cfgGXP2135.xml"}, "cfg000b828aa872.xml"},
		{Fanvil, "0c3800000001", "Fanvil X5U-V2 2.12.1 0c3800000001", nil, "0c3800000001.cfg"},
		{Cisco, "00562b043615", "Cisco-CP-8841-3PCC/11.0 (00562b043615)", nil, "00562b043615.xml"},
		{Linphone, "", "Linphone/5.2.0 (Debian GNU/Linux) LinphoneSDK/5.2.0", nil, ""},
	}
}

// TestVendorLifecycle fetches as each vendor's phone does: before approval
// (nothing), in the window (config with secrets), after it with and
// without the per-device credential, and after revocation.
func TestVendorLifecycle(t *testing.T) {
	for _, p := range phones() {
		t.Run(string(p.vendor), func(t *testing.T) {
			h := newHarness(t)
			src := "10.1.1.20"
			for _, f := range p.common {
				a := h.do(false, "GET", "/"+f, p.ua, src, nil)
				if a.status != 200 {
					t.Fatalf("bootstrap %s: %d %s", f, a.status, a.body)
				}
				mustNotContain(t, a.body, "password", "Password", "Pswd", "P34", "P1361", "--pwd")
			}
			d := h.add(p.mac, p.vendor, false, "101")
			mac := d.MAC
			file := p.device
			if file == "" {
				file = "linphone-" + mac + ".xml"
			}
			// Pending: nothing.
			if a := h.do(true, "GET", "/"+file, p.ua, src, nil); a.status != 401 || a.body != refusalBody {
				t.Fatalf("pending: %d %q", a.status, a.body)
			}
			if _, err := h.svc.Approve(mac, "admin", "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
			sec := h.secrets(mac)
			if sec.SIP["101"] == "" || h.exts.get("101") != sec.SIP["101"] {
				t.Fatalf("extension password not set for the phone")
			}
			path := "/" + file
			if p.vendor == Linphone {
				// Softphones enrol only through the one-time URL.
				if a := h.do(true, "GET", path, p.ua, src, nil); a.status != 401 {
					t.Fatalf("linphone without token: %d", a.status)
				}
				e, err := h.svc.Enrolment(mac)
				if err != nil || e.URL == "" {
					t.Fatalf("enrolment URL: %v %+v", err, e)
				}
				path = strings.TrimPrefix(e.URL, "https://pbx.example.test:8443")
			}
			a := h.do(true, "GET", path, p.ua, src, nil)
			if a.status != 200 {
				t.Fatalf("in window: %d %s", a.status, a.body)
			}
			mustContain(t, a.body, sec.SIP["101"], "pbx.example.test")
			if p.vendor != Linphone {
				mustContain(t, a.body, sec.Credential)
			}
			if p.vendor != Grandstream && p.vendor != Cisco {
				mustContain(t, a.body, "5061")
			}
			// Enrolled: a second bare fetch, even still inside the window, is refused.
			if a := h.do(true, "GET", "/"+file, p.ua, src, nil); a.status != 401 || a.body != refusalBody {
				t.Fatalf("after enrolment without credential: %d %q", a.status, a.body)
			}
			h.clock.Add(11 * time.Minute)
			if a := h.do(true, "GET", "/"+file, p.ua, src, nil, h.withDigest(mac, "wrong-credential-000000")); a.status != 401 {
				t.Fatalf("wrong credential: %d", a.status)
			}
			a = h.do(true, "GET", "/"+file, p.ua, src, nil, h.withDigest(mac, sec.Credential))
			if a.status != 200 {
				t.Fatalf("with credential: %d %s", a.status, a.body)
			}
			mustContain(t, a.body, sec.SIP["101"])
			// Another MAC's credential does not open this one.
			if a := h.do(true, "GET", "/"+file, p.ua, src, nil, h.withDigest("001122334455", sec.Credential)); a.status != 401 {
				t.Fatalf("credential under another user: %d", a.status)
			}
			if _, err := h.svc.Revoke(mac, "admin", "192.0.2.1"); err != nil {
				t.Fatal(err)
			}
			if a := h.do(true, "GET", "/"+file, p.ua, src, nil, h.withDigest(mac, sec.Credential)); a.status != 401 {
				t.Fatalf("revoked: %d", a.status)
			}
			if h.exts.get("101") == sec.SIP["101"] {
				t.Fatal("revocation left the phone's SIP password working")
			}
			dev, _ := h.svc.Get(mac)
			if !dev.Enrolled || dev.State != Revoked {
				t.Fatalf("record: %+v", dev)
			}
		})
	}
}

// TestWindowCloses: a phone approved but silent until its window ends
// gets nothing by MAC alone.
func TestWindowCloses(t *testing.T) {
	h := newHarness(t)
	p := phones()[0]
	h.add(p.mac, p.vendor, true, "101")
	h.clock.Add(10*time.Minute + time.Second)
	if a := h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil); a.status != 401 {
		t.Fatalf("after the window: %d", a.status)
	}
	// Reprovisioning opens a new one.
	if _, err := h.svc.Reprovision(p.mac, "admin", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if a := h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil); a.status != 200 {
		t.Fatalf("after reprovision: %d", a.status)
	}
}

// TestBootstrapNoSecrets: plain HTTP never carries a secret, and answers
// a known, approved, in-window MAC exactly like an unknown one.
func TestBootstrapNoSecrets(t *testing.T) {
	for _, p := range phones() {
		if p.device == "" {
			continue
		}
		t.Run(string(p.vendor), func(t *testing.T) {
			h := newHarness(t)
			h.add(p.mac, p.vendor, true, "101")
			sec := h.secrets(p.mac)
			known := h.do(false, "GET", "/"+p.device, p.ua, "10.1.1.20", nil)
			unknownFile := strings.Replace(p.device, p.mac, "0c38000000ff", 1)
			ua := strings.NewReplacer(p.mac, "0c38000000ff", strings.ToUpper(p.mac), "0C38000000FF", "80:5e:c0:11:22:33", "0c:38:00:00:00:ff").Replace(p.ua)
			unknown := h.do(false, "GET", "/"+unknownFile, ua, "10.1.1.21", nil)
			if known.status != 200 || known.body != unknown.body || known.status != unknown.status {
				t.Fatalf("known %d / unknown %d differ:\n%s\n---\n%s", known.status, unknown.status, known.body, unknown.body)
			}
			mustNotContain(t, known.body, sec.Credential, sec.SIP["101"], sec.Token, "101")
			mustContain(t, known.body, "https://pbx.example.test:8443")
			// The window was not used up by plain HTTP.
			if a := h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil); a.status != 200 {
				t.Fatalf("HTTPS in window after bootstrap: %d", a.status)
			}
			if got := h.svc.Asking(); len(got) != 1 || got[0].MAC != "0c38000000ff" || got[0].Vendor != p.vendor {
				t.Fatalf("asking list: %+v", got)
			}
		})
	}
}

// TestRefusalsIdentical: unknown MAC, pending, bad token, bad credential,
// revoked and closed window all get the same status, headers and body,
// and cost the same work (one digest computation each).
func TestRefusalsIdentical(t *testing.T) {
	h := newHarness(t)
	ua := "Yealink SIP-T46S 66.86.0.15"
	h.add("805ec0000001", Yealink, false, "101")       // pending
	h.add("805ec0000002", Yealink, true, "102")        // approved, will be enrolled
	h.add("805ec0000003", Yealink, true)               // revoked
	h.svc.Revoke("805ec0000003", "admin", "192.0.2.1") //nolint:errcheck
	h.do(true, "GET", "/805ec0000002.cfg", ua, "10.9.9.9", nil)
	cases := []struct {
		name, path string
		mod        []func(*http.Request)
	}{
		{"unknown", "/805ec0000009.cfg", nil},
		{"unknown-with-credential", "/805ec0000009.cfg", []func(*http.Request){h.withDigest("805ec0000009", "AAAAAAAAAAAAAAAAAAAAAAAAAA")}},
		{"pending", "/805ec0000001.cfg", nil},
		{"enrolled-no-credential", "/805ec0000002.cfg", nil},
		{"bad-credential", "/805ec0000002.cfg", []func(*http.Request){h.withDigest("805ec0000002", "AAAAAAAAAAAAAAAAAAAAAAAAAA")}},
		{"bad-token", "/t/AAAAAAAAAAAAAAAAAAAAAAAAAA/805ec0000002.cfg", nil},
		{"revoked", "/805ec0000003.cfg", nil},
		{"probe", "/cfg/../../etc/passwd", nil},
	}
	var first answer
	for i, c := range cases {
		before := h.svc.hashes.Load()
		a := h.do(true, "GET", c.path, ua, "10.1.2."+string(rune('1'+i)), nil, c.mod...)
		work := h.svc.hashes.Load() - before
		if c.name != "probe" && work != 1 {
			t.Errorf("%s: %d digest computations, want 1", c.name, work)
		}
		if i == 0 {
			first = a
			if a.status != 401 || a.body != refusalBody || !strings.HasPrefix(a.hdr.Get("WWW-Authenticate"), "Digest ") {
				t.Fatalf("refusal: %d %q %v", a.status, a.body, a.hdr)
			}
			continue
		}
		if a.status != first.status || a.body != first.body || len(a.hdr) != len(first.hdr) {
			t.Errorf("%s: %d %q %v differs from %d %q %v", c.name, a.status, a.body, a.hdr, first.status, first.body, first.hdr)
		}
		for k := range first.hdr {
			if a.hdr.Get(k) != first.hdr.Get(k) {
				t.Errorf("%s: header %s %q vs %q", c.name, k, a.hdr.Get(k), first.hdr.Get(k))
			}
		}
	}
}
