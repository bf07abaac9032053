package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"html"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// certWithOtherKey is a valid-looking certificate for the dev box's name
// and the PEM of a key that does not belong to it.
func certWithOtherKey(t *testing.T) (chainPEM, keyPEM string) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(0, 1, 0),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(other)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// evilSite serves, from another origin (127.0.0.2), a page whose form
// posts a JSON-looking text/plain body to the box's account API as soon
// as it loads: the classic CSRF attempt.
func evilSite(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatalf("listen on 127.0.0.2: %v", err)
	}
	page := fmt.Sprintf(`<!doctype html><title>prize</title>
<form id="f" method="POST" action="%s/api/v1/accounts" enctype="text/plain">
<input type="hidden" name='{"username":"evil1","role":"admin","password":"Qw3#Er4$Ty5%%Ui6^","x":"' value='"}'>
</form><script>document.getElementById("f").submit()</script>`, html.EscapeString(target))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	srv.Listener = ln
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestBrowserAdminFlows drives the real admin UI served by the dev
// edgepbxd in headless Chromium, through the pages' own forms and script:
// claim with the printed setup code, log out and in, a cross-origin form
// post refused, an account locked by wrong passwords (answered exactly
// like a wrong password), session expiry after a short idle timeout, a bad
// certificate upload refused with a clear message, TOTP enrolment and a
// login with it.
func TestBrowserAdminFlows(t *testing.T) {
	bin := browsertest.Chromium(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base := p.waitLine(t, adminRE)[1]
	code := p.waitLine(t, setupRE)[1]
	evil := evilSite(t, base)
	b := browsertest.NewPage(t, bin)
	start := time.Now()

	// Claim: an unclaimed box shows only its claim page. A wrong code is refused.
	b.Open(base+"/users", "/claim")
	claim := `form[data-api="/api/v1/claim"]`
	b.Fill(map[string]string{"#setup_code": "ZZZZ-ZZZZ-ZZZZ", "#username": testAdmin, "#password": testAdminPW})
	if msg := b.Result(submitted(b, claim)); !strings.Contains(strings.ToLower(msg), "setup code") {
		t.Fatalf("wrong setup code answered %q", msg)
	}
	b.Fill(map[string]string{"#setup_code": code})
	submitted(b, claim)
	b.WaitFor(`location.pathname === "/" && document.querySelector("h1").textContent === "Dashboard"`)
	dash := b.Str(`document.querySelector("main").innerText`)
	for _, want := range []string{"SIP registrations", "Certificate", "Licence", "Audit log"} {
		if !strings.Contains(dash, want) {
			t.Errorf("dashboard lacks %q:\n%s", want, dash)
		}
	}

	logout := func() {
		t.Helper()
		b.Eval(`document.querySelector('button[data-api="/api/v1/logout"]').click()`, nil)
		b.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	}
	login := func(user, pw string) string {
		t.Helper()
		b.Fill(map[string]string{"#username": user, "#password": pw})
		return submitted(b, "#login")
	}
	logout()
	login(testAdmin, testAdminPW)
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete"`)

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "A page on another")
	// A page on another origin posts a form to the API: refused (Origin
	// check), and nothing is created.
	b.Call("Page.navigate", map[string]any{"url": evil}, nil)
	b.WaitFor(`location.href.startsWith(` + fmt.Sprintf("%q", base) + `) && document.readyState === "complete"`)
	if body := b.Str(`document.body.innerText`); !strings.Contains(body, "cross-origin request refused") {
		t.Fatalf("cross-origin post answered: %s", body)
	}

	// A second account, made through the Users page.
	b.Open(base+"/users", "/users")
	if body := b.Str(`document.querySelector("main").innerText`); strings.Contains(body, "evil1") {
		t.Fatal("the cross-origin post created an account")
	}
	// Without "confirm it's you" the form is refused and names the fields.
	b.Fill(map[string]string{"#nu": "op1", "#nr": "operator", "#np": testAdminPW + "-op"})
	if msg := b.Result(submitted(b, `form[data-api="/api/v1/accounts"]`)); !strings.Contains(strings.ToLower(msg), "current password") {
		t.Fatalf("account creation without re-authentication answered %q", msg)
	}
	b.Fill(map[string]string{"#reauth-password": testAdminPW})
	b.SubmitNav(`form[data-api="/api/v1/accounts"]`)
	b.WaitFor(`document.querySelector("main").innerText.includes("op1")`)

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "Lockout:")
	// Lockout: three wrong passwords lock op1; then even the right one gets
	// the same answer as a wrong one.
	logout()
	var wrong string
	for i := range 3 {
		msg := b.Result(login("op1", fmt.Sprintf("Wrong-password-%d!", i)))
		if i == 0 {
			wrong = msg
		} else if msg != wrong {
			t.Fatalf("attempt %d answered %q, first %q", i, msg, wrong)
		}
	}
	if msg := b.Result(login("op1", testAdminPW+"-op")); msg != wrong {
		t.Fatalf("locked account answered %q, a wrong password %q", msg, wrong)
	}
	if msg := b.Result(login("nosuchuser", "Wrong-password-0!")); msg != wrong {
		t.Fatalf("unknown user answered %q, a wrong password %q", msg, wrong)
	}
	login(testAdmin, testAdminPW)
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete"`)
	b.Open(base+"/users", "/users")
	if body := b.Str(`document.querySelector("main").innerText`); !strings.Contains(body, "locked for 127.0.0.0/24 until") {
		t.Fatalf("users page does not show the lock:\n%s", body)
	}

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "Session expiry:")
	// Session expiry: set the shortest idle timeout on the Security page,
	// stay idle past it, and the next page asks for a login.
	b.Open(base+"/security", "/security")
	b.Fill(map[string]string{"#is": "15"})
	b.SubmitNav(`form[data-api="/api/v1/security/policy"]`)
	b.WaitFor(`document.querySelector("#is").value === "15"`)
	time.Sleep(17 * time.Second) // the configured 15 s idle timeout, plus margin
	b.Open(base+"/users", "/login")
	login(testAdmin, testAdminPW)
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete"`)
	b.Open(base+"/security", "/security")
	b.Fill(map[string]string{"#is": "3600"})
	b.SubmitNav(`form[data-api="/api/v1/security/policy"]`)
	b.WaitFor(`document.querySelector("#is").value === "3600"`)

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "A certificate who")
	// A certificate whose key does not match is refused with a clear
	// message, and the box keeps serving its own.
	chain, key := certWithOtherKey(t)
	b.Open(base+"/certificates", "/certificates")
	before := b.Str(`document.querySelector("code.fp").textContent`)
	b.Fill(map[string]string{"#chain_pem": chain, "#key_pem": key})
	if msg := b.Result(submitted(b, "#cert-upload")); !strings.Contains(strings.ToLower(msg), "the private key does not match the certificate") {
		t.Fatalf("bad certificate answered %q", msg)
	}
	if cls := b.Str(`document.querySelector("#cert-upload [data-result]").className`); cls != "bad" {
		t.Errorf("refusal shown as %q", cls)
	}
	b.Open(base+"/certificates", "/certificates")
	if after := b.Str(`document.querySelector("code.fp").textContent`); after != before {
		t.Fatal("a refused upload changed the certificate")
	}

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "TOTP: enrol")
	// TOTP: enrol on the account page by scanning (reading) the secret.
	b.Open(base+"/account", "/account")
	b.Fill(map[string]string{"#totp-pw": testAdminPW})
	submitted(b, "#totp-begin")
	b.WaitFor(`document.querySelector("#totp-secret").textContent !== "" && document.querySelector("#totp-qr").src.startsWith("data:image/png;base64,")`)
	secret := b.Str(`document.querySelector("#totp-secret").textContent`)
	now, err := totp.GenerateCode(secret, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b.Fill(map[string]string{"#totp-code": now})
	submitted(b, "#totp-confirm")
	b.WaitFor(`!document.querySelector("#recovery").hidden`)
	if codes := strings.Fields(b.Str(`document.querySelector("#recovery-codes").textContent`)); len(codes) < 8 {
		t.Fatalf("recovery codes %v", codes)
	}
	// Replacing it asks for the current code too (the form has a field
	// for it now): the password with a wrong code is refused.
	b.Open(base+"/account", "/account")
	b.Fill(map[string]string{"#totp-pw": testAdminPW, "#totp-cur": "000000"})
	if msg := b.Result(submitted(b, "#totp-begin")); !strings.Contains(strings.ToLower(msg), "second-factor code is wrong") {
		t.Fatalf("replacing the authenticator with a wrong current code answered %q", msg)
	}

	t.Logf("%s: %s", time.Since(start).Round(time.Millisecond), "Log in with it")
	// Log in with it: the password alone now leads to the code form. The
	// code used at enrolment does not work twice; the next one does.
	// The admin role must now use it on every login (Security page).
	b.Open(base+"/security", "/security")
	b.Eval(`document.querySelector('input[name="totp_roles"][value="admin"]').checked = true`, nil)
	b.SubmitNav(`form[data-api="/api/v1/security/policy"]`)
	b.WaitFor(`document.querySelector('input[name="totp_roles"][value="admin"]').checked`)
	logout()
	login(testAdmin, testAdminPW)
	b.WaitFor(`document.querySelector("#totp") && !document.querySelector("#totp").hidden`)
	b.Fill(map[string]string{"#code": now})
	if msg := b.Result(submitted(b, "#totp")); msg == "" || b.Str(`location.pathname`) != "/login" {
		t.Fatalf("reused TOTP code: %q", msg)
	}
	next, _ := totp.GenerateCode(secret, time.Now().Add(30*time.Second))
	b.Fill(map[string]string{"#code": next})
	submitted(b, "#totp")
	b.WaitFor(`location.pathname === "/" && document.readyState === "complete" && document.querySelector("h1").textContent === "Dashboard"`)

	// Console recovery from the login page: a wrong setup code is refused,
	// the one printed on the console clears the lockout.
	logout()
	b.Eval(`document.querySelector("details").open = true`, nil)
	b.Fill(map[string]string{"#rec-code": "ZZZZ-ZZZZ-ZZZZ", "#rec-user": "op1"})
	if msg := b.Result(submitted(b, "#recover")); !strings.Contains(strings.ToLower(msg), "wrong setup code") {
		t.Fatalf("recovery with a wrong code answered %q", msg)
	}
	b.Fill(map[string]string{"#rec-code": code})
	if msg := b.Result(submitted(b, "#recover")); !strings.Contains(strings.ToLower(msg), "lockout cleared") {
		t.Fatalf("recovery answered %q", msg)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// submitted submits form (clearing its result line first) and returns the
// selector of its result line, for Page.Result.
func submitted(b *browsertest.Page, form string) string {
	res := form + " [data-result]"
	b.Submit(form, res)
	return res
}
