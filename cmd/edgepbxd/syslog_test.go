package main

import (
	"encoding/json"
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

// TestDevModeSyslogQueueSurvivesRestart: the collector goes down; a SIP
// auth failure (security log) and an audited action happen; edgepbxd is
// restarted over the same data directory; the collector comes back on the
// same address and receives both: the queue was on disk and the audit
// follower resumed from its stored position.
func TestDevModeSyslogQueueSurvivesRestart(t *testing.T) {
	col := syslogtest.Start(t, false)
	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	c := claimBox(t, base, fp, code)
	c.must(http.StatusOK, "PUT", "/api/v1/security/syslog", logs.SyslogSettings{Enabled: true, Address: col.Addr,
		Transport: logs.TransportTCP, Facility: logs.FacilityAuto})
	col.Wait(t, `action="logs.syslog.set"`) // connected and delivering

	col.Close()
	waitSyslogStatus(t, c, func(st logs.SyslogStatus) bool { return !st.Connected && st.Durable })
	sipRegister(t, sipAddrs[1], "wrong-password")
	c.do("POST", "/api/v1/security/syslog/test", nil) // audited as failed: nobody listens
	waitSyslogStatus(t, c, func(st logs.SyslogStatus) bool { return st.Queued > 0 })
	if code := p.stop(t); code != 0 {
		t.Fatalf("edgepbxd exit %d:\n%s", code, p.output())
	}

	p = startProc(t, procOpts{noFD3: true}, args...)
	p.waitLine(t, adminRE)
	col2 := syslogtest.StartAt(t, col.Addr, false)
	var gotAuth, gotAudit bool
	deadline := time.After(60 * time.Second) // a hang, not a performance bound
	for !gotAuth || !gotAudit {
		select {
		case m := <-col2.Msgs:
			if strings.Contains(m, " edgepbx - sip.auth_failure [event@32473 ") && strings.Contains(m, `user="101"`) {
				gotAuth = true
			}
			if strings.Contains(m, " edgepbx - audit [audit@32473 ") && strings.Contains(m, `action="logs.syslog.test"`) {
				gotAudit = true
			}
		case <-deadline:
			t.Fatalf("after the restart: auth failure %v, audit entry %v within 60 s\n%s", gotAuth, gotAudit, p.output())
		}
	}
}

// waitSyslogStatus polls the admin API until ok holds for the sender's
// status (the test's deadline bounds it).
func waitSyslogStatus(t *testing.T, c *apiClient, ok func(logs.SyslogStatus) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		var v struct {
			Status logs.SyslogStatus `json:"status"`
		}
		if err := json.Unmarshal(c.must(http.StatusOK, "GET", "/api/v1/security/syslog", nil), &v); err != nil {
			t.Fatal(err)
		}
		if ok(v.Status) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("syslog status %+v", v.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
