package admin

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/logs/syslogtest"
)

func TestSyslogAPI(t *testing.T) {
	e, admin := claimed(t)
	col := syslogtest.Start(t, true)
	addr, caPEM := col.Addr, col.CAPEM
	admin.must(409, "POST", "/api/v1/security/syslog/test", nil) // no sender on this box (errUnavailable)
	sender := logs.NewSender(logs.SenderConfig{Hostname: "EPX-TEST", MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})
	e.srv.syslog = sender
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sender.Run(ctx) }()
	defer func() { cancel(); <-done }()

	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var v SyslogView
	if err := json.Unmarshal(aud.must(200, "GET", "/api/v1/security/syslog", nil).body, &v); err != nil ||
		v.Settings != logs.DefaultSyslogSettings() || !v.Running || v.Unencrypted {
		t.Fatalf("initial %+v %v", v, err)
	}
	op.must(403, "GET", "/api/v1/security/syslog", nil)
	want := SyslogRequest{Enabled: true, Address: addr, Transport: logs.TransportTLS, Facility: logs.FacilityAuto, CAPEM: caPEM}
	aud.must(403, "PUT", "/api/v1/security/syslog", want)
	aud.must(403, "POST", "/api/v1/security/syslog/test", nil)

	// Refused settings: 400, audited as failed, nothing stored or applied.
	for _, body := range []string{`{"enabled":true}`, `{"transport":"dtls"}`, `{"address":"h:1","secret":"x"}`,
		`{"ca_pem":"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}`} {
		admin.must(400, "PUT", "/api/v1/security/syslog", body)
		if a := e.lastAudit("logs.syslog.set"); a.Outcome != audit.Failed {
			t.Fatalf("refused %s audited as %+v", body, a)
		}
	}
	if st := sender.Status(); st.Enabled {
		t.Fatalf("refused settings were applied: %+v", st)
	}

	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/security/syslog", want).body, &v); err != nil || v.Settings != want {
		t.Fatalf("saved %+v %v", v, err)
	}
	a := e.lastAudit("logs.syslog.set")
	if a.Actor != "root1" || a.Outcome != audit.OK || a.Target != addr || strings.Contains(string(a.After), "BEGIN") ||
		!strings.Contains(string(a.After), "ca_pem_sha256") {
		t.Fatalf("audit %+v after=%s", a, a.After)
	}
	// Applied live: an event goes out with no restart.
	sender.Event(logs.Event{Kind: logs.KindBan, Source: "198.51.100.4", Reason: "flood"})
	m := col.Wait(t, "sip.ban")
	if !strings.HasPrefix(m, "<84>1 ") || !strings.Contains(m, " EPX-TEST edgepbx - sip.ban [event@32473 ") {
		t.Errorf("message %q", m)
	}
	r := admin.must(200, "POST", "/api/v1/security/syslog/test", nil)
	if r.js["ok"] != true {
		t.Fatalf("test message: %s", r.body)
	}
	col.Wait(t, "syslog.test")

	// A wrong CA: the test says why, and the sender refuses to deliver.
	otherCA := syslogtest.Start(t, true).CAPEM
	bad := want
	bad.CAPEM = otherCA
	admin.must(200, "PUT", "/api/v1/security/syslog", bad)
	r = admin.must(200, "POST", "/api/v1/security/syslog/test", nil)
	if r.js["ok"] != false || !strings.Contains(r.str("error"), "certificate") {
		t.Fatalf("test with a wrong CA: %s", r.body)
	}
	if a := e.lastAudit("logs.syslog.test"); a.Outcome != audit.Failed {
		t.Errorf("failed test audited as %+v", a)
	}

	// Clear text is flagged in the API, the audit and the page.
	tcp := SyslogRequest{Enabled: true, Address: "192.0.2.200:514", Transport: logs.TransportTCP, Facility: "local5"}
	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/security/syslog", tcp).body, &v); err != nil || !v.Unencrypted {
		t.Fatalf("tcp %+v %v", v, err)
	}
	if a := e.lastAudit("logs.syslog.set"); a.Outcome != audit.Warning || !strings.Contains(a.Detail, "unencrypted") {
		t.Errorf("clear-text audit %+v", a)
	}
	page := string(admin.must(200, "GET", "/security", nil).body)
	if !strings.Contains(page, "Remote syslog") || !strings.Contains(page, "UNENCRYPTED:") || !strings.Contains(page, `value="192.0.2.200:514"`) {
		t.Errorf("security page lacks the syslog section or its warning")
	}
}
