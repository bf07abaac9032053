package main

import (
	"encoding/pem"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepbx/edgepbx/cmd/licensed/server"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// licenceServer runs the reference vendor server (cmd/licensed's) on
// loopback over TLS with the vendor key the test binary trusts. It returns
// the server, its URL and a PEM file of its certificate for --license-ca.
func licenceServer(t *testing.T) (*server.Server, string, string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "licensed.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv, err := server.New(db, vendorPriv, "", time.Now, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewTLSServer(srv.Handler())
	t.Cleanup(ts.Close)
	ca := filepath.Join(t.TempDir(), "licensed-ca.pem")
	writeFile(t, ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw}))
	return srv, ts.URL, ca
}

// TestDevModeLicence: with --license-url the daemon checks in with the real
// vendor server at start (a new box is overdue), the signed answer is
// accepted, and /healthz shows the licence state.
func TestDevModeLicence(t *testing.T) {
	srv, url, ca := licenceServer(t)
	if err := srv.PutLicence(server.Licence{ID: "LIC-T1", ValidUntil: time.Now().Add(365 * 24 * time.Hour), MaxExtensions: 10, MaxTrunks: 2}); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "",
		"--license-url", url, "--license-id", "LIC-T1", "--license-ca", ca)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	serial := p.waitLine(t, serialRE2)[1]
	p.waitLine(t, regexp.MustCompile(`msg="licence check-in good" .*status=ok`))

	// Full service; "warning" only because the vendor server judges the
	// load it was sent too high for the hardware (this machine is shared,
	// the load is real), never degraded.
	h := getHealthz(t, base, fp)
	if !h.License.Configured || h.License.LastGood.IsZero() || h.License.Error != "" ||
		(h.License.Mode != string(license.ModeFull) && !strings.Contains(p.output(), `mode=warning reasons=[performance]`)) {
		t.Fatalf("/healthz licence %+v:\n%s", h.License, p.output())
	}
	cks, err := srv.Checkins("LIC-T1")
	if err != nil {
		t.Fatal(err)
	}
	if len(cks) != 1 {
		t.Fatalf("%d check-ins recorded, want 1", len(cks))
	}
	ck := cks[0]
	if ck.Serial != serial || ck.Firmware != "test-build" || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(ck.Fingerprint) {
		t.Fatalf("check-in %+v", ck)
	}
	if ck.Load.CPUs != runtime.NumCPU() || ck.Load.MemMB <= 0 || ck.Load.CPUPercent < 0 || ck.Load.CPUPercent > 100 || ck.Counts.Extensions != 0 {
		t.Fatalf("check-in load/counts %+v %+v", ck.Load, ck.Counts)
	}
	if ck.Bytes > license.MaxRequestBytes {
		t.Fatalf("check-in request %d bytes", ck.Bytes)
	}
	t.Logf("check-in request body: %d bytes", ck.Bytes)

	// The mode change is in the audit log for the admin.
	admin := claimBox(t, base, fp, code)
	out := string(admin.must(200, "GET", "/api/v1/audit?action=license.state", nil))
	if !strings.Contains(out, `"license.state"`) || !strings.Contains(out, `"system"`) {
		t.Fatalf("no licence state in the audit log: %.500s", out)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), `msg="service: stopped" service=license`) {
		t.Fatalf("licence service did not stop gracefully:\n%s", p.output())
	}
}

// TestDevModeLicenceProblems: an unreachable server keeps full service
// (grace) and says so; a phone-home that cannot be set up (missing CA file)
// is reported but does not take the PBX down.
func TestDevModeLicenceProblems(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		// A licence server's CA, but an address nobody listens on any more.
		_, _, ca := licenceServer(t)
		closed := httptest.NewTLSServer(nil)
		dead := closed.URL
		closed.Close()
		p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "",
			"--license-url", dead, "--license-ca", ca)
		base := p.waitLine(t, adminRE)[1]
		fp := p.waitLine(t, fpRE)[1]
		p.waitLine(t, regexp.MustCompile(`msg="licence check-in failed"`))
		h := getHealthz(t, base, fp)
		if !h.License.Configured || h.License.Mode != string(license.ModeFull) || !h.License.LastGood.IsZero() {
			t.Fatalf("/healthz licence while offline %+v", h.License)
		}
		if code := p.stop(t); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	})
	t.Run("missing CA file", func(t *testing.T) {
		p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "",
			"--license-url", "https://127.0.0.1:1", "--license-ca", filepath.Join(t.TempDir(), "nope.pem"))
		base := p.waitLine(t, adminRE)[1]
		fp := p.waitLine(t, fpRE)[1]
		h := getHealthz(t, base, fp)
		if !h.License.Configured || h.License.Mode != "unavailable" || h.License.Error == "" {
			t.Fatalf("/healthz licence %+v", h.License)
		}
		if !strings.Contains(p.output(), `msg="license: phone-home disabled"`) || !strings.Contains(p.output(), "nope.pem") {
			t.Fatalf("no clear log line:\n%s", p.output())
		}
		if code := p.stop(t); code != 0 {
			t.Fatalf("SIGTERM: exit %d", code)
		}
	})
}
