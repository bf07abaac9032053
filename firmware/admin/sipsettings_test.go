package admin

import (
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

func TestSIPSettingsAPI(t *testing.T) {
	e, admin := claimed(t)
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
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

	// Without a live edge the security page says the change waits for a restart.
	page := string(admin.must(200, "GET", "/security", nil).body)
	if !strings.Contains(page, "not running settings live") || !strings.Contains(page, "evil-dialer") {
		t.Fatalf("security page lacks the SIP section or restart note")
	}

	tests := []struct {
		name   string
		mod    func(*pbxconfig.SIPSettings)
		code   int
		detail string
	}{
		{"stale version", func(s *pbxconfig.SIPSettings) { s.Version = 0 }, 409, "version 1 is saved"},
		{"no zones", func(s *pbxconfig.SIPSettings) { s.AllowedZones = nil }, 422, "allowed_zones"},
		{"tls 1.1", func(s *pbxconfig.SIPSettings) { s.TLSMin = "1.1" }, 422, "tls_min"},
		{"zero flood limit", func(s *pbxconfig.SIPSettings) { s.Guard.RateLimit = 0 }, 422, "guard"},
	}
	for _, tc := range tests {
		bad := e.sipset.Current()
		bad.Guard.MaxFailsPerUser = 4
		tc.mod(&bad)
		r := admin.must(tc.code, "PUT", "/api/v1/sip/settings", bad)
		if !strings.Contains(r.str("detail")+" "+r.str("field"), tc.detail) {
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

// startEdge builds a real SIP edge on loopback (not serving: Apply needs no
// traffic) and returns it with the configuration it was built from.
func startEdge(t *testing.T, e *env) (*sipedge.Server, pbxconfig.SIP) {
	t.Helper()
	lg, err := logs.New(e.db, 100)
	if err != nil {
		t.Fatal(err)
	}
	base := pbxconfig.DefaultSIP()
	base.UDP, base.TCP, base.TLS = "127.0.0.1:0", "127.0.0.1:0", ""
	edge, err := sipedge.New(e.sipset.Current().Apply(base), sipedge.Deps{Store: e.db, Security: lg, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { edge.Close() })
	return edge, base
}

// TestSIPSettingsLive: with the running edge attached, a save is in effect
// at once (the edge's stages run it), start-only settings are named, and a
// version the edge refuses is neither stored nor half applied.
func TestSIPSettingsLive(t *testing.T) {
	e, admin := claimed(t)
	edge, base := startEdge(t, e)
	e.sipset.SetApplier(func(set pbxconfig.SIPSettings) ([]string, error) {
		if slices.Contains(set.ScannerUserAgents, "refuse-me") {
			return nil, errors.New("edge test refusal")
		}
		return edge.Apply(set.Apply(base))
	})

	var v SIPSettingsView
	next := e.sipset.Current()
	next.ScannerUserAgents = append(next.ScannerUserAgents, "evil-dialer")
	next.Guard.MaxFailsPerSource = 2
	next.TLSMin = "1.3"
	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/sip/settings", next).body, &v); err != nil ||
		v.Settings.Version != 1 || v.RunningVersion != 1 || v.RestartRequired || !v.Live || len(v.RestartFields) != 0 {
		t.Fatalf("saved %+v %v", v, err)
	}
	if got := edge.Settings(); got.Guard.MaxFailsPerSource != 2 || got.TLSMin != "1.3" || !slices.Contains(got.ScannerUserAgents, "evil-dialer") {
		t.Fatalf("edge runs %+v", got)
	}
	if a := e.lastAudit("sip.settings.set"); a.Outcome != audit.OK || a.Detail != "applied to the running SIP edge" {
		t.Fatalf("audit %+v", a)
	}
	page := string(admin.must(200, "GET", "/security", nil).body)
	for _, want := range []string{"Version 1 is in effect", `name="guard.max_fails_per_source" type="number" min="1" required value="2"`,
		`<option selected>1.3</option>`, "evil-dialer\n", `src="/static/sipsettings.js"`} {
		if !strings.Contains(page, want) {
			t.Errorf("security page lacks %q", want)
		}
	}
	if strings.Contains(page, "applies after restart") || strings.Contains(page, "JSON") {
		t.Error("security page still has the restart note or the JSON editor")
	}

	// A start-only setting is stored, named, and the rest is in effect.
	next = e.sipset.Current()
	next.NonceTTL = time.Minute
	next.Guard.RateLimit = 77
	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/sip/settings", next).body, &v); err != nil ||
		v.Settings.Version != 2 || !v.RestartRequired || !slices.Equal(v.RestartFields, []string{"nonce_ttl"}) {
		t.Fatalf("start-only change %+v %v", v, err)
	}
	if edge.Settings().Guard.RateLimit != 77 {
		t.Fatal("live part of a version with a start-only change not applied")
	}
	if a := e.lastAudit("sip.settings.set"); !strings.Contains(a.Detail, "after restart: nonce_ttl") {
		t.Fatalf("audit %+v", a)
	}
	if page := string(admin.must(200, "GET", "/security", nil).body); !strings.Contains(page, "nonce_ttl: these take effect after a restart") {
		t.Error("security page does not name the start-only setting")
	}

	// Refused by the edge: 422 with its reason, nothing stored, edge unchanged.
	bad := e.sipset.Current()
	bad.ScannerUserAgents = []string{"refuse-me"}
	r := admin.must(422, "PUT", "/api/v1/sip/settings", bad)
	if !strings.Contains(r.str("detail"), "edge test refusal") || !strings.Contains(r.str("detail"), "refused by the running edge") {
		t.Fatalf("refusal answer %s", r.body)
	}
	if e.sipset.Current().Version != 2 || slices.Contains(edge.Settings().ScannerUserAgents, "refuse-me") {
		t.Fatal("refused version stored or applied")
	}
	if a := e.lastAudit("sip.settings.set"); a.Outcome != audit.Failed {
		t.Fatalf("audit %+v", a)
	}
}
