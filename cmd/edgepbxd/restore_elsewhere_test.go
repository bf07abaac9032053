package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
)

// TestDevModeRestoreElsewhere: the real daemon, two boxes (two data
// directories: two serials, two device keys). Box A makes a backup; box B
// restores it through the admin API, exits so that it is started again on
// the restored store, and then tells the vendor in its first check-in that
// its data came from box A; its audit chain records the restore. B keeps
// its own serial.
func TestDevModeRestoreElsewhere(t *testing.T) {
	srv, url, ca := licenceServer(t)
	if err := srv.PutLicence(phonehome.Licence{ID: "LIC-RB", ValidUntil: time.Now().Add(365 * 24 * time.Hour), MaxExtensions: 10, MaxTrunks: 2}); err != nil {
		t.Fatal(err)
	}
	// start runs a box; code is its setup code while it is unclaimed.
	start := func(dir string, unclaimed bool, extra ...string) (p *proc, base, fp, code, serial string) {
		p = startProc(t, procOpts{noFD3: true}, append([]string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", ""}, extra...)...)
		base = p.waitLine(t, adminRE)[1]
		fp = p.waitLine(t, fpRE)[1]
		if unclaimed {
			code = p.waitLine(t, setupRE)[1]
		}
		serial = p.waitLine(t, serialRE2)[1]
		return p, base, fp, code, serial
	}
	raw := func(c *apiClient, method, path string, body []byte) []byte {
		t.Helper()
		req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		if method != http.MethodGet {
			req.Header.Set("Origin", c.origin)
			req.Header.Set("X-CSRF-Token", c.csrf)
		}
		res, err := c.c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		out, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
		if err != nil || res.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %d %v %s", method, path, res.StatusCode, err, out)
		}
		return out
	}
	proof := map[string]string{"current_password": testAdminPW}

	// Box A: a backup to a new backup key.
	pa, baseA, fpA, codeA, serialA := start(t.TempDir(), true)
	a := claimBox(t, baseA, fpA, codeA)
	var key struct{ Identity string }
	if err := json.Unmarshal(a.must(200, "POST", "/api/v1/backups/key", proof), &key); err != nil || key.Identity == "" {
		t.Fatalf("backup key: %v", err)
	}
	var made struct{ Name string }
	// With media: the daemon wires its recording store into backups (a box
	// without one answers 400).
	if err := json.Unmarshal(a.must(201, "POST", "/api/v1/backups", map[string]any{"media": true}), &made); err != nil {
		t.Fatal(err)
	}
	file := raw(a, "GET", "/api/v1/backups/"+made.Name, nil)
	if code := pa.stop(t); code != 0 {
		t.Fatalf("box A: exit %d", code)
	}

	// Box B: claimed by its installer, then A's backup restored.
	dirB := t.TempDir()
	pb, baseB, fpB, codeB, serialB := start(dirB, true)
	if serialB == serialA {
		t.Fatalf("both boxes are %s", serialA)
	}
	b := claimBox(t, baseB, fpB, codeB)
	var up struct{ Upload string }
	if err := json.Unmarshal(raw(b, "POST", "/api/v1/backups/upload", file), &up); err != nil {
		t.Fatal(err)
	}
	out := b.must(200, "POST", "/api/v1/backups/restore", map[string]string{"upload": up.Upload, "identity": key.Identity,
		"current_password": testAdminPW})
	if !strings.Contains(string(out), "restored") {
		t.Fatalf("restore: %s", out)
	}
	pb.wait(t) // edgepbxd ends after a restore; PID 1 starts it again
	if !strings.Contains(pb.output(), `msg="backup: restored" from_serial=`+serialA+` other_box=true`) {
		t.Fatalf("box B's log:\n%s", pb.output())
	}

	// Started again, now with the vendor: same serial, data from A, and
	// the first check-in names A.
	pb2, baseB2, fpB2, _, serialB2 := start(dirB, false, "--license-url", url, "--license-id", "LIC-RB", "--license-ca", ca)
	if serialB2 != serialB || fpB2 != fpB {
		t.Fatalf("box B came back as %s %s, was %s %s", serialB2, fpB2, serialB, fpB)
	}
	pb2.waitLine(t, regexp.MustCompile(`msg="licence check-in good"`))
	cks, err := srv.Checkins("LIC-RB")
	if err != nil || len(cks) != 1 || cks[0].Serial != serialB || cks[0].RestoredFrom != serialA {
		t.Fatalf("vendor's record of B's check-in: %+v %v", cks, err)
	}
	b2 := newAPIClient(t, baseB2, fpB2)
	b2.login(b2.must(200, "POST", "/api/v1/login", map[string]string{"username": testAdmin, "password": testAdminPW}))
	audit := string(b2.must(200, "GET", "/api/v1/audit?action=backup.restore", nil))
	if !strings.Contains(audit, "restored backup of box "+serialA) {
		t.Fatalf("no restore in B's audit chain: %.800s", audit)
	}
	if code := pb2.stop(t); code != 0 {
		t.Fatalf("box B: exit %d", code)
	}
}
