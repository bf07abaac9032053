package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/netfw"
	"net/netip"
)

// testPEM makes a CA-signed leaf for names valid from nb to na: chain PEM
// (leaf, CA) and key PEM.
func testPEM(t testing.TB, names []string, nb, na time.Time) (chain, key string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"}, NotBefore: nb.Add(-time.Hour), NotAfter: na.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, NotBefore: nb, NotAfter: na,
		DNSNames: names, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca, &k.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	chain = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})) + string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	return chain, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

func TestCertificateUpload(t *testing.T) {
	e, a := claimed(t)
	now := e.clock.Now()
	good, goodKey := testPEM(t, []string{"box.example", "pbx.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	_, otherKey := testPEM(t, []string{"box.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	expired, expiredKey := testPEM(t, []string{"box.example"}, now.AddDate(-1, 0, 0), now.Add(-time.Minute))
	elsewhere, elsewhereKey := testPEM(t, []string{"other.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	self := e.certs.Current()

	for _, tc := range []struct {
		name string
		req  CertificateRequest
		code int
		want string
	}{
		{"garbage", CertificateRequest{ChainPEM: "hello", KeyPEM: goodKey}, 422, "certificate refused"},
		{"empty chain", CertificateRequest{ChainPEM: "", KeyPEM: goodKey}, 422, "no CERTIFICATE block found"},
		{"key of another certificate", CertificateRequest{ChainPEM: good, KeyPEM: otherKey}, 422, "private key does not match the certificate"},
		{"expired", CertificateRequest{ChainPEM: expired, KeyPEM: expiredKey}, 422, "expired"},
		{"does not cover the box's name", CertificateRequest{ChainPEM: elsewhere, KeyPEM: elsewhereKey}, 422, `does not cover "box.example"`},
		{"does not cover a listed name", CertificateRequest{ChainPEM: good, KeyPEM: goodKey, Names: []string{"box.example", "x.example"}}, 422, `does not cover "x.example"`},
		{"bad name", CertificateRequest{ChainPEM: good, KeyPEM: goodKey, Names: []string{"a b"}}, 400, "invalid name"},
		{"no key", CertificateRequest{ChainPEM: good}, 422, "exactly one PEM block"},
	} {
		r := a.do("POST", "/api/v1/certificates", tc.req)
		if r.code != tc.code || !strings.Contains(r.str("detail"), tc.want) {
			t.Errorf("%s: %d %s, want %d with %q", tc.name, r.code, r.body, tc.code, tc.want)
		}
		if e.certs.Current().Fingerprint != self.Fingerprint {
			t.Fatalf("%s: refused upload changed the certificate", tc.name)
		}
	}
	if !e.auditHas("certs.upload", "failed") {
		t.Error("refused uploads not audited")
	}
	// Too large a body is refused before parsing.
	if r := a.do("POST", "/api/v1/certificates", CertificateRequest{ChainPEM: strings.Repeat("A", maxCertBody), KeyPEM: goodKey}); r.code != 400 {
		t.Errorf("oversize upload: %d %s", r.code, r.body)
	}
	// The page shows the refusal's reason through the API answer; the good
	// one is served at once, pending until confirmed on a new connection.
	a.conn = e.srv.ConnContext(context.Background(), nil)
	r := a.must(202, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: good, KeyPEM: goodKey})
	if cur := e.certs.Current(); cur.Source != certs.SourceUpload || cur.Fingerprint == self.Fingerprint || r.hdr.Get("Connection") != "close" {
		t.Fatalf("after upload: %+v %v", cur, r.hdr)
	}
	a.conn = e.srv.ConnContext(context.Background(), nil)
	a.must(200, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})
	if !e.auditHas("certs.upload", "ok") || !e.auditHas("certs.confirm", "ok") {
		t.Error("upload not audited")
	}
	page := a.must(200, "GET", "/certificates", nil)
	if !contains(page.body, "upload") || !contains(page.body, "Roll back") {
		t.Errorf("certificates page: %s", page.body)
	}
	a.must(200, "POST", "/api/v1/certificates/rollback", "{}")
	if e.certs.Current().Fingerprint != self.Fingerprint {
		t.Fatal("rollback did not restore the self-signed certificate")
	}
	a.must(409, "POST", "/api/v1/certificates/rollback", "{}")
}

// handshakeWith runs a TLS handshake over a pipe between srv and a client
// limited to versions lo..hi.
func handshakeWith(srv *tls.Config, lo, hi uint16) (uint16, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Server(a, srv).Handshake()
	c := tls.Client(b, &tls.Config{InsecureSkipVerify: true, MinVersion: lo, MaxVersion: hi})
	err := c.Handshake()
	return c.ConnectionState().Version, err
}

func TestTLSVersionSettings(t *testing.T) {
	e, a := claimed(t)
	cfg, err := e.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		if _, err := handshakeWith(cfg, v, v); err == nil {
			t.Errorf("%s accepted", tls.VersionName(v))
		}
	}
	if v, err := handshakeWith(cfg, tls.VersionTLS12, tls.VersionTLS12); err != nil || v != tls.VersionTLS12 {
		t.Fatalf("TLS 1.2 by default: %v %v", v, err)
	}
	for _, bad := range []TLSSettings{{"1.1", "1.3"}, {"1.3", "1.2"}, {"1.2", "1.4"}, {"", ""}} {
		a.must(400, "PUT", "/api/v1/certificates/tls", bad)
	}
	a.conn = e.srv.ConnContext(context.Background(), nil)
	r := a.must(202, "PUT", "/api/v1/certificates/tls", TLSSettings{MinVersion: "1.3", MaxVersion: "1.3"})
	// Applies to new connections without a restart, pending.
	if _, err := handshakeWith(cfg, tls.VersionTLS12, tls.VersionTLS12); err == nil {
		t.Fatal("TLS 1.2 accepted with minimum 1.3")
	}
	if v, err := handshakeWith(cfg, 0, 0); err != nil || v != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v %v", v, err)
	}
	// Handler test requests arrive as TLS 1.2: a new connection, but not one
	// made with the new settings, proves nothing.
	a.conn = e.srv.ConnContext(context.Background(), nil)
	if c := a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")}); !contains(c.body, "uses TLS 1.2") {
		t.Fatalf("confirm over TLS 1.2: %s", c.body)
	}
	if !e.auditHas("tls.versions.update", "ok") {
		t.Error("not audited")
	}
}

