package main

import (
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestBrowserConnectPhoneLive follows a new installer through the real
// dev daemon in headless Chromium, with real phones (baresip):
//   - claim, then create an extension: a connect-a-phone card opens with
//     the server, ports, user, auth ID, realm, the password once, the TLS
//     fingerprint and a QR code; the list shows the extension without a
//     page load; a second creation opens a second card and the first keeps
//     its password;
//   - a phone configured from the card alone registers, and the list, the
//     card and the dashboard say so (source, User-Agent) without a reload;
//   - a call between two phones shows in the Calls page's live panel
//     (codec, encryption), the records table does not say "No calls
//     match", and the panel's Hang up ends it on both phones (audited);
//   - a source that mistypes a password is shown throttled with its
//     extension on the Firewall page and lifted in one click.
//
// Pages are checked at 1280 px and 390 px (nothing scrolls sideways);
// screenshots go to $EDGEPBX_SCREENSHOTS when set. The time from the claim
// page to the first registered phone is logged (docs/benchmarks.md).
func TestBrowserConnectPhoneLive(t *testing.T) {
	bin := browsertest.Chromium(t)
	bare := baresiptest.Need(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	code := p.waitLine(t, setupRE)[1]
	b := browsertest.NewPage(t, bin)
	b.Viewport(1280, 900)
	shot := screenshots(t, b)

	// Claim, as printed on the console.
	start := time.Now()
	b.Open(base+"/", "/claim")
	b.Fill(map[string]string{"#setup_code": code, "#username": testAdmin, "#password": testAdminPW})
	b.Submit(`form[data-api="/api/v1/claim"]`, "")
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete" && document.querySelector("h1").textContent === "Dashboard"`)

	// Extensions, reached through the menu.
	b.Eval(`window.__oldPage = true; document.querySelector('nav a[href="/extensions"]').click()`, nil)
	b.WaitFor(`window.__oldPage === undefined && location.pathname === "/extensions" && document.readyState === "complete"`)
	b.Eval(`window.__samePage = true`, nil) // gone if anything reloads the page
	b.Fill(map[string]string{"#user": "1001"})
	b.Submit("#ext-create", "")
	b.WaitFor(`document.querySelector('[data-card="1001"] code.secret')`)
	card := func(user, label string) string {
		return b.Str(fmt.Sprintf(`(() => { const c = document.querySelector('[data-card=%q]'); for (const dt of c.querySelectorAll("dt"))
			if (dt.textContent === %q) return dt.nextElementSibling.querySelector("code") ? dt.nextElementSibling.querySelector("code").textContent : dt.nextElementSibling.textContent; return ""; })()`, user, label))
	}
	pw1 := card("1001", "Password")
	domain, ports, realm := card("1001", "SIP server (domain)"), card("1001", "Ports"), card("1001", "Realm")
	if len(pw1) < 16 || card("1001", "User") != "1001" || card("1001", "Authentication ID") != "1001" || realm != testRealm || domain == "" {
		t.Fatalf("card: password %q user %q auth %q realm %q domain %q", pw1, card("1001", "User"), card("1001", "Authentication ID"), realm, domain)
	}
	if fp := card("1001", "TLS certificate (SHA-256)"); !regexp.MustCompile(`^[0-9A-F:]{95}$`).MatchString(fp) {
		t.Errorf("card fingerprint %q", fp)
	}
	m := regexp.MustCompile(`UDP (\d+), TCP (\d+), TLS (\d+)`).FindStringSubmatch(ports)
	if m == nil {
		t.Fatalf("card ports %q", ports)
	}
	// The list has the new extension without a page load.
	b.WaitFor(`document.querySelector('#ext-list tr[data-ext="1001"]') && !document.querySelector("#ext-none")`)
	// The QR code is an image the CSP allows, drawn from a sip: URI
	// without the password.
	b.WaitFor(`(() => { const i = document.querySelector('[data-card="1001"] figure.qr img'); return i && i.complete && i.naturalWidth > 0; })()`)
	qrText := b.Str(`document.querySelector('[data-card="1001"] figure.qr img').alt`)
	if !strings.Contains(qrText, "sip:1001@") || strings.Contains(qrText, pw1) {
		t.Errorf("QR alt text %q", qrText)
	}
	svg := b.Str(`fetch("/api/v1/extensions/1001/qr.svg").then(r => r.headers.get("content-type") + " " + r.status)`)
	if svg != "image/svg+xml 200" {
		t.Errorf("QR answer %q", svg)
	}

	// A second extension: its own card; the first card keeps its password.
	b.Fill(map[string]string{"#user": "1002"})
	b.Submit("#ext-create", "")
	b.WaitFor(`document.querySelector('[data-card="1002"] code.secret') && document.querySelector('#ext-list tr[data-ext="1002"]')`)
	pw2 := card("1002", "Password")
	if card("1001", "Password") != pw1 || pw2 == pw1 {
		t.Fatalf("first card's password %q after the second creation (was %q, second %q)", card("1001", "Password"), pw1, pw2)
	}
	checkWidths(t, b, shot, "extensions-cards")

	// A phone set up from the card's values only registers; the list and
	// the card show it without a reload.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	phone := func(user, pw string) *baresiptest.Phone {
		return baresiptest.Start(ctx, t, bare, baresiptest.Config{Name: user, Tone: 440,
			Accounts: []string{fmt.Sprintf("<sip:%s@%s:%s;transport=udp>;auth_user=%s;auth_pass=%s;answermode=auto;audio_codecs=PCMU;regint=300",
				user, domain, m[1], user, pw)}})
	}
	a := phone("1001", pw1)
	a.WaitRegistered(ctx, t, 1)
	b.WaitFor(`document.querySelector('[data-reg="1001"]').textContent.includes("registered from 127.0.0.1")`)
	claimToRegistered := time.Since(start)
	t.Logf("claim page to a registered softphone, following the UI: %s", claimToRegistered.Round(time.Millisecond))
	if s := b.Str(`document.querySelector('[data-reg="1001"]').textContent`); !strings.Contains(s, "baresip") || !strings.Contains(s, "(UDP)") {
		t.Errorf("registration shown as %q", s)
	}
	b.WaitFor(`document.querySelector('[data-card-reg="1001"]').textContent.includes("registered from")`)
	if !strings.Contains(b.Str(`document.querySelector('[data-reg="1002"]').textContent`), "not registered") {
		t.Error("1002 shown registered")
	}
	// Connect a phone on an existing extension: no password any more.
	b.Eval(`document.querySelector('[data-card="1001"] button.dismiss').click()`, nil)
	b.Click(`button[data-connect="1001"]`)
	b.WaitFor(`document.querySelector('[data-card="1001"]')`)
	if s := card("1001", "Password"); strings.Contains(s, pw1) || !strings.Contains(s, "Not shown again") {
		t.Errorf("an existing extension's card shows %q as password", s)
	}
	// A new password for 1002 opens its card with the new password once;
	// the phone is then set up with that one.
	b.Eval(`window.confirm = () => true`, nil)
	b.Eval(`document.querySelector('[data-card="1002"] button.dismiss').click()`, nil)
	b.Click(`button[data-api="/api/v1/extensions/1002/password"]`)
	b.WaitFor(`document.querySelector('[data-card="1002"] code.secret')`)
	if np := card("1002", "Password"); len(np) < 16 || np == pw2 {
		t.Fatalf("new password card shows %q (old %q)", np, pw2)
	} else {
		pw2 = np
	}
	if b.Str(`String(window.__samePage)`) != "true" {
		t.Fatal("the extensions page was reloaded")
	}

	// The dashboard follows the registrar without a reload.
	b.Open(base+"/", "/")
	regLine := `[...document.querySelectorAll("#status li .name")].find(n => n.textContent === "SIP registrations").parentNode.querySelector(".value").textContent`
	b.WaitFor(regLine + ` === "1 of 2 extensions"`)
	b.WaitFor(`document.querySelector("#status li[data-level=ok] .name") !== null && [...document.querySelectorAll("#status li .name")].find(n => n.textContent === "SIP registrations").parentNode.dataset.level === "ok"`)
	bp := phone("1002", pw2)
	bp.WaitRegistered(ctx, t, 1)
	b.WaitFor(regLine + ` === "2 of 2 extensions"`)

	// A call: live on the Calls page, then hung up from it.
	b.Open(base+"/calls", "/calls")
	a.Command(ctx, t, "dial", fmt.Sprintf("sip:1002@%s:%s", domain, m[1]))
	a.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	bp.WaitEvent(ctx, t, "CALL_ESTABLISHED")
	b.WaitFor(`(() => { const r = document.querySelector("#live-calls-body tr[data-call]"); return r && r.textContent.includes("answered"); })()`)
	row := b.Str(`document.querySelector("#live-calls-body tr[data-call]").innerText`)
	for _, want := range []string{"1001", "1002", "PCMU"} {
		if !strings.Contains(row, want) {
			t.Errorf("live call row lacks %q: %q", want, row)
		}
	}
	if s := b.Str(`document.querySelector("main").innerText`); strings.Contains(s, "No calls match") {
		t.Errorf("during an answered call the Calls page says %q", "No calls match")
	}
	checkWidths(t, b, shot, "calls-live")
	b.Eval(`window.confirm = () => true`, nil) // a new page
	b.Click(`#live-calls-body button[data-hangup]`)
	a.WaitEvent(ctx, t, "CALL_CLOSED")
	bp.WaitEvent(ctx, t, "CALL_CLOSED")
	b.WaitFor(`document.querySelector("#live-calls-body").textContent.includes("No calls in progress")`)
	if s := b.Str(`fetch("/api/v1/audit?action=telephony.call.hangup").then(r => r.text())`); !strings.Contains(s, `"1001 → 1002"`) {
		t.Errorf("hang-up not audited: %s", s)
	}

	// A throttle: shown with its extension and reason on the Firewall
	// page, lifted in one click.
	udp, err := net.ResolveUDPAddr("udp", "127.0.0.1:"+m[1])
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP("127.0.0.9")})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for i := range 3 {
		mistypeREGISTER(t, conn, udp, "1001", 10*i)
	}
	b.Open(base+"/firewall", "/firewall")
	throttle := `[...document.querySelectorAll("tr")].find(r => r.textContent.includes("127.0.0.9/32") && r.textContent.includes("throttle of extension 1001"))`
	b.WaitFor(throttle)
	checkWidths(t, b, shot, "firewall-throttle")
	b.Eval(`window.__oldPage = true; `+throttle+`.querySelector("button").click()`, nil)
	b.WaitFor(`window.__oldPage === undefined && document.readyState === "complete"`)
	if b.Str(`String(!!(`+throttle+`))`) != "false" {
		t.Fatal("throttle still shown after the lift")
	}

	// A trunk from a provider template, then tested from its row: the
	// answer comes in words, next to the button.
	itsp := optionsResponder(t)
	b.Open(base+"/telephony", "/telephony")
	b.Fill(map[string]string{"#tel-template": "sipgate-trunking"})
	if note := b.Str(`document.querySelector("#tel-template-note").textContent`); !strings.Contains(note, "SIP-ID") {
		t.Errorf("template note %q", note)
	}
	b.Click(`button[data-add="trunks"]`)
	lastTrunk := `#tel-trunks > fieldset.row:last-of-type `
	if h := b.Str(`document.querySelector('` + lastTrunk + `input[data-key="host"]:not([type="number"])').value`); h != "sipconnect.sipgate.de" {
		t.Fatalf("template filled host %q", h)
	}
	ih, ip, _ := net.SplitHostPort(itsp)
	b.Fill(map[string]string{lastTrunk + `[data-key="name"]`: "itsp", lastTrunk + `input[data-key="host"]:not([type="number"])`: ih,
		lastTrunk + `input[data-key="host"][type="number"]`: ip, lastTrunk + `[data-key="peers"]`: ih + "/32"})
	b.Click(lastTrunk + `input[data-key="auth"]`) // recognised by address: no registration
	b.Click(`button[data-add="routes"]`)
	// The route's trunk is picked from the trunks being edited.
	if opts := b.Str(`[...document.querySelectorAll('#tel-routes > fieldset.row:last-of-type select[data-key="trunk"] option')].map(o => o.value).join(",")`); opts != ",itsp" {
		t.Fatalf("route trunk options %q", opts)
	}
	b.Fill(map[string]string{`#tel-routes > fieldset.row:last-of-type select[data-key="trunk"]`: "itsp"})
	b.SubmitNav("#tel-edit")
	b.WaitFor(`document.querySelector('tr[data-trunk="itsp"]')`)
	if st := b.Str(`document.querySelector('tr[data-trunk="itsp"]').innerText`); !strings.Contains(st, "recognised by address") {
		t.Errorf("trunk row %q", st)
	}
	b.Click(`button[data-trunk-test="itsp"]`)
	res := `document.querySelector('tr[data-trunk="itsp"] [data-result]')`
	b.WaitFor(res + `.className !== ""`)
	if got := b.Str(res + `.textContent`); b.Str(res+`.className`) != "ok" || !strings.Contains(got, "The provider answered at "+itsp+" over UDP") {
		t.Errorf("trunk test answered %q (%s)", got, b.Str(res+`.className`))
	} else {
		t.Logf("trunk test: %s", got)
	}
	checkWidths(t, b, shot, "telephony-trunk-test")

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// optionsResponder is a SIP server on loopback UDP that answers OPTIONS
// with 200, as a provider's proxy does; it returns its address.
func optionsResponder(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("itsp-proxy"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() { _ = ua.Close(); _ = conn.Close() })
	return conn.LocalAddr().String()
}

