package main

import (
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// licenceServer runs the reference vendor server (cmd/licensed's) on
// loopback over TLS with the vendor key the test binary trusts. It returns
// the server, its URL and a PEM file of its certificate for --license-ca.
func licenceServer(t *testing.T) (*phonehome.Server, string, string) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "licensed.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	srv, err := phonehome.New(db, vendorPriv, "", time.Now, slog.New(slog.DiscardHandler))
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
	if err := srv.PutLicence(phonehome.Licence{ID: "LIC-T1", ValidUntil: time.Now().Add(365 * 24 * time.Hour), MaxExtensions: 10, MaxTrunks: 2}); err != nil {
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

	// The check-in anchored the audit chain head: an auditor finds the
	// anchored entry in the box's log with the anchored hash.
	logs, err := srv.Anchors("LIC-T1")
	if err != nil || len(logs) != 1 || len(logs[0].Anchors) != 1 || logs[0].Serial != serial || logs[0].Flag != nil {
		t.Fatalf("anchors %+v, %v", logs, err)
	}
	anc := logs[0].Anchors[0]
	var entries struct {
		Entries []struct {
			Seq  uint64 `json:"seq"`
			Hash string `json:"hash"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(admin.must(200, "GET", "/api/v1/audit?limit=1000", nil), &entries); err != nil {
		t.Fatal(err)
	}
	found := anc.Seq == 0 && anc.Hash == strings.Repeat("0", 32)
	for _, e := range entries.Entries {
		if e.Seq == anc.Seq {
			found = strings.HasPrefix(e.Hash, anc.Hash)
		}
	}
	if !found {
		t.Fatalf("anchor %+v not in the box's audit log %+v", anc, entries.Entries)
	}
	t.Logf("anchored audit seq %d hash %s", anc.Seq, anc.Hash)
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

// TestDevModeLicenceAuditRollback: the vendor anchored this box's audit log
// at a sequence number its log no longer reaches (a restored backup, a log
// cut short). The signed answer says so; the box records a security event
// (log, audit entry "audit chain anchor mismatch at seq N", the admins'
// licence banner) and keeps full service.
func TestDevModeLicenceAuditRollback(t *testing.T) {
	srv, url, ca := licenceServer(t)
	if err := srv.PutLicence(phonehome.Licence{ID: "LIC-T2", ValidUntil: time.Now().Add(365 * 24 * time.Hour), MaxExtensions: 10, MaxTrunks: 2}); err != nil {
		t.Fatal(err)
	}
	// A dev box whose identity the test knows, and yesterday's check-in of
	// that box, which anchored its log at seq 1000000.
	dir := t.TempDir()
	const serial, install = "DEVA0D17", "a0d17a0d17a0d17a"
	ident, _ := json.Marshal(map[string]any{"device_key": make([]byte, 32), "serial": serial, "install_id": install})
	writeFile(t, filepath.Join(dir, "identity.json"), ident)
	old := license.Anchor{Seq: 1000000, Hash: [license.AnchorHashBytes]byte{1, 2, 3}}
	req := &license.Request{V: 1, Nonce: strings.Repeat("ab", 16), Serial: serial, InstallID: install,
		Fingerprint: hardwareFingerprint("/", serial), Firmware: "test-build", LicenceID: "LIC-T2", Audit: old.String()}
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Answer(req, 0); err != nil {
		t.Fatal(err)
	}

	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "",
		"--license-url", url, "--license-id", "LIC-T2", "--license-ca", ca)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	p.waitLine(t, regexp.MustCompile(`msg="license: audit chain anchor mismatch at seq 1000000" reason="log cut short`))

	logs, err := srv.Anchors("LIC-T2")
	if err != nil || len(logs) != 1 || logs[0].Flag == nil || logs[0].Flag.Seq != 1000000 || len(logs[0].Anchors) != 2 {
		t.Fatalf("vendor side %+v, %v", logs, err)
	}
	// A warning, never a degradation: the PBX keeps full service.
	if h := getHealthz(t, base, fp); h.License.Mode != string(license.ModeWarning) {
		t.Fatalf("/healthz licence %+v", h.License)
	}
	admin := claimBox(t, base, fp, code)
	out := string(admin.must(200, "GET", "/api/v1/audit?action=audit.anchor_mismatch", nil))
	if !strings.Contains(out, "audit chain anchor mismatch at seq 1000000") || strings.Count(out, `"audit.anchor_mismatch"`) != 1 {
		t.Fatalf("no single audit entry for the mismatch: %.800s", out)
	}
	if page := string(admin.must(200, "GET", "/", nil)); !strings.Contains(page, "audit chain anchor mismatch at seq 1000000") {
		t.Fatalf("no banner on the dashboard:\n%.2000s", page)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}