// TestTLSChangeCommitOnlyWhenHealthy: a TLS change reverts by itself after
// the window (fake clock), is kept when confirmed from a new connection, and
// a confirmation over the connection that made the change is refused.
func TestTLSChangeCommitOnlyWhenHealthy(t *testing.T) {
	e, a := claimed(t)
	cfg, err := e.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	only12 := TLSSettings{MinVersion: "1.2", MaxVersion: "1.2"}

	// Not confirmed: reverted once the clock passes the deadline, by the
	// next handshake, and the stored settings never changed.
	a.conn = e.srv.ConnContext(context.Background(), nil)
	r := a.must(202, "PUT", "/api/v1/certificates/tls", only12)
	if _, err := handshakeWith(cfg, tls.VersionTLS13, tls.VersionTLS13); err == nil {
		t.Fatal("pending maximum 1.2 not applied")
	}
	a.must(409, "PUT", "/api/v1/certificates/tls", DefaultTLSSettings()) // one change at a time
	st := a.must(200, "GET", "/api/v1/certificates", nil)
	if p, _ := st.js["pending"].(map[string]any); p == nil || p["revert_in_seconds"] != 120.0 || p["kind"] != "tls-versions" {
		t.Fatalf("status while pending: %s", st.body)
	}
	if page := a.must(200, "GET", "/certificates", nil); !contains(page.body, `data-countdown="120"`) || !contains(page.body, r.str("id")) {
		t.Errorf("certificates page does not show the pending change: %s", page.body)
	}
	e.clock.Advance(119 * time.Second)
	if _, err := handshakeWith(cfg, tls.VersionTLS13, tls.VersionTLS13); err == nil {
		t.Fatal("reverted before the deadline")
	}
	e.clock.Advance(2 * time.Second)
	if v, err := handshakeWith(cfg, tls.VersionTLS13, tls.VersionTLS13); err != nil || v != tls.VersionTLS13 {
		t.Fatalf("not reverted after the deadline: %v %v", v, err)
	}
	if !e.auditHas("tls.versions.revert", "warning") {
		t.Error("revert not audited")
	}
	a.conn = e.srv.ConnContext(context.Background(), nil)
	a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})
	if got, _ := e.srv.tlsSettings(); got != DefaultTLSSettings() {
		t.Fatalf("stored settings changed by an unconfirmed change: %+v", got)
	}

	// Confirmed from a new connection: kept past the deadline and stored.
	made := e.srv.ConnContext(context.Background(), nil)
	a.conn = made
	r = a.must(202, "PUT", "/api/v1/certificates/tls", only12)
	if c := a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")}); !contains(c.body, "new connection") {
		t.Fatalf("confirm on the changing connection: %s", c.body)
	}
	a.conn = e.srv.ConnContext(context.Background(), nil)
	a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: "00000000000000000000000000000000"})
	a.must(200, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})
	e.clock.Advance(10 * time.Minute)
	if _, err := handshakeWith(cfg, tls.VersionTLS13, tls.VersionTLS13); err == nil {
		t.Fatal("confirmed change reverted")
	}
	cfg2, err := e.srv.TLSConfig() // a restart applies the stored settings
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshakeWith(cfg2, tls.VersionTLS13, tls.VersionTLS13); err == nil {
		t.Fatal("confirmed settings not stored")
	}
	if !e.auditHas("tls.versions.confirm", "ok") || !e.auditHas("tls.confirm_refused", "denied") {
		t.Error("confirmation not audited")
	}

	// The admin may revert at once.
	r = a.must(202, "PUT", "/api/v1/certificates/tls", DefaultTLSSettings())
	a.must(200, "POST", "/api/v1/certificates/revert", nil)
	a.must(409, "POST", "/api/v1/certificates/revert", nil)
}

