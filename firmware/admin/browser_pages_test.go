package admin

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// uiPages is every page of the route table a signed-in admin can open.
func uiPages(t *testing.T, e *env) []string {
	t.Helper()
	var pages []string
	for _, rt := range e.srv.routeTable() {
		if rt.method == "GET" && !rt.public && !strings.HasPrefix(rt.path, "/api/") && !strings.Contains(strings.TrimSuffix(rt.path, "{$}"), "{") {
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

// TestBrowserEveryPage opens every page at a desktop's (1280 px) and a
// phone's (390 px) width, saves a screenshot of each (CI keeps
// out/screenshots), and fails on serious or critical axe-core findings and
// on elements marked hidden that are shown.
func TestBrowserEveryPage(t *testing.T) {
	axe := browsertest.Axe(t)
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	c := telephonyWithTrunk(0)
	c.Trunks[0].Peers = nil
	if _, err := e.tel.Save(c, func(n string) bool { return n == "1002" }); err != nil {
		t.Fatal(err)
	}
	dir := browsertest.ScreenshotDir(t)
	pages := append(uiPages(t, e), "/no-such-page")
	check := func(path, shot string) {
		t.Helper()
		if h := p.Str(shownHidden); h != "" {
			t.Errorf("%s: hidden elements shown: %s", path, h)
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
			check(path, fmt.Sprintf("%s-%d.png", name, w))
		}
	}
	p.Click(`button[data-api="/api/v1/logout"]`)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	for _, w := range []int{1280, 390} {
		p.Viewport(w, 900)
		p.Open(base+"/login", "/login")
		check("/login", fmt.Sprintf("login-%d.png", w))
	}
}
