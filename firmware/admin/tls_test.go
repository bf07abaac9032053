package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
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
	// The page shows the refusal's reason through the API answer; the good one installs.
	r := a.must(200, "POST", "/api/v1/certificates", CertificateRequest{ChainPEM: good, KeyPEM: goodKey})
	if cur := e.certs.Current(); cur.Source != certs.SourceUpload || cur.Fingerprint == self.Fingerprint || !contains(r.body, cur.Fingerprint) {
		t.Fatalf("after upload: %+v", cur)
	}
	if !e.auditHas("certs.upload", "ok") {
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
	a.must(200, "PUT", "/api/v1/certificates/tls", TLSSettings{MinVersion: "1.3", MaxVersion: "1.3"})
	// Applies to new connections without a restart.
	if _, err := handshakeWith(cfg, tls.VersionTLS12, tls.VersionTLS12); err == nil {
		t.Fatal("TLS 1.2 accepted with minimum 1.3")
	}
	if v, err := handshakeWith(cfg, 0, 0); err != nil || v != tls.VersionTLS13 {
		t.Fatalf("TLS 1.3: %v %v", v, err)
	}
	// Stored: a restarted server applies it too.
	cfg2, err := e.srv.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := handshakeWith(cfg2, tls.VersionTLS12, tls.VersionTLS12); err == nil {
		t.Fatal("stored minimum not applied")
	}
	if !e.auditHas("tls.versions.update", "ok") {
		t.Error("not audited")
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
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Username: "op1", Role: auth.RoleOperator, Password: userPW})
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
