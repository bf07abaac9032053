package admin

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/netfw"
)

// uiPages is every page of the route table a signed-in admin can open.
func uiPages(t *testing.T, e *env) []string {
	t.Helper()
	var pages []string
	for _, rt := range e.srv.routes { // built once by NewServer: rebuilding it re-parses templates into the live server
		if rt.method == "GET" && !rt.public && !rt.owner && !strings.HasPrefix(rt.path, "/api/") && !strings.Contains(strings.TrimSuffix(rt.path, "{$}"), "{") {
			pages = append(pages, strings.TrimSuffix(rt.path, "{$}"))
		}
	}
	if len(pages) < 10 {
		t.Fatalf("pages %v", pages)
	}
	return pages
}

// shownHidden lists elements with the hidden attribute that still take
// space (a stylesheet's display rule beating [hidden]).
const shownHidden = `[...document.querySelectorAll("[hidden]")].filter(e => getComputedStyle(e).display !== "none")
	.map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")).join(", ")`

// crampedLabels lists labels that touch or overlap the control they name
// (a label and its input running together on one line).
const crampedLabels = `[...document.querySelectorAll("form label[for]")].flatMap(l => {
	const c = document.getElementById(l.htmlFor);
	if (!c || l.classList.contains("sr") || l.offsetParent === null || c.offsetParent === null || c.type === "checkbox" || c.type === "radio") return [];
	const a = l.getBoundingClientRect(), b = c.getBoundingClientRect();
	const sameRow = a.top < b.bottom - 1 && b.top < a.bottom - 1;
	const gap = Math.max(b.left - a.right, a.left - b.right);
	return sameRow && gap < 4 ? ["label[for=" + l.htmlFor + "] gap " + Math.round(gap) + " px"] : [];
}).join(", ")`

// TestBrowserEveryPage opens every page at a desktop's (1280 px) and a
// phone's (390 px) width, saves a screenshot of each (CI keeps
// out/screenshots), and fails on serious or critical axe-core findings, on
// elements marked hidden that are shown, on anything wider than the
// screen, and on labels running into their inputs.
func TestBrowserEveryPage(t *testing.T) {
	axe := browsertest.Axe(t)
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	c := telephonyWithTrunk(0)
	c.Trunks[0].Peers = nil
	withMediaApps(t, e, &c) // the IVR and recording editors with rows
	if _, err := e.tel.Save(c, func(n string) bool { return n == "1002" }); err != nil {
		t.Fatal(err)
	}
	dir := browsertest.ScreenshotDir(t)
	pages := append(uiPages(t, e), "/no-such-page")
	check := func(path, shot string, w int) {
		t.Helper()
		if h := p.Str(shownHidden); h != "" {
			t.Errorf("%s: hidden elements shown: %s", path, h)
		}
		if o := p.Overflow(w); o != "" {
			t.Errorf("%s at %d px: wider than the screen: %s", path, w, o)
		}
		if c := p.Str(crampedLabels); c != "" {
			t.Errorf("%s at %d px: labels running into their inputs: %s", path, w, c)
		}
		for _, v := range p.AxeRun(axe) {
			t.Errorf("%s at %s: %s", path, shot, v)
		}
		p.Screenshot(filepath.Join(dir, shot))
	}
	for _, w := range []int{1280, 390} {
		p.Viewport(w, 900)
		for _, path := range pages {
			p.Open(base+path, path)
			name := strings.Trim(strings.ReplaceAll(path, "/", "-"), "-")
			if name == "" {
				name = "dashboard"
			}
			check(path, fmt.Sprintf("%s-%d.png", name, w), w)
		}
	}
	p.Open(base+"/", "/")
	p.Click(`button[data-api="/api/v1/logout"]`)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	for _, w := range []int{1280, 390} {
		p.Viewport(w, 900)
		p.Open(base+"/login", "/login")
		check("/login", fmt.Sprintf("login-%d.png", w), w)
	}
}

// statusLevel is the level of the dashboard line named name ("" when absent).
func statusLevel(p *browsertest.Page, name string) string {
	return p.Str(fmt.Sprintf(`(() => { const li = [...document.querySelectorAll("#status li")].find(l => l.querySelector(".name").textContent === %q);
		return li ? li.dataset.level + " | " + li.textContent.replace(/\s+/g, " ").trim() + " | " + [...li.querySelectorAll("a")].map(a => a.getAttribute("href")).join(" ") : ""; })()`, name))
}

