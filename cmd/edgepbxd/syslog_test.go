package main

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/logs/syslogtest"
)

// TestDevModeRemoteSyslog: settings saved through the API reach the
// running daemon at once; a SIP auth failure (security log) and the
// settings change itself (audit chain) arrive at the collector.
func TestDevModeRemoteSyslog(t *testing.T) {
	col := syslogtest.Start(t, false)

	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	c := claimBox(t, base, fp, code)
	c.must(http.StatusOK, "PUT", "/api/v1/security/syslog", logs.SyslogSettings{Enabled: true, Address: col.Addr,
		Transport: logs.TransportTCP, Facility: logs.FacilityAuto})
	sipRegister(t, sipAddrs[1], "wrong-password")

	var gotAuth, gotAudit bool
	deadline := time.After(30 * time.Second)
	for !gotAuth || !gotAudit {
		select {
		case m := <-col.Msgs:
			if strings.HasPrefix(m, "BAD FRAME") {
				t.Fatal(m)
			}
			if strings.Contains(m, " edgepbx - sip.auth_failure [event@32473 ") && strings.Contains(m, `user="101"`) {
				gotAuth = true
			}
			if strings.Contains(m, " edgepbx - audit [audit@32473 ") && strings.Contains(m, `action="logs.syslog.set"`) &&
				strings.Contains(m, `outcome="warning"`) {
				gotAudit = true
			}
			if strings.Contains(m, "wrong-password") || strings.Contains(m, testAdminPW) {
				t.Fatalf("a password left the box: %q", m)
			}
		case <-deadline:
			t.Fatalf("collector: auth failure %v, audit entry %v within 30 s", gotAuth, gotAudit)
		}
	}
}