// TestCertificateCommitOnlyWhenHealthy: the same for an uploaded certificate.
func TestCertificateCommitOnlyWhenHealthy(t *testing.T) {
	e, a := claimed(t)
	now := e.clock.Now()
	self := e.certs.Current()
	good, goodKey := testPEM(t, []string{"box.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	other, otherKey := testPEM(t, []string{"pbx.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))

	// Not confirmed: the stored certificate is served again after the window.
	a.conn = e.srv.ConnContext(context.Background(), nil)
	r := a.must(202, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: good, KeyPEM: goodKey})
	if e.certs.Current().Source != certs.SourceUpload {
		t.Fatal("upload not served while pending")
	}
	a.must(409, "POST", "/api/v1/certificates/rollback", "{}")
	e.clock.Advance(tlsConfirmWindow + time.Second)
	st := a.must(200, "GET", "/api/v1/certificates", nil)
	if st.js["pending"] != nil || e.certs.Current().Fingerprint != self.Fingerprint {
		t.Fatalf("not reverted: %s", st.body)
	}
	if !e.auditHas("certs.revert", "warning") {
		t.Error("revert not audited")
	}

	// Confirmed from the changing connection: refused; from a new one: kept.
	a.conn = e.srv.ConnContext(context.Background(), nil)
	r = a.must(202, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: good, KeyPEM: goodKey})
	fp := e.certs.Current().Fingerprint
	a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})
	a.conn = e.srv.ConnContext(context.Background(), nil)
	a.must(200, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})
	e.clock.Advance(time.Hour)
	a.must(200, "GET", "/api/v1/certificates", nil)
	if e.certs.Current().Fingerprint != fp {
		t.Fatal("confirmed certificate reverted")
	}

	// A certificate that does not cover the name the browser used: that
	// connection got the self-signed fallback, so it cannot confirm.
	r = a.must(202, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: other, KeyPEM: otherKey, Names: []string{"pbx.example"}})
	a.conn = e.srv.ConnContext(context.Background(), nil)
	if c := a.must(409, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")}); !contains(c.body, `does not cover \"box.example\"`) {
		t.Fatalf("confirm by an uncovered name: %s", c.body)
	}
	a.must(200, "POST", "/api/v1/certificates/revert", nil)
	if e.certs.Current().Fingerprint != fp {
		t.Fatal("revert did not bring back the confirmed certificate")
	}
}

