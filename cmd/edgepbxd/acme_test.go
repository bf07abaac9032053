package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/certs/pebbletest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

const acmeName = "pbx.edgepbx.test"

var acmeInstalledRE = regexp.MustCompile(`msg="acme: certificate installed" .*fingerprint=([0-9A-F:]{95})`)

// byName is an HTTPS client that trusts only pebble's root and reaches the
// box by its public name, as a phone or browser on the Internet would.
func byName(roots *x509.CertPool, jar http.CookieJar) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Jar: jar, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: acmeName, RootCAs: roots, MinVersion: tls.VersionTLS12},
		// A new handshake per request: each sees the certificate served now.
		DisableKeepAlives: true,
	}}
}

type auditEntry struct {
	Actor, Action, Target, Outcome, Detail string
}

// lastAudit is the newest audit entry with exactly this action.
func lastAudit(t *testing.T, a *apiClient, action string) auditEntry {
	t.Helper()
	var l struct{ Entries []auditEntry }
	if err := json.Unmarshal(a.must(http.StatusOK, "GET", "/api/v1/audit?action="+action, nil), &l); err != nil {
		t.Fatal(err)
	}
	for i := len(l.Entries) - 1; i >= 0; i-- { // oldest first
		if e := l.Entries[i]; e.Action == action {
			return e
		}
	}
	t.Fatalf("no %s audit entry in %+v", action, l.Entries)
	return auditEntry{}
}

