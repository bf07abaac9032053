package admin

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/metrics"
)

// TestMetricsSettingsAPI: the allowed networks are read by security.read,
// written by security.write only, validated (400 naming the field, audited,
// nothing applied), stored with an audit entry, and applied live to the
// running /metrics handler.
func TestMetricsSettingsAPI(t *testing.T) {
	e, admin := claimed(t)
	reg := prometheus.NewRegistry()
	h, err := metrics.NewHandler(reg, e.srv.auth, metrics.Settings{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.metrics = h
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "aud1", Role: auth.RoleAuditor, Password: userPW})
	aud := e.client("192.0.2.52")
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})

	var v MetricsView
	if err := json.Unmarshal(aud.must(200, "GET", "/api/v1/security/metrics", nil).body, &v); err != nil || v.Enabled || !v.Running || v.Scope != auth.ScopeMetrics {
		t.Fatalf("initial %+v %v: want metrics off", v, err)
	}
	aud.must(403, "PUT", "/api/v1/security/metrics", MetricsRequest{Networks: []string{"192.0.2.0/24"}})

	for body, field := range map[string]string{
		`{"networks":["0.0.0.0/0"]}`:  `"field":"/networks/0"`,
		`{"networks":["10.0.0.1/8"]}`: `"field":"/networks/0"`,
		`{"networks":["x"]}`:          `"field":"/networks/0"`,
		`{"networks":[],"open":true}`: "open",
		`{"networks":"192.0.2.0/24"}`: "networks",
		`{}`:                          "networks",
	} {
		r := admin.must(400, "PUT", "/api/v1/security/metrics", body)
		if !strings.Contains(string(r.body), field) {
			t.Errorf("%s: answer %s does not name %s", body, r.body, field)
		}
		if a := e.lastAudit("metrics.settings.set"); a.Outcome != audit.Failed {
			t.Fatalf("refused %s audited as %+v", body, a)
		}
	}
	if h.Settings().Enabled() {
		t.Fatal("refused settings were applied")
	}

	want := MetricsRequest{Networks: []string{"192.0.2.0/24", "2001:db8::/48"}}
	if err := json.Unmarshal(admin.must(200, "PUT", "/api/v1/security/metrics", want).body, &v); err != nil || !v.Enabled || len(v.Settings.Networks) != 2 {
		t.Fatalf("saved %+v %v", v, err)
	}
	if a := e.lastAudit("metrics.settings.set"); a.Actor != "root1" || a.Outcome != audit.OK || !strings.Contains(string(a.After), "2001:db8::/48") {
		t.Fatalf("audit %+v after=%s", a, a.After)
	}
	if !h.Settings().Allows(netip.MustParseAddr("192.0.2.77")) {
		t.Fatal("saved settings not applied to the running handler")
	}
	// Stored: what the next start loads.
	if s, err := metrics.LoadSettings(e.db); err != nil || len(s.Networks) != 2 {
		t.Fatalf("stored %+v %v", s, err)
	}
	// The security page shows the section.
	page := admin.must(200, "GET", "/security", nil)
	if !strings.Contains(string(page.body), `id="metrics"`) || !strings.Contains(string(page.body), "2001:db8::/48") {
		t.Fatal("security page lacks the metrics settings")
	}
}
