package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// testssl finds Debian's testssl.sh; without it the test skips unless CI is set.
func testssl(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"testssl", "testssl.sh"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	netnstest.Unavailable(t, "needs testssl.sh (Debian package testssl.sh)")
	return ""
}

type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

// TestTestSSL runs testssl.sh (protocols, cipher categories, every cipher
// per protocol, forward secrecy) against the dev daemon's HTTPS port: no
// protocol below TLS 1.2, no weak cipher, nothing rated above LOW. Then
// the admin raises the minimum to TLS 1.3 through the API and new
// connections follow without a restart.
func TestTestSSL(t *testing.T) {
	bin := testssl(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	addr := strings.TrimPrefix(base, "https://")

	out := filepath.Join(t.TempDir(), "testssl.json")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang guard
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-p", "-s", "-E", "-f", "--quiet", "--color", "0", "--warnings", "batch",
		"--jsonfile", out, addr)
	if log, err := cmd.CombinedOutput(); err != nil && ctx.Err() != nil {
		t.Fatalf("testssl: %v\n%s", err, log)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var findings []testsslFinding
	if err := json.Unmarshal(raw, &findings); err != nil {
		t.Fatalf("testssl JSON: %v", err)
	}
	got := map[string]testsslFinding{}
	ciphers := 0
	for _, f := range findings {
		got[f.ID] = f
		switch f.Severity {
		case "MEDIUM", "HIGH", "CRITICAL":
			t.Errorf("testssl %s %s: %s", f.ID, f.Severity, f.Finding)
		}
		if strings.HasPrefix(f.ID, "cipher-tls") {
			ciphers++
			// TLS 1.2: ECDHE with AEAD only; TLS 1.3 suites are all AEAD.
			if !strings.Contains(f.Finding, "GCM") && !strings.Contains(f.Finding, "CHACHA20") {
				t.Errorf("non-AEAD cipher offered: %s", f.Finding)
			}
			if strings.HasPrefix(f.ID, "cipher-tls1_2") && !strings.Contains(f.Finding, "ECDHE") {
				t.Errorf("TLS 1.2 cipher without ECDHE: %s", f.Finding)
			}
		}
	}
	for id, want := range map[string]string{
		"SSLv2": "not offered", "SSLv3": "not offered", "TLS1": "not offered", "TLS1_1": "not offered",
		"TLS1_2": "offered", "TLS1_3": "offered",
		"cipherlist_NULL": "not offered", "cipherlist_aNULL": "not offered", "cipherlist_EXPORT": "not offered",
		"cipherlist_LOW": "not offered", "cipherlist_3DES_IDEA": "not offered", "cipherlist_AVERAGE": "not offered",
		"PFS": "offered",
	} {
		f, ok := got[id]
		if !ok || !strings.HasPrefix(f.Finding, want) {
			t.Errorf("testssl %s = %q, want %q", id, f.Finding, want)
		}
	}
	if ciphers == 0 {
		t.Fatalf("testssl listed no ciphers:\n%s", raw)
	}

	// The TLS settings apply to new connections at once, pending until
	// confirmed over a connection that uses them.
	c := claimBox(t, base, fp, code)
	c.must(http.StatusBadRequest, "PUT", "/api/v1/certificates/tls", admin.TLSSettings{MinVersion: "1.1", MaxVersion: "1.3"})
	var pend admin.PendingAnswer
	if err := json.Unmarshal(c.must(http.StatusAccepted, "PUT", "/api/v1/certificates/tls", admin.TLSSettings{MinVersion: "1.3", MaxVersion: "1.3"}), &pend); err != nil || pend.ID == "" {
		t.Fatalf("pending answer %+v: %v", pend, err)
	}
	if err := tlsVersion(addr, fp, tls.VersionTLS12); err == nil {
		t.Fatal("TLS 1.2 accepted after the minimum was raised to 1.3")
	}
	if err := tlsVersion(addr, fp, tls.VersionTLS13); err != nil {
		t.Fatalf("TLS 1.3: %v", err)
	}
	c.must(http.StatusOK, "POST", "/api/v1/certificates/confirm", admin.ConfirmRequest{ID: pend.ID})
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
