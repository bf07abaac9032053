package admin

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// kbHelpers is installed in each page the keyboard walk visits.
// interactive() lists, in document order, the controls a keyboard user
// must be able to reach: links, buttons, form fields, the summary of each
// details (the contents of a closed one are not shown, so not expected),
// and anything else given a non-negative tabindex. A control with
// tabindex=-1 is still expected: that is what the walk must catch. One
// radio per group. Each element gets a stable number (id()) and its
// unfocused outline and shadow are noted (noteBase()).
const kbHelpers = `window.__kb = (() => {
	const ids = new WeakMap(), els = [], base = new WeakMap();
	const id = el => { if (!ids.has(el)) { ids.set(el, els.length); els.push(el); } return ids.get(el); };
	const desc = el => { if (!el || el === document.body || el === document.documentElement) return "(page)";
		const t = (el.getAttribute("aria-label") || el.textContent || el.value || el.name || "").trim().replace(/\s+/g, " ").slice(0, 30);
		return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.name ? "[name=" + el.name + "]" : "") + (t ? " \"" + t + "\"" : ""); };
	const shown = el => { for (let a = el.parentElement; a; a = a.parentElement) {
			if (a.tagName === "DETAILS" && !a.open && !(el.tagName === "SUMMARY" && el.parentElement === a)) return false; }
		return !el.closest("[inert]") && el.checkVisibility({visibilityProperty: true, opacityProperty: false}); };
	const interactive = () => { const radios = new Set(), out = [];
		for (const el of document.querySelectorAll('a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex], [contenteditable]')) {
			if (el.disabled || !shown(el)) continue;
			if (el.tagName === "SUMMARY" && el.parentElement.tagName !== "DETAILS") continue;
			const native = el.matches("a[href], button, input, select, textarea, summary");
			if (!native && el.tabIndex < 0) continue; // script-focus targets (headings after an update)
			if (el.type === "radio" && el.name) { const k = (el.form ? "f" : "d") + el.name; if (radios.has(k)) continue;
				const g = [...document.querySelectorAll('input[type=radio]')].filter(r => r.name === el.name && r.form === el.form);
				if ((g.find(r => r.checked) || g[0]) !== el) continue; radios.add(k); }
			out.push(el); }
		return out; };
	const ring = el => { const s = getComputedStyle(el);
		return {outline: s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0 ? s.outlineStyle + " " + s.outlineWidth + " " + s.outlineColor : "",
			shadow: s.boxShadow === "none" ? "" : s.boxShadow}; };
	// contrast: the focus outline against what is behind it (the nearest
	// ancestor background), WCAG's ratio; 1.4.11 asks 3:1 of a focus ring.
	const rgb = c => { const m = c.match(/[\d.]+/g) || [0, 0, 0, 0]; return {r: +m[0], g: +m[1], b: +m[2], a: m.length > 3 ? +m[3] : 1}; };
	const lum = c => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
		return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
	const behind = el => { for (let a = el.parentElement; a; a = a.parentElement) { const c = rgb(getComputedStyle(a).backgroundColor); if (c.a > 0.5) return c; }
		return {r: 255, g: 255, b: 255, a: 1}; };
	const contrast = el => { const s = getComputedStyle(el); if (s.outlineStyle === "none") return 0;
		const a = lum(rgb(s.outlineColor)), b = lum(behind(el)); return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05); };
	const noteBase = () => { for (const el of interactive()) if (!base.has(el) && el !== document.activeElement) base.set(el, ring(el)); };
	// now: the focused element, whether it shows focus, and whether it is a closed details' summary.
	const now = () => { const el = document.activeElement;
		if (!el || el === document.body || el === document.documentElement) return {id: -1, desc: "(page)"};
		const f = ring(el), b = base.get(el) || {outline: "", shadow: ""};
		const visible = (f.outline !== "" || f.shadow !== "") && (f.outline !== b.outline || f.shadow !== b.shadow);
		return {id: id(el), desc: desc(el), visible, ring: JSON.stringify(f), closedSummary: el.tagName === "SUMMARY" && !el.parentElement.open,
			contrast: contrast(el), onScreen: (r => r.width >= 2 && r.height >= 2 && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth)(el.getBoundingClientRect())}; };
	return {id, desc, interactive, noteBase, now, expected: () => interactive().map(el => ({id: id(el), desc: desc(el)}))};
})(); true`

type kbStep struct {
	ID            int
	Desc          string
	Visible       bool
	Ring          string
	ClosedSummary bool
	Contrast      float64
	OnScreen      bool
}

