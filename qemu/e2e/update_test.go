package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/qemu"
)

// updateTrial shortens the trial boot of the test images (test builds
// only, cmd/init/testhook.go): healthy for 20 s commits, 3 min without
// that rolls back.
const updateTrial = "edgepbx.test.trial=20s/3m"

// buildUpdatable builds the pc-x86_64 disk image as an updatable release
// (version vname, number n) trusting keyring.
func buildUpdatable(t *testing.T, dir, vname string, n uint64, keyring []byte, params ...string) *image.Image {
	t.Helper()
	return buildUpdatableTrust(t, dir, vname, image.UpdateTrust{VersionNumber: n, Keyring: keyring}, params...)
}

// buildUpdatableTrust is buildUpdatable with the whole update trust
// (repository, its TUF root and CA) given.
func buildUpdatableTrust(t *testing.T, dir, vname string, trust image.UpdateTrust, params ...string) *image.Image {
	t.Helper()
	prof, err := board.Load("pc-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := filepath.Abs("../..")
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := image.Build(ctx, prof,
		image.WithCacheDir(filepath.Join(cache, "edgepbx")),
		image.WithOutDir(dir), image.WithVersion(vname), image.WithBuildTags("testhook"),
		image.WithRepoDir(repo), image.WithDisk(), image.WithConsole("ttyS0"),
		image.WithKernelParams(append([]string{"no_timer_check", updateTrial}, params...)...),
		image.WithUpdateTrust(trust),
		image.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatalf("build disk image %s: %v", vname, err)
	}
	return img
}

// signSlot writes a bundle of the slot image src to dst, as `edgepbx
// sign` does (header with the Ed25519-signed manifest, then the image).
func signSlot(t *testing.T, src, dst string, k bundle.PrivateKey, vname string, n uint64) int64 {
	t.Helper()
	img, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	m := bundle.Manifest{Format: bundle.Format, Board: "pc-x86_64", Version: vname, VersionNumber: n, Floor: n,
		KeyID: k.ID, Created: time.Now().UTC().Truncate(time.Second)}
	if m.ImageSHA256, m.ImageSHA512, m.ImageSize, err = bundle.HashImage(img); err != nil {
		t.Fatal(err)
	}
	if _, err := img.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := bundle.WriteHeader(out, m, k); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, img); err != nil {
		t.Fatal(err)
	}
	fi, err := out.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// upload posts a bundle file to /api/v1/update as a raw body and returns
// the status and answer.
func (a *boxAdmin) upload(path string) (int, []byte) {
	a.t.Helper()
	f, err := os.Open(path)
	if err != nil {
		a.t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		a.t.Fatal(err)
	}
	req, err := http.NewRequest("POST", a.base+"/api/v1/update", f)
	if err != nil {
		a.t.Fatal(err)
	}
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Origin", a.base)
	req.Header.Set("X-CSRF-Token", a.csrf)
	c := *a.c
	c.Timeout = 10 * time.Minute // a whole bundle through slirp under TCG
	resp, err := c.Do(req)
	if err != nil {
		a.t.Fatalf("POST /api/v1/update %s: %v", path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, out
}

// updateProblem is the admin API's refusal of a bundle (problem+json).
type updateProblem struct {
	Detail string `json:"detail"`
	Reason string `json:"reason"`
	Field  string `json:"field"`
}

type updateStatus struct {
	Version       string `json:"version"`
	VersionNumber uint64 `json:"version_number"`
	Floor         uint64 `json:"floor"`
	Installing    bool   `json:"installing"`
	Trial         *struct {
		Slot      string `json:"slot"`
		Committed bool   `json:"committed"`
	} `json:"trial"`
	LastRollback string `json:"last_rollback"`
}

func (a *boxAdmin) updateStatus() (updateStatus, string) {
	a.t.Helper()
	raw := a.do(http.StatusOK, "GET", "/api/v1/update", nil)
	var st updateStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		a.t.Fatalf("GET /api/v1/update: %s: %v", raw, err)
	}
	return st, string(raw)
}

// TestUpdateBundleUEFI updates a box booted from the disk image through
// OVMF with a real signed bundle over the admin API: a tampered bundle,
// one signed with an unknown key and an older version are refused with
// their reason and change nothing; the good one is written by PID 1 to
// the inactive slot, the box reboots into the trial, commits after the
// health period, and stays on the new version across a reboot.
func TestUpdateBundleUEFI(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	requireFirmware(t, "ovmf", ovmfCode, ovmfVars)
	dir := t.TempDir()

	release, err := bundle.GenerateKey(bundle.RoleRelease)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := bundle.GenerateKey(bundle.RoleRelease) // not in the image's keyring
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := bundle.MarshalKeyring([]bundle.KeyringKey{release.Public()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 2
	start := time.Now()
	oldImg := buildUpdatable(t, filepath.Join(dir, "n"), "e2e-2", n, keyring)
	newImg := buildUpdatable(t, filepath.Join(dir, "n1"), "e2e-3", n+1, keyring)
	// N+2 never gets healthy: its edgepbxd cannot listen for SIP (test
	// builds only); its own trial gives up after 45 s.
	brokenImg := buildUpdatable(t, filepath.Join(dir, "n2"), "e2e-4", n+2, keyring, "edgepbx.test.trial=20s/45s", "edgepbx.test.nosip")
	t.Logf("three image builds: %.1fs", time.Since(start).Seconds())

	good := filepath.Join(dir, "good.bundle")
	size := signSlot(t, newImg.Disk.Slot, good, release, "e2e-3", n+1)
	t.Logf("bundle: %d bytes (slot image %d bytes)", size, newImg.Disk.SlotSize)
	broken := filepath.Join(dir, "broken.bundle")
	signSlot(t, brokenImg.Disk.Slot, broken, release, "e2e-4", n+2)
	unknown := filepath.Join(dir, "unknown.bundle")
	signSlot(t, newImg.Disk.Slot, unknown, stranger, "e2e-3", n+1)
	older := filepath.Join(dir, "older.bundle")
	signSlot(t, oldImg.Disk.Slot, older, release, "e2e-1", n-1)
	// Tampered: one byte of the image flipped after signing, near the end
	// (PID 1 has streamed almost all of it when the hash fails).
	tampered := filepath.Join(dir, "tampered.bundle")
	copyFile(t, good, tampered)
	tf, err := os.OpenFile(tampered, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := tf.ReadAt(b, size-4096); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0xff
	if _, err := tf.WriteAt(b, size-4096); err != nil {
		t.Fatal(err)
	}
	tf.Close()

	u := &qemu.UEFI{Code: ovmfCode, Vars: filepath.Join(dir, "vars.fd"), Disk: filepath.Join(dir, "disk.img")}
	copyFile(t, ovmfVars, u.Vars)
	copyFile(t, oldImg.Disk.Path, u.Disk)
	fwd := []qemu.Option{qemu.WithHostForward("tcp", 0, 443)}

	// Boot 1: version N on slot A; claim it.
	vm, b1 := uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot a booted, slot a committed")
	base := fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443))
	healthzEventually(t, vm.HostPort("tcp", 443))
	a := newBoxAdmin(t, base, b1["tls sha256"])
	a.claim(b1["setup code"])
	before, beforeRaw := a.updateStatus()
	if before.VersionNumber != n || before.Trial != nil {
		t.Fatalf("boot 1 status %s; want version number %d, no trial", beforeRaw, n)
	}

	// Refusals: the reason, and nothing changes.
	for _, c := range []struct{ name, path, reason string }{
		{"tampered", tampered, "hash"},
		{"unknown key", unknown, "key"},
		{"older version", older, "version-floor"},
	} {
		code, out := a.upload(c.path)
		var p updateProblem
		if err := json.Unmarshal(out, &p); err != nil || code != http.StatusUnprocessableEntity || p.Reason != c.reason {
			t.Fatalf("%s bundle: %d %s; want 422 reason %q", c.name, code, out, c.reason)
		}
		t.Logf("%s bundle refused: %s (reason %s, field %q)", c.name, p.Detail, p.Reason, p.Field)
		if _, raw := a.updateStatus(); raw != beforeRaw {
			t.Fatalf("%s bundle changed the update status:\n%s\nthen\n%s", c.name, beforeRaw, raw)
		}
	}
	if strings.Contains(strings.Join(vm.Lines(), "\n"), "marked for a trial boot") {
		t.Fatal("a refused bundle marked a slot for a trial")
	}

	// The good bundle: PID 1 writes slot B; the admin reboots.
	t0 := time.Now()
	code, out := a.upload(good)
	if code != http.StatusOK {
		t.Fatalf("good bundle: %d %s", code, out)
	}
	written := time.Since(t0)
	t.Logf("good bundle installed in %.1fs: %s", written.Seconds(), out)
	// Each attempt is an audit entry: three refusals naming their reason, one install.
	var audit struct {
		Entries []struct{ Outcome, Detail string } `json:"entries"`
	}
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/audit?action=update.install", nil), &audit); err != nil {
		t.Fatal(err)
	}
	var denied, ok []string
	for _, e := range audit.Entries {
		switch e.Outcome {
		case "denied":
			denied = append(denied, e.Detail)
		case "ok":
			ok = append(ok, e.Detail)
		}
	}
	if len(denied) != 3 || len(ok) != 1 || !strings.Contains(strings.Join(denied, "\n"), "(hash)") ||
		!strings.Contains(strings.Join(denied, "\n"), "(key)") || !strings.Contains(strings.Join(denied, "\n"), "(version-floor)") {
		t.Fatalf("audit update.install: denied %q, ok %q; want hash, key and version-floor refusals and one install", denied, ok)
	}
	a.do(http.StatusAccepted, "POST", "/api/v1/system/reboot", nil)
	waitExit(t, vm, stepTimeout)

	// Boot 2: the trial of B (BootNext), which commits once healthy.
	vm, _ = uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot b booted, slot a committed (trial boot")
	trialReady := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: update committed", "edgepbx: UPDATE ROLLED BACK")
	if err != nil || !strings.HasPrefix(line, "edgepbx: update committed: slot b, version e2e-3") {
		t.Fatalf("trial: %v %s\n%s", err, line, vm.Tail(40))
	}
	t.Logf("update: upload to committed %.1fs (upload+write %.1fs), ready-on-trial to commit %.1fs, trial start to commit %.1fs (guest clock)",
		time.Since(t0).Seconds(), written.Seconds(), time.Since(trialReady).Seconds(),
		guestTime(t, vm, "msg=\"update: committed\"").Sub(guestTime(t, vm, "msg=\"TEST BUILD: trial boot shortened\"")).Seconds())
	if !strings.Contains(strings.Join(vm.Lines(), "\n"), "edgepbx: trial boot of slot b (version e2e-3): commits after 20s healthy") {
		t.Fatalf("no trial line on the console:\n%s", vm.Tail(60))
	}
	a = newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), b1["tls sha256"])
	a.login("owner1", ownerPW)
	if st, raw := a.updateStatus(); st.VersionNumber != n+1 || st.Trial == nil || !st.Trial.Committed || st.Floor != n+1 {
		t.Fatalf("after commit: %s; want version number %d committed, floor %d", raw, n+1, n+1)
	}
	a.do(http.StatusAccepted, "POST", "/api/v1/system/reboot", nil)
	waitExit(t, vm, stepTimeout)

	// Boot 3: B stays, version N+1, no trial.
	vm, _ = uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot b booted, slot b committed")
	a = newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), b1["tls sha256"])
	a.login("owner1", ownerPW)
	if st, raw := a.updateStatus(); st.VersionNumber != n+1 || st.Version != "e2e-3" || st.Trial != nil {
		t.Fatalf("boot 3: %s; want version e2e-3 (%d), no trial", raw, n+1)
	}

	// A bundle whose edgepbxd never becomes healthy: the trial gives up
	// by itself, says why, and the box comes back to B.
	if code, out := a.upload(broken); code != http.StatusOK {
		t.Fatalf("broken bundle: %d %s", code, out)
	}
	a.do(http.StatusAccepted, "POST", "/api/v1/system/reboot", nil)
	waitExit(t, vm, stepTimeout)
	vm, err = qemu.BootTarget(context.Background(), qemu.Target{Arch: qemu.ArchX86_64, UEFI: u},
		append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t}), qemu.WithMemory(768)}, fwd...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	ctx4, cancel4 := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel4()
	line, err = vm.WaitFirst(ctx4, "edgepbx: UPDATE ROLLED BACK", "edgepbx: update committed", "edgepbx: HALTED")
	if err != nil || !strings.HasPrefix(line, "edgepbx: UPDATE ROLLED BACK: slot a (version e2e-4) was not healthy") {
		t.Fatalf("broken trial: %v %s\n%s", err, line, vm.Tail(60))
	}
	t.Logf("broken bundle: %s", line)
	waitExit(t, vm, stepTimeout)
	vm, _ = uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot b booted, slot b committed")
	a = newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), b1["tls sha256"])
	a.login("owner1", ownerPW)
	if st, raw := a.updateStatus(); st.VersionNumber != n+1 || st.Version != "e2e-3" || st.Trial != nil || !strings.Contains(st.LastRollback, "not healthy") {
		t.Fatalf("after the broken trial: %s; want version e2e-3 (%d) and the rollback's reason", raw, n+1)
	}
	vm.Kill()
}

// guestTime is the time= stamp of the console's last log line containing s.
func guestTime(t *testing.T, vm *qemu.VM, s string) time.Time {
	t.Helper()
	lines := vm.Lines()
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.Contains(lines[i], s) {
			continue
		}
		_, v, ok := strings.Cut(lines[i], "time=")
		if !ok {
			break
		}
		v, _, _ = strings.Cut(v, " ")
		at, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			t.Fatalf("console line %q: %v", lines[i], err)
		}
		return at
	}
	t.Fatalf("no console log line with %q", s)
	return time.Time{}
}
