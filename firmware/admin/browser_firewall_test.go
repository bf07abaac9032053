package admin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/netfw"
)

// TestBrowserFirewallEditor drives the firewall page in headless Chromium
// against PID 1's real control socket and committer (over an in-memory
// ruleset; netfw's own tests apply real ones in network namespaces): a
// change that would lock the admin (127.0.0.1) out is refused with PID 1's
// message and applies nothing; a zone and a rule edited and applied show the
// pending banner counting down to the revert; confirmed from the reloaded
// page (a new connection), the change is the policy in force. Over HTTP/1.1
// the browser keeps connections opened before the change (over HTTP/2,
// sometimes a spare one): a confirmation on one is refused and closes it,
// and the page tries again on a new one.
func TestBrowserFirewallEditor(t *testing.T) {
	for _, proto := range []struct {
		name  string
		http2 bool
	}{{"HTTP/2", true}, {"HTTP/1.1", false}} {
		t.Run(proto.name, func(t *testing.T) { testBrowserFirewallEditor(t, proto.http2) })
	}
}

func testBrowserFirewallEditor(t *testing.T, http2 bool) {
	e, p, base := browserBoxProto(t, http2)
	p.Open(base+"/firewall", "/firewall")
	if p.Str(`String(document.querySelector(".pending") !== null)`) != "false" {
		t.Fatal("pending banner before any change")
	}
	rule := `#fw-rule-` + netfw.SvcHTTPS
	form := "#fw-edit"
	applies := e.pid1.ruleset.applies

	// Admin HTTPS only from a network the browser is not in.
	p.Fill(map[string]string{"#fw-zones": "lan 10.0.0.0/8\nadmins 192.168.7.0/24", rule: "admins"})
	p.Submit(form, form+" [data-result]")
	if msg := p.Result(form + " [data-result]"); !strings.Contains(msg, "lock the admin out") || !strings.Contains(msg, "127.0.0.1") {
		t.Fatalf("lockout answered %q", msg)
	}
	if cls := p.Str(`document.querySelector("#fw-edit [data-result]").className`); cls != "bad" {
		t.Errorf("refusal shown as %q", cls)
	}
	if e.pid1.ruleset.applies != applies || p.Str(`location.pathname`) != "/firewall" {
		t.Fatal("a refused policy was applied")
	}
	if a := e.lastAudit("firewall.policy.set"); a.Outcome != audit.Failed {
		t.Fatalf("refusal audit %+v", a)
	}

	// A new zone for the admins (the browser's loopback) and the admin
	// service opened to it and to lan.
	p.Fill(map[string]string{"#fw-zones": "lan 10.0.0.0/8\nadmins 127.0.0.0/8", rule: "admins lan"})
	p.SubmitNav(form)
	p.WaitFor(`document.querySelector(".pending") !== null`)
	if banner := p.Str(`document.querySelector(".pending").innerText`); !strings.Contains(banner, "Firewall change pending") {
		t.Fatalf("banner %q", banner)
	}
	left, err := strconv.Atoi(p.Str(`document.querySelector("[data-countdown]").textContent`))
	if err != nil || left <= 0 || left > 120 {
		t.Fatalf("countdown %d %v", left, err)
	}
	p.WaitFor(`Number(document.querySelector("[data-countdown]").textContent) < ` + strconv.Itoa(left)) // it counts down
	if z := e.pid1.ruleset.zones(); !slices.Equal(z, []string{"lan", "admins"}) {
		t.Fatalf("pending policy not in force: %v", z)
	}
	// The editor shows the pending change, the tables the confirmed policy.
	if v := p.Str(`document.querySelector("` + rule + `").value`); v != "admins lan" {
		t.Errorf("editor rule %q", v)
	}

	confirm := `form[data-api="/api/v1/firewall/policy/confirm"]`
	p.Eval(`window.__oldPage = true`, nil)
	p.Submit(confirm, confirm+" [data-result]")
	answer := fmt.Sprintf(`document.querySelector(%q)`, confirm+" [data-result]")
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete" || ` + answer + `.textContent !== ""`)
	if p.Str(`String(window.__oldPage)`) == "true" {
		t.Fatalf("confirmation refused: %s", p.Str(answer+`.textContent`))
	}
	if p.Str(`String(document.querySelector(".pending") !== null)`) != "false" {
		t.Fatal("still pending after the confirmation")
	}
	zones := p.Str(`document.querySelector("main").innerText`)
	if !strings.Contains(zones, "127.0.0.0/8") {
		t.Fatalf("confirmed zones lack the new one:\n%s", zones)
	}
	st, err := e.pid1.GetPolicy(t.Context())
	if err != nil || st.Pending != nil || len(st.Confirmed.Zones) != 2 || st.Confirmed.Zones[1].Name != "admins" {
		t.Fatalf("policy in PID 1 %+v %v", st, err)
	}
	if a := e.lastAudit("firewall.policy.confirm"); a.Outcome != audit.OK || a.Actor != "root1" {
		t.Fatalf("confirm audit %+v", a)
	}
}
