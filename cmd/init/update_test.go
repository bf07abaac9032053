package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
	"github.com/edgepbx/edgepbx/init/update"
	"github.com/edgepbx/edgepbx/netfw"
)

// TestUpdateTrust: PID 1 takes the release and the update keys from the
// image; a missing or malformed one leaves updates off, with the reason.
func TestUpdateTrust(t *testing.T) {
	k, _ := bundle.GenerateKey(bundle.RoleRelease)
	ring, _ := bundle.MarshalKeyring([]bundle.KeyringKey{k.Public()})
	for _, tc := range []struct {
		name, release string
		keyring       []byte
		err           string
	}{
		{"good", `{"board":"pc-x86_64","version":"1.2.0","version_number":120,"floor":110}`, ring, ""},
		{"no keyring", `{"board":"pc-x86_64","version":"1.2.0","version_number":120,"floor":110}`, nil, "keyring"},
		{"floor above version", `{"board":"pc-x86_64","version":"1.2.0","version_number":120,"floor":130}`, ring, "floor"},
		{"unknown field", `{"board":"pc-x86_64","version":"1.2.0","version_number":120,"floor":1,"debug":true}`, ring, "release"},
		{"no release", "", ring, "release file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			os.MkdirAll(filepath.Join(root, "etc/edgepbx"), 0o755)
			if tc.release != "" {
				os.WriteFile(filepath.Join(root, update.ReleasePath), []byte(tc.release), 0o644)
			}
			if tc.keyring != nil {
				os.WriteFile(filepath.Join(root, bundle.KeyringPath), tc.keyring, 0o644)
			}
			rel, keys, err := updateTrust(root)
			if tc.err == "" {
				if err != nil || rel.VersionNumber != 120 || keys.Len() != 1 {
					t.Fatalf("%+v %v", rel, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("want an error naming %q, got %v", tc.err, err)
			}
		})
	}
}

// TestTrialHealthy: a trial counts as healthy only with the firewall
// applied and a recent ready report from edgepbxd; the reason is kept
// for the rollback message.
func TestTrialHealthy(t *testing.T) {
	b := &box{start: time.Now(), health: healthState{onChange: make(chan struct{}, 1)}}
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "firewall") {
		t.Fatalf("no firewall: %v %q", ok, why)
	}
	b.fw = &netfw.Firewall{}
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "not reported") {
		t.Fatalf("no report (the watchdog's boot grace does not count): %v %q", ok, why)
	}
	b.health.set(control.Health{Ready: false, Detail: "store: damaged"})
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "store: damaged") {
		t.Fatalf("not ready: %v %q", ok, why)
	}
	b.health.set(control.Health{Ready: true})
	if ok, _ := b.trialHealthy(); !ok {
		t.Fatal("ready and recent is healthy")
	}
	b.licenceBefore = control.LicenceFull
	b.health.set(control.Health{Ready: true, Licence: control.LicenceWarning})
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "worse") {
		t.Fatalf("licence worse than before the update: %v %q", ok, why)
	}
	b.health.set(control.Health{Ready: true, Licence: control.LicenceFull})
	if ok, _ := b.trialHealthy(); !ok {
		t.Fatal("licence as good as before is healthy")
	}
	b.health.mu.Lock()
	b.health.at = time.Now().Add(-healthMaxAge)
	b.health.mu.Unlock()
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "stopped") {
		t.Fatalf("stale: %v %q", ok, why)
	}
	if b.updater() != nil {
		t.Fatal("a box without updates must hand the control socket a nil Updater")
	}
}

// TestUpdateArgs: edgepbxd pulls from the repository the image names,
// and only when PID 1 can install what it pulls.
func TestUpdateArgs(t *testing.T) {
	b := &box{trialCfg: &update.TrialConfig{Running: update.Release{Repo: "https://updates.example/r/"}}}
	if a := b.updateArgs(); a != nil {
		t.Fatalf("without an installer: %q", a)
	}
	b.updates = &update.Service{}
	if a := strings.Join(b.updateArgs(), " "); a != "--update-repo https://updates.example/r/ --update-root /etc/edgepbx/update-root.json" {
		t.Fatalf("args %q", a)
	}
	b.trialCfg.Running.RepoCA = true
	if a := strings.Join(b.updateArgs(), " "); a != "--update-repo https://updates.example/r/ --update-root /etc/edgepbx/update-root.json --update-ca /etc/edgepbx/update-ca.pem" {
		t.Fatalf("args with the repository's own CA %q", a)
	}
	b.trialCfg.Running.Repo = ""
	if a := b.updateArgs(); a != nil {
		t.Fatalf("no repository: %q", a)
	}
}

