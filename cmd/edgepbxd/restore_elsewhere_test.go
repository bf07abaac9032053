package main

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// TestDevModeRestoreElsewhere: the real daemon, two boxes (two data
// directories: two serials, two device keys). Box A makes a backup; box B
// restores it through the admin API, exits so that it is started again on
// the restored store, and then tells the vendor in its first check-in that
// its data came from box A; its audit chain records the restore. B keeps
// its own serial. A's uploaded music on hold comes along and replaces
// B's own, byte for byte.
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
	dirA := t.TempDir()
	pa, baseA, fpA, codeA, serialA := start(dirA, true)
	a := claimBox(t, baseA, fpA, codeA)
	raw(a, "PUT", "/api/v1/moh/lobby", wav.Encode(8000, toneSamples(8000, 3, 523)))
	lobby := mohFile(t, dirA, "lobby")
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
	raw(b, "PUT", "/api/v1/moh/mine", wav.Encode(16000, toneSamples(16000, 1, 300)))
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
	var classes []struct {
		Name     string
		Uploaded bool
	}
	if err := json.Unmarshal(b2.must(200, "GET", "/api/v1/moh", nil), &classes); err != nil {
		t.Fatal(err)
	}
	var uploaded []string
	for _, c := range classes {
		if c.Uploaded {
			uploaded = append(uploaded, c.Name)
		}
	}
	if !slices.Equal(uploaded, []string{"lobby"}) {
		t.Errorf("box B's music after the restore: %+v", classes)
	}
	if got := mohFile(t, dirB, "lobby"); !bytes.Equal(got, lobby) {
		t.Errorf("restored class: %d bytes, A stored %d", len(got), len(lobby))
	}
	if code := pb2.stop(t); code != 0 {
		t.Fatalf("box B: exit %d", code)
	}
}

// toneSamples is secs seconds of hz at rate.
func toneSamples(rate int, secs float64, hz float64) []int16 {
	pcm := make([]int16, int(float64(rate)*secs))
	for i := range pcm {
		pcm[i] = int16(8000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return pcm
}

// mohFile is the stored file of a music-on-hold class under a box's
// data directory.
func mohFile(t *testing.T, dir, class string) []byte {
	t.Helper()
	var found []byte
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && filepath.Base(filepath.Dir(p)) == "moh" && d.Name() == class+".wav" {
			found, err = os.ReadFile(p)
		}
		return err
	})
	if err != nil || found == nil {
		t.Fatalf("music class %s under %s: %v", class, dir, err)
	}
	return found
}