// tabWalk presses Tab from the top of the page until focus leaves it and
// returns what is wrong: a control not reached or reached out of order, a
// focused control with no visible focus indicator, a trap (focus coming
// back to a control before the page ends). A closed details is opened
// from the keyboard (Enter on its summary) and its contents walked too.
func tabWalk(t *testing.T, p *browsertest.Page) (problems []string, steps int) {
	t.Helper()
	p.Eval(kbHelpers, nil)
	// Start at the top, as on a fresh load: Tab goes on from the last
	// focused element (a card's heading), so focus a non-tabbable mark first.
	p.Eval(`(() => { const m = document.createElement("span"); m.id = "kb-start"; m.tabIndex = -1; document.body.prepend(m); m.focus(); window.scrollTo(0, 0); __kb.noteBase(); })()`, nil)
	defer p.Eval(`document.querySelector("#kb-start").remove()`, nil)
	limit := 2*kbInt(p, `__kb.interactive().length`) + 10
	var visited []kbStep
	seen := map[int]bool{}
	same := 0
	for len(visited) <= limit {
		p.Press("Tab", 0)
		var s kbStep
		p.Eval(`__kb.now()`, &s)
		if s.ID < 0 {
			break // focus left the page: the end
		}
		if len(visited) > 0 && s.ID == visited[len(visited)-1].ID {
			// Tab moves between the parts of one control (a date's day,
			// month, year); more than a few is a trap.
			if same++; same > 6 {
				problems = append(problems, fmt.Sprintf("focus trap: Tab stays on %s", s.Desc))
				break
			}
			continue
		}
		same = 0
		if len(visited) > 0 && s.ID == visited[0].ID {
			break // focus wrapped round to the top: the end
		}
		if seen[s.ID] {
			problems = append(problems, fmt.Sprintf("focus trap: Tab came back to %s after %d steps", s.Desc, len(visited)))
			break
		}
		seen[s.ID] = true
		visited = append(visited, s)
		if !s.Visible {
			problems = append(problems, fmt.Sprintf("no visible focus indicator on %s (focused %s)", s.Desc, s.Ring))
		}
		if s.Visible && s.Contrast > 0 && s.Contrast < 3 {
			problems = append(problems, fmt.Sprintf("focus indicator of %s contrasts %.1f:1 with its background, want 3:1 (%s)", s.Desc, s.Contrast, s.Ring))
		}
		if !s.OnScreen {
			problems = append(problems, fmt.Sprintf("focused %s is not on screen", s.Desc))
		}
		if s.ClosedSummary {
			p.Press("Enter", 0)
			if !kbBool(p, `document.activeElement.parentElement.open`) {
				problems = append(problems, fmt.Sprintf("Enter did not open %s", s.Desc))
			}
			p.Eval(`__kb.noteBase()`, nil)
		}
	}
	if len(visited) > limit {
		problems = append(problems, fmt.Sprintf("focus trap: Tab did not leave the page after %d steps", limit))
	}
	var want []kbStep
	p.Eval(`__kb.expected()`, &want)
	got := map[int]int{}
	for i, s := range visited {
		got[s.ID] = i
	}
	last := -1
	for _, w := range want {
		i, ok := got[w.ID]
		switch {
		case !ok:
			problems = append(problems, "not reachable with Tab: "+w.Desc)
		case i < last:
			problems = append(problems, fmt.Sprintf("reached out of order: %s (step %d, after step %d)", w.Desc, i+1, last+1))
		default:
			last = i
		}
	}
	return problems, len(visited)
}

