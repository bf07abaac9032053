package admin

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// browserBox serves a fresh box's admin UI over TLS the way edgepbxd does
// (numbered connections for firewall confirmations; PID 1's control
// socket and firewall committer are the env's real ones over an in-memory
// ruleset), and claims it through the claim page in headless Chromium.
func browserBox(t *testing.T) (*env, *browsertest.Page, string) {
	t.Helper()
	return browserBoxProto(t, true)
}

// browserBoxProto is browserBox over HTTP/2 (as edgepbxd with a browser)
// or HTTP/1.1 only.
func browserBoxProto(t *testing.T, http2 bool) (*env, *browsertest.Page, string) {
	t.Helper()
	bin := browsertest.Chromium(t)
	e := newEnv(t)
	e.srv.names = append(e.srv.names, "127.0.0.1")
	ts := httptest.NewUnstartedServer(e.srv)
	ts.EnableHTTP2 = http2
	ts.Config.ConnContext = e.srv.ConnContext
	ts.StartTLS()
	t.Cleanup(ts.Close)
	p := browsertest.NewPage(t, bin)
	p.Open(ts.URL+"/", "/claim")
	p.Fill(map[string]string{"#setup_code": setupCode, "#username": "root1", "#password": adminPW})
	p.Submit(`form[data-api="/api/v1/claim"]`, "")
	p.WaitFor(`location.pathname === "/" && document.readyState === "complete" && document.querySelector("h1").textContent === "Dashboard"`)
	return e, p, ts.URL
}

// TestBrowserPhoneWidth opens the main pages on a 360 px wide phone screen
// and fails when any of them scrolls sideways (wide tables scroll inside
// their own box, which is fine).
func TestBrowserPhoneWidth(t *testing.T) {
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
	p.Viewport(360, 780)
	// Every page of the route table a signed-in admin can open.
	var pages []string
	for _, rt := range e.srv.routes { // built once by NewServer: rebuilding it re-parses templates into the live server
		if rt.method == "GET" && !rt.public && !rt.owner && !strings.HasPrefix(rt.path, "/api/") && !strings.Contains(strings.TrimSuffix(rt.path, "{$}"), "{") {
			pages = append(pages, strings.TrimSuffix(rt.path, "{$}"))
		}
	}
	if len(pages) < 10 {
		t.Fatalf("pages %v", pages)
	}
	for _, path := range pages {
		p.Open(base+path, path)
		if o := p.Overflow(360); o != "" {
			t.Errorf("%s scrolls sideways at 360 px: %s", path, o)
		}
	}
	t.Logf("no sideways scrolling at 360 px: %v", pages)
	p.Click(`button[data-api="/api/v1/logout"]`)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	if o := p.Overflow(360); o != "" {
		t.Errorf("/login scrolls sideways at 360 px: %s", o)
	}
}
