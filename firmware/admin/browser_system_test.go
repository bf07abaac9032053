package admin

import (
	"fmt"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
)

// TestBrowserSystemNetworkAndTime drives the System page in headless
// Chromium against PID 1's real control socket, network committer (over
// an in-memory applier; init/netconf's tests and the QEMU test apply real
// ones) and time store: a gateway outside the subnet is refused naming the
// field and applies nothing; a static address with a phone VLAN shows the
// pending banner and is confirmed from the reloaded page (a new
// connection); a time zone saved shows the box's time in it, UTC on hover.
func TestBrowserSystemNetworkAndTime(t *testing.T) {
	e, p, base := browserBoxProto(t, true)
	p.Open(base+"/system", "/system")
	form := "#net-edit"
	p.Fill(map[string]string{"#net-hostname": "pbx-office", "#nic-eth0-mode": "static", "#nic-eth0-addrs": "192.0.2.10/24",
		"#nic-eth0-gw4": "198.51.100.1", "#net-vlans": "20 eth0 static 10.20.0.1/24", "#net-dns": "192.0.2.53"})
	p.Submit(form, form+" [data-result]")
	p.WaitFor(`!document.querySelector("#net-edit [data-result]").textContent.startsWith("Applying")`)
	if msg := p.Result(form + " [data-result]"); !strings.Contains(msg, "IPv4 gateway") || !strings.Contains(msg, "outside") {
		t.Fatalf("bad gateway answered %q", msg)
	}
	if e.pid1.netApp.count() != 0 {
		t.Fatal("a refused network was applied")
	}
	if a := e.lastAudit("system.network.set"); a.Outcome != audit.Failed {
		t.Fatalf("refusal audit %+v", a)
	}

	p.Fill(map[string]string{"#nic-eth0-gw4": "192.0.2.1"})
	p.SubmitNav(form)
	p.WaitFor(`document.querySelector(".pending") !== null`)
	if banner := p.Str(`document.querySelector(".pending").innerText`); !strings.Contains(banner, "Network change pending") {
		t.Fatalf("banner %q", banner)
	}
	if v := p.Str(`document.querySelector("#net-vlans").value`); v != "20 eth0 static 10.20.0.1/24" {
		t.Errorf("editor shows VLANs %q", v)
	}
	confirm := `form[data-api="/api/v1/system/network/confirm"]`
	p.Eval(`window.__oldPage = true`, nil)
	p.Submit(confirm, confirm+" [data-result]")
	answer := fmt.Sprintf(`document.querySelector(%q)`, confirm+" [data-result]")
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete" || ` + answer + `.textContent !== ""`)
	if p.Str(`String(window.__oldPage)`) == "true" {
		t.Fatalf("confirmation refused: %s", p.Str(answer+`.textContent`))
	}
	st, err := e.pid1.GetNetwork(t.Context())
	if err != nil || st.Pending != nil || st.Confirmed.Hostname != "pbx-office" || len(st.Confirmed.VLANs) != 1 || st.Confirmed.VLANs[0].ID != 20 {
		t.Fatalf("network in PID 1 %+v %v", st, err)
	}

	tf := "#time-edit"
	p.Fill(map[string]string{"#time-tz": "Mars/Olympus"})
	p.Submit(tf, tf+" [data-result]")
	if msg := p.Result(tf + " [data-result]"); !strings.Contains(msg, "time zone") {
		t.Fatalf("bad zone answered %q", msg)
	}
	p.Fill(map[string]string{"#time-tz": "Europe/Berlin", "#time-ntp": "0.pool.ntp.org 1.pool.ntp.org"})
	p.SubmitNav(tf)
	p.WaitFor(`document.querySelector("#time-h + p time") !== null`)
	shown := p.Str(`document.querySelector("#time-h + p time").textContent`)
	hover := p.Str(`document.querySelector("#time-h + p time").title`)
	if !strings.HasSuffix(shown, "CEST") && !strings.HasSuffix(shown, "CET") || !strings.HasSuffix(hover, "UTC") {
		t.Fatalf("box time %q, hover %q", shown, hover)
	}
}