// TestBrowserDashboardStates: a new box's dashboard says what is not
// right yet, amber, with a reason and the page that fixes it; the setup
// checklist follows the real state; the charts are server-side SVG.
func TestBrowserDashboardStates(t *testing.T) {
	e, p, base := browserBox(t)
	e.srv.activity = NewActivity()
	e.pid1.mu.Lock()
	e.pid1.bans = append(e.pid1.bans, netfw.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Reason: "sip-scan", Expires: e.clock.Now().Add(time.Hour)})
	e.pid1.mu.Unlock()
	p.Viewport(1280, 900)
	p.Open(base+"/", "/")
	for name, want := range map[string]string{
		"Firewall bans": "warn | Firewall bans check 1 1 source(s) are banned: check that none is yours. Fix on /firewall | /firewall",
		"Extensions":    "warn | Extensions check none No phone can register until an extension exists. Fix on /extensions | /extensions",
		"Backups":       "",
		"Time":          "warn",
	} {
		got := statusLevel(p, name)
		if !strings.HasPrefix(got, want) {
			t.Errorf("dashboard line %s = %q, want %q…", name, got, want)
		}
	}
	if got := statusLevel(p, "Audit log"); !strings.HasPrefix(got, "ok |") {
		t.Errorf("audit line %q", got)
	}
	// Problems first.
	if first := p.Str(`document.querySelector("#status li").dataset.level`); first == "ok" {
		t.Error("an ok line comes before the problems")
	}
	steps := p.Str(`[...document.querySelectorAll("#checklist li")].map(l => l.className + ":" + l.querySelector("a").textContent).join(", ")`)
	if want := "done:Claim the box, todo:Create an extension, todo:Register a phone, todo:Add a trunk, todo:Make a test call, todo:Make a backup"; steps != want {
		t.Fatalf("checklist %q, want %q", steps, want)
	}
	// Real state moves the checklist and the lines.
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	e.srv.activity.Sample(e.clock.Now(), 1, 0)
	e.srv.activity.Sample(e.clock.Now(), 1, 7)
	p.Open(base+"/", "/")
	steps = p.Str(`[...document.querySelectorAll("#checklist li")].map(l => l.className).join(" ")`)
	if steps != "done done done todo todo todo" {
		t.Errorf("checklist after an extension and a registration: %q", steps)
	}
	if got := statusLevel(p, "Extensions"); got != "" {
		t.Errorf("extensions line still shown: %q", got)
	}
	charts := p.Str(`[...document.querySelectorAll(".charts figure")].map(f => f.id + "=" + f.querySelectorAll("svg rect.bar").length + "/" + f.querySelector("figcaption").textContent).join(" ")`)
	if charts != "chart-call=0/Calls: 0 chart-reg=1/Registered phones: 1 chart-attack=1/Attacks refused: 7" {
		t.Errorf("charts %q", charts)
	}
}

// TestBrowserFormErrors: a refused value is shown next to its field, in
// words, tied to it (aria-describedby, aria-invalid), with the save button
// usable again; the login page's second-factor card stays hidden.
func TestBrowserFormErrors(t *testing.T) {
	_, p, base := browserBox(t)
	p.Open(base+"/firewall", "/firewall")
	p.Fill(map[string]string{"#fw-zones": "lan 10.0.0.0/8\nadmins not-a-network"})
	p.Submit("#fw-edit", "")
	p.WaitFor(`document.querySelector("#fw-zones-err")`)
	var got struct {
		Text, Described, Invalid, Next, Result string
		Disabled                               bool
	}
	p.Eval(`(() => { const t = document.querySelector("#fw-zones"), e = document.querySelector("#fw-zones-err"), f = document.querySelector("#fw-edit");
		return {text: e.textContent, described: t.getAttribute("aria-describedby"), invalid: t.getAttribute("aria-invalid"),
			next: t.nextElementSibling.id, result: (f.querySelector("[data-result]") || {}).textContent || "",
			disabled: f.querySelector("button[type=submit]").disabled}; })()`, &got)
	if !strings.Contains(got.Text, `"not-a-network" is not a network`) || strings.Contains(got.Text, "bad request") || strings.Contains(got.Text, "netip") {
		t.Errorf("error text %q", got.Text)
	}
	if !strings.Contains(got.Described, "fw-zones-err") || got.Invalid != "true" || got.Next != "fw-zones-err" || got.Disabled {
		t.Errorf("error not tied to its field: %+v", got)
	}
	// Fixing the value clears the error on the next try.
	p.Fill(map[string]string{"#fw-zones": "lan 10.0.0.0/8\nadmins 192.0.2.0/24"})
	p.Submit("#fw-edit", "")
	p.WaitFor(`!document.querySelector("#fw-zones-err")`)
	// A rule naming an unknown zone: the error sits under that rule's input.
	p.Fill(map[string]string{"#fw-rule-https-admin": "admins nowhere"})
	p.Submit("#fw-edit", "")
	p.WaitFor(`document.querySelector("#fw-rule-https-admin-err")`)
	if txt := p.Str(`document.querySelector("#fw-rule-https-admin-err").textContent`); !strings.Contains(txt, `unknown zone "nowhere"`) || plumbingText.MatchString(txt) {
		t.Errorf("rule error %q", txt)
	}
	// The SIP settings form (its own script) puts a refusal next to its field too.
	p.Open(base+"/security", "/security")
	p.Fill(map[string]string{"#sip-allow": "junk"})
	p.Submit("#sip-edit", "")
	p.WaitFor(`document.querySelector("#sip-allow-err")`)
	if txt := p.Str(`document.querySelector("#sip-allow-err").textContent`); !strings.Contains(txt, `"junk"`) || plumbingText.MatchString(txt) || txt[:1] != strings.ToUpper(txt[:1]) {
		t.Errorf("SIP settings error %q", txt)
	}

	p.Click(`button[data-api="/api/v1/logout"]`)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	if h := p.Str(shownHidden); h != "" {
		t.Errorf("login page shows hidden elements: %s", h)
	}
	if d := p.Str(`getComputedStyle(document.querySelector("#totp")).display`); d != "none" {
		t.Errorf("second-factor card display %q", d)
	}
}

