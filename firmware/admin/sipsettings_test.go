package admin

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/config"
)

func TestSIPSettingsAPI(t *testing.T) {
	e, admin := claimed(t)
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Username: u.name, Role: u.role, Password: userPW})
	}
	op, aud := e.client("192.0.2.51"), e.client("192.0.2.52")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var v SIPSettingsView
	if err := json.Unmarshal(aud.must(200, "GET", "/api/v1/sip/settings", nil).body, &v); err != nil ||
		v.Settings.Version != 0 || v.RunningVersion != 0 || v.RestartRequired || v.Settings.Guard.MaxFailsPerSource != 3 {
		t.Fatalf("initial %+v %v", v, err)
	}
	op.must(403, "GET", "/api/v1/sip/settings", nil)

	next := v.Settings
	next.Guard.MaxFailsPerSource = 2
	next.ScannerUserAgents = append(next.ScannerUserAgents, "evil-dialer")
	// Only admins write: operators and auditors are refused, nothing changes.
	op.must(403, "PUT", "/api/v1/sip/settings", next)
	aud.must(403, "PUT", "/api/v1/sip/settings", next)
	if e.sipset.Current().Version != 0 {
		t.Fatal("refused write changed the settings")
	}

	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/sip/settings", next).body, &v); err != nil ||
		v.Settings.Version != 1 || v.RunningVersion != 0 || !v.RestartRequired || !slices.Contains(v.Settings.ScannerUserAgents, "evil-dialer") {
		t.Fatalf("saved %+v %v", v, err)
	}
	a := e.lastAudit("sip.settings.set")
	if a.Actor != "root1" || a.Outcome != audit.OK || a.Target != "version 1" || !strings.Contains(string(a.Before), `"max_fails_per_source":3`) ||
		!strings.Contains(string(a.After), `"max_fails_per_source":2`) || !strings.Contains(a.Detail, "after restart") {
		t.Fatalf("audit %+v before=%s after=%s", a, a.Before, a.After)
	}

	// The security page says the change waits for a restart.
	page := string(admin.must(200, "GET", "/security", nil).body)
	if !strings.Contains(page, "applies after restart") || !strings.Contains(page, "evil-dialer") {
		t.Fatalf("security page lacks the SIP section or restart note")
	}

	tests := []struct {
		name   string
		mod    func(*config.SIPSettings)
		code   int
		detail string
	}{
		{"stale version", func(s *config.SIPSettings) { s.Version = 0 }, 409, "version 1 is saved"},
		{"no zones", func(s *config.SIPSettings) { s.AllowedZones = nil }, 422, "allowed_zones empty"},
		{"tls 1.1", func(s *config.SIPSettings) { s.TLSMin = "1.1" }, 422, "tls_min"},
		{"zero flood limit", func(s *config.SIPSettings) { s.Guard.RateLimit = 0 }, 422, "guard"},
	}
	for _, tc := range tests {
		bad := e.sipset.Current()
		bad.Guard.MaxFailsPerUser = 4
		tc.mod(&bad)
		r := admin.must(tc.code, "PUT", "/api/v1/sip/settings", bad)
		if !strings.Contains(r.str("detail"), tc.detail) {
			t.Errorf("%s: %s", tc.name, r.body)
		}
		if a := e.lastAudit("sip.settings.set"); a.Outcome != audit.Failed || !strings.Contains(a.Detail, tc.detail) {
			t.Errorf("%s: audit %+v", tc.name, a)
		}
	}
	if c := e.sipset.Current(); c.Version != 1 || c.Guard.MaxFailsPerUser != 10 {
		t.Fatalf("refused saves changed the settings: %+v", c)
	}
	// Unknown fields are refused by the decoder.
	admin.must(400, "PUT", "/api/v1/sip/settings", `{"version":1,"udp":":5070"}`)
}