// screenshots returns a function saving the page as name-WIDTH.png in
// $EDGEPBX_SCREENSHOTS (nothing when unset).
func screenshots(t *testing.T, b *browsertest.Page) func(name string) {
	dir := os.Getenv("EDGEPBX_SCREENSHOTS")
	return func(name string) {
		if dir == "" {
			return
		}
		var r struct {
			Data string `json:"data"`
		}
		b.Call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
		raw, err := base64.StdEncoding.DecodeString(r.Data)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name+".png"), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkWidths looks at the page at 1280 and 390 px: nothing may scroll
// sideways; each width is screenshot. It leaves the page at 1280 px.
func checkWidths(t *testing.T, b *browsertest.Page, shot func(string), name string) {
	t.Helper()
	for _, w := range []int{390, 1280} {
		b.Viewport(w, 900)
		b.Eval(`new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))`, nil) // laid out at the new width
		if o := b.Overflow(w); o != "" {
			t.Errorf("%s at %d px scrolls sideways: %s", name, w, o)
		}
		shot(fmt.Sprintf("%s-%d", name, w))
	}
}

var nonceMD5RE = regexp.MustCompile(`nonce="([^"]+)", algorithm=MD5`)

// mistypeREGISTER sends one REGISTER for user from conn with a wrong
// password on a fresh challenge, as a phone with a typo does.
func mistypeREGISTER(t *testing.T, conn *net.UDPConn, srv *net.UDPAddr, user string, cseq int) {
	t.Helper()
	local := conn.LocalAddr().String()
	msg := func(auth string) string {
		cseq++
		h := fmt.Sprintf("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%d%d;rport\r\nMax-Forwards: 70\r\n"+
			"From: <sip:%s@127.0.0.1>;tag=t%d\r\nTo: <sip:%s@127.0.0.1>\r\nCall-ID: c%d@x\r\nCSeq: %d REGISTER\r\n"+
			"Contact: <sip:%s@%s>\r\nExpires: 600\r\n", local, cseq, time.Now().UnixNano(), user, cseq, user, cseq, cseq, user, local)
		if auth != "" {
			h += "Authorization: " + auth + "\r\n"
		}
		return h + "Content-Length: 0\r\n\r\n"
	}
	roundTrip := func(m string) string {
		if _, err := conn.WriteToUDP([]byte(m), srv); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8192)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		return string(buf[:n])
	}
	ch := nonceMD5RE.FindStringSubmatch(roundTrip(msg("")))
	if ch == nil {
		t.Fatal("no MD5 challenge")
	}
	hx := func(s string) string { h := md5.Sum([]byte(s)); return hex.EncodeToString(h[:]) }
	resp := hx(hx(user+":"+testRealm+":wrong-password") + ":" + ch[1] + ":00000001:c:auth:" + hx("REGISTER:sip:127.0.0.1"))
	roundTrip(msg(fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="sip:127.0.0.1", response="%s", algorithm=MD5, cnonce="c", qop=auth, nc=00000001`,
		user, testRealm, ch[1], resp)))
}