// TestBrowserAuditDiffAndZone: the audit log shows a change as field,
// before → after (not JSON broken per character), and dates in the box's
// time zone with UTC on hover.
func TestBrowserAuditDiffAndZone(t *testing.T) {
	e, p, base := browserBox(t)
	if err := e.srv.audit.Record(audit.Event{Actor: "root1", Action: "test.change", Outcome: audit.OK,
		Before: map[string]any{"min_length": 12, "totp_roles": []string{"admin"}, "note": strings.Repeat("x", 300)},
		After:  map[string]any{"min_length": 14, "totp_roles": []string{"admin", "operator"}, "note": strings.Repeat("x", 300)}}); err != nil {
		t.Fatal(err)
	}
	p.Viewport(1280, 900)
	p.Eval(`fetch("/api/v1/system/time", {method: "PUT", credentials: "same-origin", headers: {"Content-Type": "application/json",
		"X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content}, body: JSON.stringify({ntp: [], time_zone: "Asia/Kolkata"})}).then(r => r.status)`, nil)
	p.Open(base+"/audit?action=test.", "/audit")
	diff := p.Str(`[...document.querySelectorAll("td.change dl.diff > *")].map(e => e.textContent).join(" | ")`)
	if want := `min_length | 12 → 14 | totp_roles | ["admin"] → ["admin","operator"]`; diff != want {
		t.Errorf("diff %q, want %q", diff, want)
	}
	if h := p.Str(`String(Math.round(document.querySelector("td.change").getBoundingClientRect().height))`); len(h) > 2 {
		t.Errorf("change cell %s px tall", h)
	}
	var tm struct{ Text, Title, Datetime string }
	p.Eval(`(() => { const t = document.querySelector("#main table tbody time"); return {text: t.textContent, title: t.title, datetime: t.getAttribute("datetime")}; })()`, &tm)
	at, err := time.Parse(time.RFC3339, tm.Datetime)
	if err != nil {
		t.Fatalf("time element %+v: %v", tm, err)
	}
	ist := time.FixedZone("IST", 5*3600+1800)
	if tm.Text != at.In(ist).Format("2006-01-02 15:04:05 IST") || tm.Title != at.UTC().Format("2006-01-02 15:04:05")+" UTC" {
		t.Errorf("time shown %+v, want Asia/Kolkata with UTC on hover", tm)
	}
}

// dashboardBudget bounds what the dashboard costs to load (document,
// stylesheet, script, all uncompressed): a box on a slow uplink.
const dashboardBudget = 64 << 10

// TestBrowserDashboardWeight loads the dashboard five times and fails when
// it weighs more than dashboardBudget; it logs the weight and the time to
// first contentful paint (figures for docs/benchmarks.md, not asserted).
func TestBrowserDashboardWeight(t *testing.T) {
	_, p, base := browserBox(t)
	p.Viewport(1280, 900)
	for i := range 5 {
		p.Open(base+"/", "/")
		p.WaitFor(`performance.getEntriesByName("first-contentful-paint").length > 0`)
		var m struct {
			Bytes, Requests int
			FCP, DOM        float64
		}
		p.Eval(`(() => { const n = performance.getEntriesByType("navigation")[0], rs = performance.getEntriesByType("resource");
			return {bytes: n.decodedBodySize + rs.reduce((a, r) => a + r.decodedBodySize, 0), requests: 1 + rs.length,
				fcp: performance.getEntriesByName("first-contentful-paint")[0].startTime, dom: n.domContentLoadedEventEnd}; })()`, &m)
		t.Logf("load %d: %d bytes in %d requests, first contentful paint %.0f ms, DOMContentLoaded %.0f ms", i+1, m.Bytes, m.Requests, m.FCP, m.DOM)
		if m.Bytes > dashboardBudget {
			t.Errorf("dashboard weighs %d bytes, budget %d", m.Bytes, dashboardBudget)
		}
	}
}

