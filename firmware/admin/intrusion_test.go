package admin

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/logs"
)

// TestIntrusionReportAPI: events recorded today show in the report with
// the country of the uploaded GeoIP database; the auditor (security.read)
// sees it, the operator does not.
func TestIntrusionReportAPI(t *testing.T) {
	e, a := claimed(t)
	a.header = map[string]string{"Content-Type": "text/csv"}
	a.must(200, "PUT", "/api/v1/security/geoip", geoCSV)
	a.header = nil
	now := e.clock.Now()
	for _, ev := range []logs.Event{
		{Kind: logs.KindAuthFailure, Source: "198.51.100.7:5060", User: "201"},
		{Kind: logs.KindAuthFailure, Source: "198.51.100.7:5060", User: "201"},
		{Kind: logs.KindBan, Source: "198.51.100.7/32", Reason: "sip-bruteforce"},
		{Kind: logs.KindScanner, Source: "203.0.113.5", UserAgent: "friendly-scanner"},
	} {
		ev.Time = now
		e.intr.Observe(ev)
	}
	day := now.UTC().Format("2006-01-02")
	r := a.must(200, "GET", "/api/v1/security/report?from="+day+"&to="+day, nil)
	var rep intrusion.Report
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	d := rep.Days[0]
	if d.Bans != 1 || d.AuthFailures != 2 || d.Scanners != 1 || !rep.GeoIP ||
		len(d.TopSources) != 2 || d.TopSources[0] != (intrusion.SourceCount{Source: "198.51.100.7", Country: "FR", Count: 3}) ||
		len(d.AttackedExtensions) != 1 || d.AttackedExtensions[0].Key != "201" {
		t.Errorf("report: %s", r.body)
	}
	// Default range: the last 7 days up to today.
	if r := a.must(200, "GET", "/api/v1/security/report", nil); !contains(r.body, `"to": "`+day+`"`) {
		t.Errorf("default range: %.200s", r.body)
	}
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "aud1", Role: auth.RoleAuditor, Password: userPW})
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op1", Role: auth.RoleOperator, Password: userPW})
	for _, u := range []struct {
		name string
		code int
	}{{"aud1", 200}, {"op1", 403}} {
		c := e.client("192.0.2.51")
		c.must(200, "POST", "/api/v1/login", LoginRequest{Username: u.name, Password: userPW})
		c.must(u.code, "GET", "/api/v1/security/report", nil)
		c.must(u.code, "GET", "/intrusion", nil)
	}
}

func TestIntrusionReportRefusesBadRanges(t *testing.T) {
	_, a := claimed(t)
	for _, c := range []struct{ query, field string }{
		{"from=2026-13-01", "from"},
		{"to=tomorrow", "to"},
		{"to=2099-01-01", "to"},
		{"from=2026-05-04&to=2026-05-01", "from"},
		{"from=2025-01-01&to=2026-05-04", "from"},
		{"from=2026-05-01&from=2026-05-02", "from"},
		{"from=%00", "from"},
	} {
		r := a.do("GET", "/api/v1/security/report?"+c.query, nil)
		if r.code != http.StatusBadRequest || r.hdr.Get("Content-Type") != "application/problem+json" || r.js["field"] != c.field {
			t.Errorf("%s: %d %s %s", c.query, r.code, r.hdr.Get("Content-Type"), r.body)
		}
	}
	// The page shows the refusal instead of failing.
	if r := a.must(200, "GET", "/intrusion?from=2026-13-01", nil); !contains(r.body, `id="range-error"`) {
		t.Errorf("page: %s", r.body)
	}
}

func TestIntrusionSettingsAudited(t *testing.T) {
	e, a := claimed(t)
	if r := a.must(200, "GET", "/api/v1/security/report/settings", nil); r.js["daily_syslog"] != false {
		t.Fatalf("default: %s", r.body)
	}
	a.must(200, "PUT", "/api/v1/security/report/settings", intrusion.Settings{DailySyslog: true})
	if r := a.must(200, "GET", "/api/v1/security/report/settings", nil); r.js["daily_syslog"] != true {
		t.Errorf("after PUT: %s", r.body)
	}
	if !e.auditHas("security.report.update", "ok") {
		t.Error("settings change not audited")
	}
	// Unknown fields are refused and change nothing.
	r := a.do("PUT", "/api/v1/security/report/settings", `{"daily_syslog":false,"daily_email":true}`)
	if r.code != 400 {
		t.Errorf("unknown field: %d %s", r.code, r.body)
	}
	if set, _ := intrusion.LoadSettings(e.db); !set.DailySyslog {
		t.Error("refused body changed the setting")
	}
}

// TestIntrusionPage: the chart is inline SVG drawn by the server (no
// script, no style attribute under the strict CSP), and the figures and
// attacker-chosen strings are escaped.
func TestIntrusionPage(t *testing.T) {
	e, a := claimed(t)
	now := e.clock.Now()
	e.intr.Observe(logs.Event{Time: now, Kind: logs.KindScanner, Source: "203.0.113.5", UserAgent: `<script>alert(1)</script>`})
	e.intr.Observe(logs.Event{Time: now.Add(-24 * time.Hour), Kind: logs.KindAuthFailure, Source: "203.0.113.6:5060", User: "300"})
	r := a.must(200, "GET", "/intrusion", nil)
	body := string(r.body)
	for _, want := range []string{`<svg role="img"`, `<rect class="bar"`, "203.0.113.5", "&lt;script&gt;alert(1)&lt;/script&gt;", `id="attacked-extensions"`, "300: 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Count(body, "<script") != strings.Count(body, `<script src="/static/`) || strings.Contains(body, "style=") || strings.Contains(body, " on") && strings.Contains(body, "onclick") {
		t.Error("inline script or style on the page")
	}
	if csp := r.hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
}