func TestKeyLogAPI(t *testing.T) {
	e, a := claimed(t)
	cfg, err := e.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	a.must(409, "GET", "/api/v1/certificates/keylog", nil)
	for _, m := range []int{0, -1, 1441} {
		a.must(400, "POST", "/api/v1/certificates/keylog", KeyLogRequest{Minutes: m})
	}
	a.must(200, "POST", "/api/v1/certificates/keylog", KeyLogRequest{Minutes: 10})
	if _, err := handshakeWith(cfg, 0, 0); err != nil {
		t.Fatal(err)
	}
	r := a.must(200, "GET", "/api/v1/certificates/keylog", nil)
	if !contains(r.body, "CLIENT_TRAFFIC_SECRET_0 ") {
		t.Fatalf("key log: %q", r.body)
	}
	// Loudly flagged on every page while on.
	for _, p := range []string{"/", "/account", "/certificates"} {
		if page := a.must(200, "GET", p, nil); !contains(page.body, "TLS key log is ON") {
			t.Errorf("%s does not flag the key log", p)
		}
	}
	// It expires by itself.
	e.clock.Advance(10 * time.Minute)
	a.must(409, "GET", "/api/v1/certificates/keylog", nil)
	if page := a.must(200, "GET", "/", nil); contains(page.body, "TLS key log is ON") {
		t.Error("expired key log still flagged")
	}
	a.must(200, "POST", "/api/v1/certificates/keylog", KeyLogRequest{Minutes: 5})
	a.must(200, "DELETE", "/api/v1/certificates/keylog", nil)
	a.must(409, "GET", "/api/v1/certificates/keylog", nil)
	for _, act := range []string{"tls.keylog.enable", "tls.keylog.download", "tls.keylog.disable"} {
		if !e.auditHas(act, "") {
			t.Errorf("%s not audited", act)
		}
	}
}

func TestExtensionsPasswordShownOnce(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op1", Role: auth.RoleOperator, Password: userPW})
	op := e.client("192.0.2.51")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})

	r := op.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "201"})
	pw := r.str("password")
	if len(pw) != sipPasswordLen || strings.ContainsAny(pw, "0O1lI") {
		t.Fatalf("generated password %q", pw)
	}
	if h, ok := e.exts.HA1("201", "MD5"); !ok || h == "" {
		t.Fatal("extension not in the SIP edge")
	}
	if r2 := op.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "202"}); r2.str("password") == pw {
		t.Fatal("two extensions got the same password")
	}
	op.must(409, "POST", "/api/v1/extensions", ExtensionRequest{User: "201"})
	for _, bad := range []string{"", "a b", "x/y", strings.Repeat("9", 65), "<script>"} {
		op.must(400, "POST", "/api/v1/extensions", ExtensionRequest{User: bad})
	}
	// Listing and the page never show a password again.
	for _, p := range []string{"/api/v1/extensions", "/extensions"} {
		if l := op.must(200, "GET", p, nil); !contains(l.body, "201") || contains(l.body, pw) {
			t.Errorf("%s: %s", p, l.body)
		}
	}
	r3 := op.must(200, "POST", "/api/v1/extensions/201/password", nil)
	if r3.str("password") == pw || len(r3.str("password")) != sipPasswordLen {
		t.Fatal("new password not generated")
	}
	op.must(404, "POST", "/api/v1/extensions/299/password", nil)
	op.must(200, "DELETE", "/api/v1/extensions/201", nil)
	op.must(404, "DELETE", "/api/v1/extensions/201", nil)
	if _, ok := e.exts.HA1("201", "MD5"); ok {
		t.Fatal("deleted extension still authenticates")
	}
	l, _ := e.srv.audit.Query(audit.Filter{})
	for _, x := range l {
		if strings.Contains(x.Detail, pw) || strings.Contains(string(x.After), pw) {
			t.Fatal("password in the audit log")
		}
	}
	if !e.auditHas("telephony.extension.create", "ok") || !e.auditHas("telephony.extension.delete", "ok") {
		t.Error("not audited")
	}
}