// TestBrowserFieldErrors submits a refused value in each settings form
// and checks the refusal sits right after the control it is about, tied
// to it, in words without internals, starting with a capital.
func TestBrowserFieldErrors(t *testing.T) {
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	p.Viewport(390, 900)
	for _, tt := range []struct {
		page, form string
		fill       map[string]string
		control    string // the control the error belongs to
		want       string
	}{
		{"/extensions", "#ext-create", map[string]string{"#user": "1002"}, "#user", "exists"},
		{"/users", `form[data-api="/api/v1/accounts"]`, map[string]string{"#reauth-password": adminPW, "#nu": "Bad.User", "#np": userPW}, "#nu", "user name"},
		{"/users", `form[data-api="/api/v1/accounts"]`, map[string]string{"#reauth-password": "not-my-password-1", "#nu": "op7", "#np": userPW}, "#reauth-password", "current password"},
		{"/security", `form[data-api="/api/v1/security/origins"]`, map[string]string{`form[data-api="/api/v1/security/origins"] textarea`: "ftp://x"}, `form[data-api="/api/v1/security/origins"] textarea`, `"ftp://x"`},
		{"/security", "#metrics", map[string]string{"#metrics-nets": "junk"}, "#metrics-nets", `"junk"`},
		{"/security", "#syslog", map[string]string{"#syslog-addr": "no port here"}, "#syslog-addr", "host:port"},
		{"/system", "#time-edit", map[string]string{"#time-tz": "Mars/Base"}, "#time-tz", "Mars/Base"},
	} {
		p.Open(base+tt.page, tt.page)
		p.Fill(tt.fill)
		p.Submit(tt.form, "")
		p.WaitFor(fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-invalid") === "true"`, tt.control))
		var got struct{ Next, Text, Described string }
		p.Eval(fmt.Sprintf(`(() => { const c = document.querySelector(%q), n = c.nextElementSibling;
			return {next: n && n.classList.contains("field-error") ? n.id : "", text: n ? n.textContent : "", described: c.getAttribute("aria-describedby") || ""}; })()`, tt.control), &got)
		if got.Next == "" || !strings.Contains(got.Described, got.Next) {
			t.Errorf("%s %s: error not next to %s: %+v", tt.page, tt.form, tt.control, got)
			continue
		}
		if !strings.Contains(strings.ToLower(got.Text), strings.ToLower(tt.want)) || plumbingText.MatchString(got.Text) || got.Text[:1] != strings.ToUpper(got.Text[:1]) {
			t.Errorf("%s %s: error %q, want one sentence with %q", tt.page, tt.form, got.Text, tt.want)
		}
	}
}

// TestBrowserNetworkMoveSaysWhere: a network change that takes away the
// address the page was opened at does not reload the page there (the box
// is about to leave it): it links to the new address to confirm from.
// (One opened elsewhere reloads as before: TestBrowserSystemNetworkAndTime.)
func TestBrowserNetworkMoveSaysWhere(t *testing.T) {
	_, p, base := browserBox(t)
	p.Open(base+"/system", "/system")
	// The page is opened at one of the box's own addresses.
	p.Eval(`document.querySelector("#net-edit").dataset.live = "127.0.0.1 192.0.2.99"`, nil)
	p.Fill(map[string]string{"#nic-eth0-mode": "static", "#nic-eth0-addrs": "192.0.2.10/24 2001:db8::10/64", "#nic-eth0-gw4": "192.0.2.1"})
	p.Eval(`window.__oldPage = true`, nil)
	p.Submit("#net-edit", "")
	p.WaitFor(`document.querySelector("#net-edit [data-result]").textContent.includes("leaves this address")`)
	var got struct {
		Links []string
		Old   bool
		Text  string
	}
	p.Eval(`(() => { const r = document.querySelector("#net-edit [data-result]");
		return {links: [...r.querySelectorAll("a")].map(a => a.getAttribute("href")), old: window.__oldPage === true, text: r.textContent}; })()`, &got)
	port := base[strings.LastIndex(base, ":"):]
	want := []string{"https://192.0.2.10" + port + "/system", "https://[2001:db8::10]" + port + "/system"}
	if fmt.Sprint(got.Links) != fmt.Sprint(want) || !got.Old || !strings.Contains(got.Text, "confirm there within") {
		t.Errorf("after a change of address: %+v, want links %v and no reload", got, want)
	}
}