func acmeView(t *testing.T, a *apiClient) admin.ACMEView {
	t.Helper()
	var v admin.ACMEView
	if err := json.Unmarshal(a.must(http.StatusOK, "GET", "/api/v1/certificates/acme", nil), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestDevModeACME: an admin enables ACME over the API; edgepbxd gets its
// certificate from pebble over TLS-ALPN-01 on its own HTTPS port, serves
// it to clients that trust pebble's root by the public name (the
// self-signed one stays for the box's own names), renews on request (also
// over HTTP-01 when the admin gives it a port-80 path), and after a
// restart serves the stored one without a new order. A CA it
// cannot trust is a failure shown to the admin, with the self-signed
// certificate still served.
func TestDevModeACME(t *testing.T) {
	port, httpPort := netnstest.FreePort(t, "tcp"), netnstest.FreePort(t, "tcp")
	ca := pebbletest.Start(t, pebbletest.Options{TLSPort: port, HTTPPort: httpPort})
	dir := t.TempDir()
	args := []string{"--dev", dir, "--https", fmt.Sprintf("127.0.0.1:%d", port), "--sip", "127.0.0.1:0", "--sip-tls", ""}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	selfFP := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	adm := claimBox(t, base, selfFP, code)
	if v := acmeView(t, adm); v.Settings.Enabled || !v.Running || v.Status.State != certs.ACMEOff {
		t.Fatalf("initial ACME view %+v", v)
	}

	// Without pebble's listener certificate the directory is not trusted:
	// a failure, reported, and nothing changes.
	set := admin.ACMERequest{Enabled: true, Names: []string{acmeName}, Email: "ops@edgepbx.test", DirectoryURL: ca.DirURL}
	adm.must(http.StatusOK, "PUT", "/api/v1/certificates/acme", set)
	p.waitLine(t, regexp.MustCompile(`msg="acme: certificate not obtained`))
	v := acmeView(t, adm)
	if v.Status.State != certs.ACMEFailed || v.Status.Failures != 1 || !strings.Contains(v.Status.LastError, "certificate") {
		t.Fatalf("status after a failed order %+v", v.Status)
	}
	page := string(adm.must(http.StatusOK, "GET", "/certificates", nil))
	if !strings.Contains(page, "Last attempt failed") {
		t.Fatalf("certificates page does not show the failure")
	}
	if e := lastAudit(t, adm, "certs.acme"); e.Actor != "system" || e.Outcome != "failed" || e.Target != acmeName || !strings.Contains(e.Detail, "certificate") {
		t.Fatalf("audit of the failure %+v", e)
	}
	if h := getHealthz(t, base, selfFP); h.Status != "ok" {
		t.Fatalf("healthz %+v", h)
	}

	// Trusting pebble's listener: issued over TLS-ALPN-01 on this port.
	set.CAPEM = string(ca.ListenerPEM)
	adm.must(http.StatusOK, "PUT", "/api/v1/certificates/acme", set)
	first := p.waitLine(t, acmeInstalledRE)[1]
	if first == selfFP {
		t.Fatal("installed certificate is the self-signed one")
	}
	roots := ca.Roots(t)
	pub := byName(roots, adm.c.Jar)
	defer pub.CloseIdleConnections()
	checkServed := func(want string) {
		t.Helper()
		resp, err := pub.Get(base + "/healthz")
		if err != nil {
			t.Fatalf("client trusting pebble's root, by %s: %v", acmeName, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if got := certs.FingerprintOf(resp.TLS.PeerCertificates[0].Raw); resp.StatusCode != http.StatusOK || got != want {
			t.Fatalf("by name: %s, certificate %s, want %s", resp.Status, got, want)
		}
	}
	checkServed(first)
	// The admin session works through the public name too (reads carry no Origin).
	pubAdm := *adm
	pubAdm.c = pub
	v = acmeView(t, &pubAdm)
	if e := lastAudit(t, &pubAdm, "certs.acme"); e.Actor != "system" || e.Outcome != "ok" || e.Target != acmeName {
		t.Fatalf("audit of the issuance %+v", e)
	}
	if v.Status.State != certs.ACMEIdle || v.Status.LastSuccess.IsZero() || v.Status.LastError != "" || v.Status.Failures != 0 {
		t.Fatalf("status after issuance %+v", v.Status)
	}
	var cs struct {
		Current    certs.Info `json:"current"`
		SelfSigned certs.Info `json:"self_signed"`
	}
	if err := json.Unmarshal(pubAdm.must(http.StatusOK, "GET", "/api/v1/certificates", nil), &cs); err != nil ||
		cs.Current.Source != certs.SourceACME || cs.Current.Fingerprint != first || cs.SelfSigned.Fingerprint != selfFP {
		t.Fatalf("certificates %+v %v", cs, err)
	}

	// Renew now: a new order and a new certificate although none is due.
	renew := pubAdm
	renew.origin = base
	renew.must(http.StatusAccepted, "POST", "/api/v1/certificates/acme/renew", nil)
	second := p.waitLine(t, acmeInstalledRE)[1]
	if second == first {
		t.Fatal("renew now installed the same certificate")
	}
	checkServed(second)

	// With a port-80 path (here a loopback port pebble validates on),
	// HTTP-01 works too; the listener is open only during the order.
	set.Challenge, set.HTTPAddr = certs.ChallengeHTTP01, fmt.Sprintf("127.0.0.1:%d", httpPort)
	renew.must(http.StatusOK, "PUT", "/api/v1/certificates/acme", set)
	p.waitLine(t, regexp.MustCompile(`msg="acme: certificate current"`)) // saving alone does not renew
	renew.must(http.StatusAccepted, "POST", "/api/v1/certificates/acme/renew", nil)
	third := p.waitLine(t, acmeInstalledRE)[1]
	if third == second {
		t.Fatal("http-01 renewal installed the same certificate")
	}
	checkServed(third)
	if c, err := net.Dial("tcp", set.HTTPAddr); err == nil {
		c.Close()
		t.Fatalf("http-01 listener %s still open after the order", set.HTTPAddr)
	}
	second = third
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}

	// Restart: the stored certificate is served at once, no new order, and
	// the public name is now one of the box's origins.
	p = startProc(t, procOpts{noFD3: true}, args...)
	if got := p.waitLine(t, listenRE)[2]; got != second {
		t.Fatalf("after restart serving %s, want the ACME certificate %s", got, second)
	}
	p.waitLine(t, regexp.MustCompile(`msg="acme: certificate current"`))
	if strings.Contains(p.output(), "acme: certificate due") {
		t.Fatalf("restart ordered a new certificate:\n%s", p.output())
	}
	checkServed(second)
	c := newAPIClient(t, base, second)
	c.c = byName(roots, c.c.Jar)
	c.origin = "https://" + acmeName
	c.login(c.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	if v := acmeView(t, c); v.Status.State != certs.ACMEIdle || !v.Settings.Enabled {
		t.Fatalf("status after restart %+v", v)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