func TestFirewallAndSystemPages(t *testing.T) {
	e, a := claimed(t)
	e.pid1.bans = []netfw.Ban{{Prefix: netip.MustParsePrefix("203.0.113.9/32"), Reason: "admin-spray", Expires: e.clock.Now().Add(time.Hour)}}
	page := a.must(200, "GET", "/firewall", nil)
	if !contains(page.body, "203.0.113.9/32") || !contains(page.body, "drop-banned") {
		t.Fatalf("firewall page: %s", page.body)
	}
	dash := a.must(200, "GET", "/", nil)
	for _, want := range []string{"Firewall bans", "Certificate", "self-signed", "Audit log"} {
		if !contains(dash.body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	a.must(400, "POST", "/api/v1/firewall/unban", UnbanRequest{Prefix: "nonsense"})
	a.must(200, "POST", "/api/v1/firewall/unban", UnbanRequest{Prefix: "203.0.113.9"})
	if l, _ := e.pid1.ListBans(context.Background()); len(l) != 0 {
		t.Fatalf("ban not lifted: %v", l)
	}
	a.must(202, "POST", "/api/v1/system/reboot", nil)
	a.must(202, "POST", "/api/v1/system/poweroff", nil)
	if got := strings.Join(e.pid1.power, ","); got != "reboot,poweroff" {
		t.Fatalf("power requests %q", got)
	}
	if !e.auditHas("system.reboot", "ok") || !e.auditHas("firewall.unban", "ok") {
		t.Error("not audited")
	}
}

// TestShortIdleTimeout: with the shortest idle timeout, a session used
// every few seconds stays alive (LastSeen is refreshed often enough) and
// one left alone just past the timeout ends.
func TestShortIdleTimeout(t *testing.T) {
	e, a := claimed(t)
	e.setPolicy(a, func(p *auth.Policy) { p.IdleSeconds = auth.MinIdleSeconds })
	for range 10 {
		e.clock.Advance(auth.MinIdleSeconds * time.Second * 3 / 5)
		a.must(200, "GET", "/api/v1/me", nil)
	}
	e.clock.Advance(auth.MinIdleSeconds*time.Second + time.Second)
	a.must(401, "GET", "/api/v1/me", nil)
	p, _ := e.srv.auth.Policy()
	p.IdleSeconds = auth.MinIdleSeconds - 1
	b := e.client("192.0.2.50")
	b.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	b.must(400, "PUT", "/api/v1/security/policy", p)
}

// TestTLSChangeOverRealTLS drives a version change through a real HTTPS
// listener: the change's answer closes its connection, a client limited to
// the old settings can no longer connect, and a new TLS 1.3 connection
// confirms it.
func TestTLSChangeOverRealTLS(t *testing.T) {
	e, a := claimed(t)
	tok := a.must(201, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "tls", Scopes: []string{auth.ScopeAdmin}}).str("token")
	cfg, err := e.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewUnstartedServer(e.srv)
	ts.TLS, ts.Config.ConnContext = cfg, e.srv.ConnContext
	ts.StartTLS()
	defer ts.Close()
	client := func(maxVersion uint16) *http.Client {
		return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MaxVersion: maxVersion}}}
	}
	call := func(c *http.Client, method, path, body string) (int, string, error) {
		req, _ := http.NewRequest(method, ts.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b), nil
	}
	old := client(tls.VersionTLS12)
	code, body, err := call(old, "PUT", "/api/v1/certificates/tls", `{"min_version":"1.3","max_version":"1.3"}`)
	if err != nil || code != 202 {
		t.Fatalf("change: %d %s %v", code, body, err)
	}
	var ans PendingAnswer
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if _, _, err := call(old, "POST", "/api/v1/certificates/confirm", `{"id":"`+ans.ID+`"}`); err == nil {
		t.Fatal("a TLS 1.2 client still connects under minimum 1.3")
	}
	code, body, err = call(client(0), "POST", "/api/v1/certificates/confirm", `{"id":"`+ans.ID+`"}`)
	if err != nil || code != 200 {
		t.Fatalf("confirm over TLS 1.3: %d %s %v", code, body, err)
	}
	if got, _ := e.srv.tlsSettings(); got.MinVersion != "1.3" {
		t.Fatalf("stored %+v", got)
	}
}

// TestOriginFollowsCertificateNames: a name of the certificate in use (an
// upload or ACME, added after start) is the box's own origin; a wildcard
// name admits no other host.
func TestOriginFollowsCertificateNames(t *testing.T) {
	e, a := claimed(t)
	now := e.clock.Now()
	chain, key := testPEM(t, []string{"box.example", "pbx.example", "*.example"}, now.Add(-time.Hour), now.AddDate(0, 3, 0))
	body := AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "dave", Role: auth.RoleOperator, Password: userPW}
	c := *a
	c.origin = "https://pbx.example"
	c.must(403, "POST", "/api/v1/accounts", body)

	a.conn = e.srv.ConnContext(context.Background(), nil)
	r := a.must(202, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: chain, KeyPEM: key})
	a.conn = e.srv.ConnContext(context.Background(), nil)
	a.must(200, "POST", "/api/v1/certificates/confirm", ConfirmRequest{ID: r.str("id")})

	c.must(201, "POST", "/api/v1/accounts", body)
	c.origin = "https://evil.example" // covered by *.example only
	c.must(403, "DELETE", "/api/v1/accounts/dave", nil)
}
