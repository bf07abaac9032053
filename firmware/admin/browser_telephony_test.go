package admin

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// TestBrowserDialPlanEditor drives the dial plan page's per-field editor in
// headless Chromium: add a trunk, routes and a DID with the forms, save,
// reload and find every value again (the password stored, never shown); a
// bad value is refused with its message next to its field and changes
// nothing; an edit without the password keeps it.
func TestBrowserDialPlanEditor(t *testing.T) {
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	p.Viewport(360, 780) // a phone: the editor must work there too
	p.Open(base+"/telephony", "/telephony")

	last := func(kind, key string) string {
		return fmt.Sprintf(`#tel-%s > fieldset.row:last-of-type [data-key=%q]`, kind, key)
	}
	p.Click(`button[data-add="trunks"]`)
	p.Fill(map[string]string{
		last("trunks", "name"): "itsp", `#tel-trunks > fieldset.row:last-of-type input[data-key="host"]`: "sip.example.net",
		last("trunks", "transport"): "tls", last("trunks", "username"): "u1", last("trunks", "domain"): "sip.example.net",
		last("trunks", "password"): "trunk-Secret-77", last("trunks", "peers"): "192.0.2.0/28 198.51.100.7/32",
		last("trunks", "srtp"): "required", last("trunks", "caller_id"): "+4930555",
		last("trunks", "limits/max_concurrent"): "10", last("trunks", "limits/max_per_hour"): "120",
	})
	// The port is the second control for "host".
	p.Fill(map[string]string{`#tel-trunks > fieldset.row:last-of-type input[data-key="host"][type="number"]`: "5061"})
	p.Click(`button[data-add="routes"]`)
	p.Fill(map[string]string{last("routes", "trunk"): "itsp"}) // the default route
	p.Click(`button[data-add="routes"]`)
	p.Fill(map[string]string{last("routes", "prefix"): "0", last("routes", "trunk"): "itsp", last("routes", "strip"): "1", last("routes", "add"): "49"})
	p.Click(`button[data-add="dids"]`)
	p.Fill(map[string]string{last("dids", "number"): "4930555", last("dids", "extension"): "1002"})
	p.Click(`button[data-add="extensions"]`)
	p.Fill(map[string]string{last("extensions", "number"): "1002", last("extensions", "limits/max_per_hour"): "5", last("extensions", "caller_id"): "+4930551"})
	p.Click(last("trunks", "assert_identity"))
	p.Eval(`document.querySelector('#tel-extensions > fieldset.row:last-of-type input[type=checkbox][value="international"]').click()`, nil)
	p.Fill(map[string]string{`#tel-park [data-key="first"]`: "71", `#tel-park [data-key="count"]`: "4", `#tel-park [data-key="timeout"]`: "60"})
	p.SubmitNav("#tel-edit")

	// Saved: the store has it, and the reloaded page shows it.
	cur := e.tel.Current()
	if cur.Version != 1 || len(cur.Trunks) != 1 || len(cur.Routes) != 2 || len(cur.DIDs) != 1 || len(cur.Extensions) != 1 {
		t.Fatalf("saved %+v", cur)
	}
	tr := cur.Trunks[0]
	if tr.Name != "itsp" || tr.Host != "sip.example.net:5061" || tr.Transport != "tls" || tr.Auth != pbxconfig.TrunkAuthRegister ||
		tr.Username != "u1" || tr.Domain != "sip.example.net" || !tr.PasswordSet || tr.SRTP != "required" || tr.CallerID != "+4930555" ||
		tr.Limits != (dialplan.Limits{MaxConcurrent: 10, MaxPerHour: 120}) || len(tr.Peers) != 2 || tr.Peers[1].String() != "198.51.100.7/32" {
		t.Fatalf("trunk %+v", tr)
	}
	if pw, err := e.tel.TrunkPassword("itsp"); err != nil || string(pw) != "trunk-Secret-77" {
		t.Fatalf("password %q %v", pw, err)
	}
	if !tr.AssertIdentity || len(cur.CallerIDs) != 1 || cur.CallerIDs["1002"] != "+4930551" {
		t.Fatalf("identity: assert %v, caller IDs %v", tr.AssertIdentity, cur.CallerIDs)
	}
	if !reflect.DeepEqual(cur.Routes[1], dialplan.Route{Prefix: "0", Trunk: "itsp", Strip: 1, Add: "49"}) || !reflect.DeepEqual(cur.Routes[0], dialplan.Route{Trunk: "itsp"}) {
		t.Fatalf("routes %+v", cur.Routes)
	}
	if cur.Features.Park != (features.ParkSlots{First: "71", Count: 4, Timeout: 60}) {
		t.Fatalf("park slots %+v", cur.Features.Park)
	}
	if x := cur.Extensions[0]; x.Number != "1002" || !slices.Equal(x.Classes, []dialplan.Class{dialplan.International}) || x.Limits.MaxPerHour != 5 {
		t.Fatalf("extension settings %+v", x)
	}
	if !strings.Contains(string(p.Str(`document.documentElement.outerHTML`)), "itsp") ||
		strings.Contains(p.Str(`document.documentElement.outerHTML`), "trunk-Secret-77") {
		t.Fatal("the page lacks the trunk or shows its password")
	}
	for sel, want := range map[string]string{
		last("trunks", "name"): "itsp", `#tel-trunks input[data-key="host"]:not([type="number"])`: "sip.example.net",
		`#tel-trunks input[data-key="host"][type="number"]`: "5061", last("trunks", "transport"): "tls",
		last("trunks", "username"): "u1", last("trunks", "password"): "", last("trunks", "peers"): "192.0.2.0/28 198.51.100.7/32",
		last("trunks", "srtp"): "required", last("trunks", "caller_id"): "+4930555",
		last("trunks", "limits/max_concurrent"): "10", last("trunks", "limits/max_per_hour"): "120",
		last("routes", "prefix"): "0", last("routes", "trunk"): "itsp", last("routes", "strip"): "1", last("routes", "add"): "49",
		last("extensions", "caller_id"): "+4930551",
		last("dids", "number"):          "4930555", last("dids", "extension"): "1002", last("extensions", "limits/max_per_hour"): "5",
		`#tel-version`: "1", `#tel-park [data-key="first"]`: "71", `#tel-park [data-key="count"]`: "4", `#tel-park [data-key="timeout"]`: "60",
	} {
		got := p.Str(fmt.Sprintf(`(() => { const el = document.querySelector(%q); return el.value !== undefined ? el.value : el.textContent; })()`, sel))
		if got != want {
			t.Errorf("after reload %s = %q, want %q", sel, got, want)
		}
	}
	if p.Str(fmt.Sprintf(`String(document.querySelector(%q).checked)`, last("trunks", "assert_identity"))) != "true" {
		t.Error("after reload the trunk does not assert identity")
	}
	if hint := p.Str(fmt.Sprintf(`document.getElementById(document.querySelector(%q).dataset.hint).textContent`, last("trunks", "password"))); !strings.Contains(hint, "stored") {
		t.Errorf("password hint %q", hint)
	}

	refused := func() string {
		t.Helper()
		p.Submit("#tel-edit", "#tel-status")
		p.WaitFor(`document.querySelector("#tel-status").textContent.startsWith("Not saved")`)
		return p.Str(`document.querySelector("#tel-status").textContent`)
	}
	// A bad host: refused, the message under the host field, linked to it
	// and focused; nothing saved.
	host := `#tel-trunks input[data-key="host"]:not([type="number"])`
	p.Fill(map[string]string{host: "sip example net"})
	if msg := refused(); !strings.Contains(msg, "Not saved") || !strings.Contains(msg, "host") {
		t.Fatalf("status %q", msg)
	}
	errID := p.Str(fmt.Sprintf(`document.querySelector(%q).dataset.err`, host))
	if got := p.Str(fmt.Sprintf(`document.getElementById(%q).hidden ? "" : document.getElementById(%q).textContent`, errID, errID)); !strings.Contains(got, `host "sip example net:5061"`) {
		t.Fatalf("error next to the host field: %q", got)
	}
	if d := p.Str(fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-describedby") + " " + document.querySelector(%q).getAttribute("aria-invalid")`, host, host)); !strings.Contains(d, errID) || !strings.HasSuffix(d, " true") {
		t.Fatalf("host field not linked to its error: %q", d)
	}
	if p.Str(`document.activeElement.dataset.key`) != "host" {
		t.Error("the refused field is not focused")
	}
	// A source network that is no CIDR network, in the other list.
	p.Fill(map[string]string{host: "sip.example.net", last("trunks", "peers"): "192.0.2.0/28 not-a-net"})
	if msg := refused(); !strings.Contains(msg, `"not-a-net"`) {
		t.Fatalf("status %q", msg)
	}
	if p.Str(fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-invalid")`, host)) == "true" {
		t.Error("the previous error is still shown")
	}
	if got := p.Str(fmt.Sprintf(`document.getElementById(document.querySelector(%q).dataset.err).textContent`, last("trunks", "peers"))); !strings.Contains(got, "not-a-net") {
		t.Fatalf("error next to the source networks: %q", got)
	}
	if e.tel.Current().Version != 1 {
		t.Fatal("a refused change was saved")
	}

	// An edit without the password keeps it; a deleted route is gone.
	p.Fill(map[string]string{last("trunks", "peers"): "192.0.2.0/28", last("trunks", "limits/max_per_hour"): "300"})
	del := `#tel-routes > fieldset.row:last-of-type button.danger`
	if l := p.Str(`document.querySelector("` + del + `").getAttribute("aria-label")`); l != "Delete Route: 0" {
		t.Errorf("delete button named %q", l)
	}
	p.Click(del)
	p.SubmitNav("#tel-edit")
	cur = e.tel.Current()
	if cur.Version != 2 || cur.Trunks[0].Limits.MaxPerHour != 300 || len(cur.Routes) != 1 || !cur.Trunks[0].PasswordSet {
		t.Fatalf("second save %+v", cur)
	}
	if pw, _ := e.tel.TrunkPassword("itsp"); string(pw) != "trunk-Secret-77" {
		t.Fatalf("password lost: %q", pw)
	}
}