// TestAdminAnswers: a trial counts the admin side as answering only when
// /healthz answers 200 over TLS with the certificate edgepbxd reported.
func TestAdminAnswers(t *testing.T) {
	var status atomic.Int32
	status.Store(http.StatusOK)
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(status.Load()))
	}))
	defer ts.Close()
	sum := sha256.Sum256(ts.Certificate().Raw)
	var parts []string
	for _, c := range sum {
		parts = append(parts, fmt.Sprintf("%02X", c))
	}
	fp := strings.Join(parts, ":")
	addr := strings.TrimPrefix(ts.URL, "https://")
	ctx := context.Background()
	if err := adminAnswers(ctx, addr, fp); err != nil {
		t.Fatal(err)
	}
	if err := adminAnswers(ctx, addr, strings.Repeat("00:", 31)+"00"); err == nil || !strings.Contains(err.Error(), "another certificate") {
		t.Fatalf("wrong certificate: %v", err)
	}
	if err := adminAnswers(ctx, addr, ""); err == nil {
		t.Fatal("no fingerprint reported")
	}
	status.Store(http.StatusServiceUnavailable)
	if err := adminAnswers(ctx, addr, fp); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("503: %v", err)
	}
	b := &box{start: time.Now(), health: healthState{onChange: make(chan struct{}, 1)}, fw: &netfw.Firewall{},
		adminProbe: func(f string) error { return adminAnswers(ctx, addr, f) }}
	b.health.set(control.Health{Ready: true, TLSFingerprint: fp})
	if ok, why := b.trialHealthy(); ok || !strings.Contains(why, "503") {
		t.Fatalf("trial with an admin side answering 503: %v %q", ok, why)
	}
	status.Store(http.StatusOK)
	if ok, why := b.trialHealthy(); !ok {
		t.Fatalf("trial with everything up: %q", why)
	}
}

// TestVersionFloorInTPM: with a TPM the firmware version floor is kept in
// its NV floors too, so deleting the file or restoring an older /data does
// not lower it; the higher of file and TPM holds, and a raise reaches both.
func TestVersionFloorInTPM(t *testing.T) {
	tpm := swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
	hw, err := keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock))
	if err != nil {
		t.Fatal(err)
	}
	file := update.FileFloor{Path: filepath.Join(t.TempDir(), "floor")}
	f := versionFloor{file: file, hw: hw}
	if err := f.Raise(7); err != nil {
		t.Fatal(err)
	}
	if v, _ := file.Get(); v != 7 || hw.All()[control.UpdateVersionFloor] != 7 {
		t.Fatalf("raise reached file %d, TPM %d", v, hw.All()[control.UpdateVersionFloor])
	}
	// An older /data: the file says 3 (or is gone); the TPM still says 7.
	for _, old := range []string{"3\n", ""} {
		if old == "" {
			os.Remove(file.Path)
		} else if err := os.WriteFile(file.Path, []byte(old), 0o600); err != nil {
			t.Fatal(err)
		}
		if v, err := f.Get(); err != nil || v != 7 {
			t.Fatalf("floor after restoring /data with %q: %d %v, want 7", old, v, err)
		}
	}
	// A lower raise (an emergency downgrade's install) changes nothing.
	if err := f.Raise(5); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Get(); v != 7 {
		t.Fatalf("floor %d after a lower raise", v)
	}
	if err := f.Raise(9); err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Get(); v != 9 || hw.All()[control.UpdateVersionFloor] != 9 {
		t.Fatalf("floor %d, TPM %d after raising to 9", v, hw.All()[control.UpdateVersionFloor])
	}
}
