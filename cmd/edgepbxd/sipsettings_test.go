package main

import (
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
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

// TestDevModeSIPSettingsRestart runs the real binary: a SIP edge setting
// saved through the admin API is stored at once, flagged "applies after
// restart" (firmware/sip takes its configuration only when built), and
// after a restart of edgepbxd on the same store the edge runs it: a packet
// from the newly listed scanner User-Agent is dropped.
func TestDevModeSIPSettingsRestart(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])

	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil || v.Settings.Version != 0 || v.RestartRequired {
		t.Fatalf("initial %+v %v", v, err)
	}
	if got := statusValue(t, api, "Active calls"); !strings.HasPrefix(got, "0 now") {
		t.Errorf("dashboard active calls %q\n%s", got, p.output())
	}
	if got := statusValue(t, api, "SIP registrations"); got == "" {
		t.Error("dashboard lacks the SIP registrations")
	}
	next := v.Settings
	next.ScannerUserAgents = append(next.ScannerUserAgents, "evil-dialer")
	next.Guard.MaxFailsPerSource = 2
	if err := json.Unmarshal(api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next), &v); err != nil ||
		v.Settings.Version != 1 || v.RunningVersion != 0 || !v.RestartRequired {
		t.Fatalf("saved %+v %v", v, err)
	}
	if got := statusValue(t, api, "SIP settings"); !strings.Contains(got, "applies after restart") {
		t.Errorf("dashboard SIP settings %q", got)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}

	p2 := startProc(t, procOpts{noFD3: true}, args...)
	base2 := p2.waitLine(t, adminRE)[1]
	sipAddrs := p2.waitLine(t, sipRE)
	if !strings.Contains(p2.output(), `msg="sip: settings" version=1`) {
		t.Errorf("restart did not load version 1:\n%s", p2.output())
	}
	api2 := newAPIClient(t, base2, fp)
	api2.login(api2.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	if err := json.Unmarshal(api2.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil ||
		v.Settings.Version != 1 || v.RunningVersion != 1 || v.RestartRequired ||
		v.Settings.Guard.MaxFailsPerSource != 2 || !slices.Contains(v.Settings.ScannerUserAgents, "evil-dialer") {
		t.Fatalf("after restart %+v %v", v, err)
	}
	if got := statusValue(t, api2, "SIP settings"); got != "" {
		t.Errorf("restart note still shown: %q", got)
	}

	// The running edge drops the newly listed scanner.
	c, err := net.Dial("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	host := c.LocalAddr().String()
	msg := "OPTIONS sip:" + sipAddrs[1] + " SIP/2.0\r\nVia: SIP/2.0/UDP " + host + ";branch=z9hG4bK-sipset1\r\n" +
		"From: <sip:probe@" + host + ">;tag=1\r\nTo: <sip:" + sipAddrs[1] + ">\r\nCall-ID: sipset-1\r\nCSeq: 1 OPTIONS\r\n" +
		"Max-Forwards: 70\r\nUser-Agent: Evil-Dialer 2.0\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	want := "1 scanner packets dropped"
	var got string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = statusValue(t, api2, "SIP filter"); strings.HasPrefix(got, want) {
			break
		}
	}
	if !strings.HasPrefix(got, want) {
		t.Fatalf("SIP filter %q, want %q", got, want)
	}
	if code := p2.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
