package main

import (
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// statusValue is the value of the dashboard line name ("" if absent).
func statusValue(t *testing.T, api *apiClient, name string) string {
	t.Helper()
	var st struct{ Items []admin.StatusItem }
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/status", nil), &st); err != nil {
		t.Fatal(err)
	}
	for _, it := range st.Items {
		if it.Name == name {
			return it.Value
		}
	}
	return ""
}

// scannerRegister is a REGISTER whose User-Agent is ua, from c.
func scannerRegister(c net.Conn, to, ua, callID string) string {
	host := c.LocalAddr().String()
	return "REGISTER sip:" + to + " SIP/2.0\r\nVia: SIP/2.0/UDP " + host + ";branch=z9hG4bK-" + callID + "\r\n" +
		"From: <sip:101@" + to + ">;tag=1\r\nTo: <sip:101@" + to + ">\r\nCall-ID: " + callID + "\r\nCSeq: 1 REGISTER\r\n" +
		"Contact: <sip:101@" + host + ">\r\nMax-Forwards: 70\r\nUser-Agent: " + ua + "\r\nContent-Length: 0\r\n\r\n"
}

// TestDevModeSIPSettingsLive runs the real binary: SIP edge settings saved
// through the admin API are in effect at once, without a restart: a newly
// listed scanner User-Agent is dropped and a raised TLS minimum refuses
// TLS 1.2 on new connections while a connection made before stays up. A
// start-only setting is named and shown on the dashboard until a restart,
// after which the edge runs the whole saved version.
func TestDevModeSIPSettingsLive(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])

	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil || v.Settings.Version != 0 || v.RestartRequired || !v.Live {
		t.Fatalf("initial %+v %v", v, err)
	}
	if got := statusValue(t, api, "Active calls"); !strings.HasPrefix(got, "0 now") {
		t.Errorf("dashboard active calls %q\n%s", got, p.output())
	}
	if got := statusValue(t, api, "SIP registrations"); got == "" {
		t.Error("dashboard lacks the SIP registrations")
	}

	// Before the change the dialer's REGISTER is challenged like any phone's.
	c, err := net.Dial("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(scannerRegister(c, sipAddrs[1], "Evil-Dialer 2.0", "sipset-1"))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 401 ") {
		t.Fatalf("REGISTER before the change: %q %v", buf[:n], err)
	}
	tls12 := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}
	old, err := tls.Dial("tcp", sipAddrs[3], tls12)
	if err != nil {
		t.Fatalf("TLS 1.2 before the change: %v", err)
	}
	defer old.Close()

	next := v.Settings
	next.ScannerUserAgents = append(next.ScannerUserAgents, "evil-dialer")
	next.Guard.MaxFailsPerSource = 2
	next.TLSMin = "1.3"
	if err := json.Unmarshal(api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next), &v); err != nil ||
		v.Settings.Version != 1 || v.RunningVersion != 1 || v.RestartRequired || len(v.RestartFields) != 0 {
		t.Fatalf("saved %+v %v", v, err)
	}
	if got := statusValue(t, api, "SIP settings"); got != "" {
		t.Errorf("dashboard still asks for a restart: %q", got)
	}

	// The running edge drops the newly listed scanner...
	if _, err := c.Write([]byte(scannerRegister(c, sipAddrs[1], "Evil-Dialer 2.0", "sipset-2"))); err != nil {
		t.Fatal(err)
	}
	want := "1 scanner packets dropped"
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = statusValue(t, api, "SIP filter"); strings.HasPrefix(got, want) {
			break
		}
	}
	if !strings.HasPrefix(got, want) {
		t.Fatalf("SIP filter %q, want %q", got, want)
	}
	// ...refuses TLS 1.2 on a new connection, and keeps the old one up.
	if nc, err := tls.Dial("tcp", sipAddrs[3], tls12); err == nil {
		nc.Close()
		t.Fatal("TLS 1.2 accepted after the minimum became 1.3")
	}
	if nc, err := tls.Dial("tcp", sipAddrs[3], &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatalf("TLS 1.3 after the change: %v", err)
	} else {
		nc.Close()
	}
	if _, err := old.Write([]byte(scannerRegister(old, sipAddrs[1], "testphone/1.0", "sipset-3"))); err != nil {
		t.Fatal(err)
	}
	old.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := old.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "SIP/2.0 401 ") {
		t.Fatalf("TLS 1.2 connection made before the change: %q %v", buf[:n], err)
	}

	// A start-only setting is stored and named; the dashboard says restart.
	next = v.Settings
	next.NonceTTL = time.Minute
	if err := json.Unmarshal(api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next), &v); err != nil ||
		v.Settings.Version != 2 || !v.RestartRequired || !slices.Equal(v.RestartFields, []string{"nonce_ttl"}) {
		t.Fatalf("start-only change %+v %v", v, err)
	}
	if got := statusValue(t, api, "SIP settings"); !strings.Contains(got, "except nonce_ttl (after a restart)") {
		t.Errorf("dashboard SIP settings %q", got)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}

	p2 := startProc(t, procOpts{noFD3: true}, args...)
	base2 := p2.waitLine(t, adminRE)[1]
	if !strings.Contains(p2.output(), `msg="sip: settings" version=2`) {
		t.Errorf("restart did not load version 2:\n%s", p2.output())
	}
	api2 := newAPIClient(t, base2, fp)
	api2.login(api2.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	if err := json.Unmarshal(api2.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil ||
		v.Settings.Version != 2 || v.RunningVersion != 2 || v.RestartRequired || v.Settings.NonceTTL != time.Minute ||
		!slices.Contains(v.Settings.ScannerUserAgents, "evil-dialer") {
		t.Fatalf("after restart %+v %v", v, err)
	}
	if got := statusValue(t, api2, "SIP settings"); got != "" {
		t.Errorf("restart note still shown: %q", got)
	}
	if code := p2.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// TestBrowserSIPSettingsForm drives the security page's SIP form in
// headless Chromium on a phone-sized screen: every control has a label,
// nothing sticks out, and the page's script sends the same settings back
// with only the edited fields changed, which the running edge then runs;
// a bad value is refused with the validator's message and changes nothing.
func TestBrowserSIPSettingsForm(t *testing.T) {
	bin := browsertest.Chromium(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	var before admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &before); err != nil {
		t.Fatal(err)
	}

	b := browsertest.NewPage(t, bin)
	b.Viewport(390, 844)
	b.Open(base+"/login", "/login")
	b.Fill(map[string]string{"#username": testAdmin, "#password": testAdminPW})
	b.Submit("#login", "")
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete"`)
	b.Open(base+"/security", "/security")
	if o := b.Overflow(390); o != "" {
		t.Errorf("security page wider than a phone: %s", o)
	}
	if unlabelled := b.Str(`Array.from(document.querySelectorAll("#sip-edit input:not([type=hidden]), #sip-edit select, #sip-edit textarea")).
		filter(el => el.labels.length === 0).map(el => el.name).join(" ")`); unlabelled != "" {
		t.Errorf("controls without a label: %s", unlabelled)
	}
	if b.Str(`String(document.querySelectorAll("#sip-edit textarea[name=sipconfig]").length)`) != "0" {
		t.Error("the JSON editor is still there")
	}

	scanners := strings.Join(before.Settings.ScannerUserAgents, "\n") + "\nbrowser-dialer\n"
	b.Fill(map[string]string{"#sip-scanners": scanners, "#sip-fs": "2", "#sip-tmin": "1.3", "#sip-fb": "7200"})
	b.Submit("#sip-edit", "#sip-edit [data-result]")
	if msg := b.Result("#sip-edit [data-result]"); !strings.Contains(msg, "Version 1 saved and in effect") {
		t.Fatalf("save answered %q", msg)
	}
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	want := before.Settings
	want.Version = 1
	want.ScannerUserAgents = append(slices.Clone(want.ScannerUserAgents), "browser-dialer")
	want.Guard.MaxFailsPerSource = 2
	want.Guard.FloodBan = 2 * time.Hour
	want.TLSMin = "1.3"
	if want.Allowlist == nil {
		want.Allowlist = []netip.Prefix{} // the form sends an empty list, not null
	}
	if got, _ := json.Marshal(v.Settings); string(got) != string(mustJSON(t, want)) {
		t.Fatalf("the form sent\n%s\nwant\n%s", got, mustJSON(t, want))
	}
	if v.RunningVersion != 1 || v.RestartRequired {
		t.Fatalf("not in effect: %+v", v)
	}

	// A zone with host bits is refused with the reason; nothing changes.
	b.Fill(map[string]string{"#sip-zones": "10.1.2.3/8"})
	b.Submit("#sip-edit", "#sip-edit [data-result]")
	if msg := b.Result("#sip-edit [data-result]"); !strings.Contains(msg, "network address") {
		t.Fatalf("bad zone answered %q", msg)
	}
	if cls := b.Str(`document.querySelector("#sip-edit [data-result]").className`); cls != "bad" {
		t.Errorf("refusal shown as %q", cls)
	}
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil || v.Settings.Version != 1 {
		t.Fatalf("refused save changed the settings: %+v %v", v, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