// TestBrowserKeyboardEveryPage walks every page at 1280 px with the Tab
// key only (real key events): every link, button, field and summary is
// reached, in document order, each shows a visible focus indicator, and
// Tab leaves the page at the end (no trap). Then an extension is created
// with the keyboard only.
func TestBrowserKeyboardEveryPage(t *testing.T) {
	bin := browsertest.Chromium(t)
	e := newEnv(t)
	e.srv.names = append(e.srv.names, "127.0.0.1")
	ts := httptest.NewUnstartedServer(e.srv)
	ts.EnableHTTP2 = true
	ts.Config.ConnContext = e.srv.ConnContext
	ts.StartTLS()
	t.Cleanup(ts.Close)
	base := ts.URL
	p := browsertest.NewPage(t, bin)
	// Headless has no focused window; without this, focus and :focus-visible never apply.
	p.Call("Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil)
	p.Viewport(1280, 900)
	walk := func(path string) {
		t.Helper()
		problems, n := tabWalk(t, p)
		for _, pr := range problems {
			t.Errorf("%s: %s", path, pr)
		}
		t.Logf("%s: %d controls walked", path, n)
	}

	// The claim page, then the claim itself from the keyboard.
	p.Open(base+"/", "/claim")
	walk("/claim")
	p.Eval(`document.activeElement && document.activeElement.blur()`, nil)
	for _, f := range []struct{ id, v string }{{"setup_code", setupCode}, {"username", "root1"}, {"password", adminPW}} {
		tabTo(t, p, "#"+f.id)
		p.Type(f.v)
	}
	p.Press("Enter", 0)
	p.WaitFor(`location.pathname === "/" && document.readyState === "complete" && document.querySelector("h1").textContent === "Dashboard"`)

	exts := liveEdge(t, e).Extensions() // the connect-a-phone card needs the SIP edge
	if err := exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	c := telephonyWithTrunk(0)
	c.Trunks[0].Peers = nil
	withMediaApps(t, e, &c) // the IVR and recording editors with rows
	if _, err := e.tel.Save(c, func(n string) bool { return n == "1002" }); err != nil {
		t.Fatal(err)
	}
	for _, path := range append(uiPages(t, e), "/no-such-page") {
		p.Open(base+path, path)
		walk(path)
	}

	// The first Tab offers to skip the menu; after Enter on it the next
	// Tab lands on the page's first control, not on the menu.
	p.Open(base+"/telephony", "/telephony")
	p.Eval(kbHelpers, nil)
	p.Press("Tab", 0)
	if d := p.Str(`document.activeElement.className + " " + document.activeElement.getAttribute("href")`); d != "skip #main" {
		t.Errorf("first Tab focuses %q, want the skip link", d)
	}
	p.Press("Enter", 0)
	p.WaitFor(`location.hash === "#main"`)
	p.Press("Tab", 0)
	if !kbBool(p, `document.activeElement === [...document.querySelectorAll("#main a[href], #main button, #main input:not([type=hidden]), #main select, #main textarea, #main summary")].find(e => e.checkVisibility())`) {
		t.Errorf("after the skip link, Tab focuses %s, want the first control in main", p.Str(`__kb.desc(document.activeElement)`))
	}

	// Create an extension with the keyboard only: Tab to the field, type,
	// Tab to Create, Space; the card shows the new extension.
	p.Open(base+"/extensions", "/extensions")
	p.Eval(`document.activeElement && document.activeElement.blur()`, nil)
	tabTo(t, p, "#user")
	p.Type("1077")
	tabTo(t, p, `#ext-create button[type=submit]`)
	p.Press("Space", 0)
	p.WaitFor(`document.querySelector('[data-card="1077"]')`)
	if !slices.Contains(exts.List(), "1077") {
		t.Error("extension 1077 not created from the keyboard")
	}
	// The open card (copy buttons, Dismiss) is walked too; Dismiss from the keyboard.
	walk("/extensions with a card")
	p.Eval(`document.activeElement && document.activeElement.blur()`, nil)
	tabTo(t, p, `[data-card="1077"] button.dismiss`)
	p.Press("Enter", 0)
	p.WaitFor(`!document.querySelector('[data-card="1077"]')`)
	// The list's buttons work from the keyboard too: Enter on "Connect a phone".
	p.Eval(`document.activeElement && document.activeElement.blur()`, nil)
	tabTo(t, p, `button[data-connect="1002"]`)
	p.Press("Enter", 0)
	p.WaitFor(`document.querySelector('[data-card="1002"]')`)

	p.Open(base+"/", "/")
	tabTo(t, p, `button[data-api="/api/v1/logout"]`)
	p.Press("Enter", 0)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	walk("/login")
}

func kbBool(p *browsertest.Page, js string) bool {
	var b bool
	p.Eval(js, &b)
	return b
}

func kbInt(p *browsertest.Page, js string) int {
	var n int
	p.Eval(js, &n)
	return n
}

// tabTo presses Tab until sel has the focus (failing after 300 presses).
func tabTo(t *testing.T, p *browsertest.Page, sel string) {
	t.Helper()
	for range 300 {
		p.Press("Tab", 0)
		if kbBool(p, fmt.Sprintf(`document.activeElement === document.querySelector(%q)`, sel)) {
			return
		}
	}
	t.Fatalf("Tab never reached %s", sel)
}

// TestBrowserKeyboardWalkCatches: the walk fails a page where a button is
// taken out of the tab order or a focus indicator is removed (the walk
// must be able to fail).
func TestBrowserKeyboardWalkCatches(t *testing.T) {
	_, p, base := browserBox(t)
	p.Call("Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil)
	p.Viewport(1280, 900)
	for _, tt := range []struct{ name, js, want string }{
		{"unreachable", `document.querySelector('button[data-api="/api/v1/logout"]').tabIndex = -1`, `not reachable with Tab: button "Log out"`},
		{"no ring", `document.querySelector("#ext-create button").style.setProperty("outline", "none", "important")`, `no visible focus indicator on button "Create"`},
		{"trap", `document.querySelector("#user").addEventListener("keydown", ev => { if (ev.key === "Tab") { ev.preventDefault(); } })`, "focus trap"},
	} {
		p.Open(base+"/extensions", "/extensions")
		p.Eval(tt.js, nil)
		problems, _ := tabWalk(t, p)
		t.Logf("%s: %q", tt.name, problems)
		if !strings.Contains(strings.Join(problems, "\n"), tt.want) {
			t.Errorf("%s: walk found %q, want %q", tt.name, problems, tt.want)
		}
	}
}
