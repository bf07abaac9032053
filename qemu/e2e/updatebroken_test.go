package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/qemu"
)

// corruptUKI overwrites the PE headers of the slot image's UKI (the
// first MZ/PE image on a sector boundary: the UKI precedes the kernel it
// carries) with garbage: a slot the firmware cannot load, signed as it is.
func corruptUKI(t *testing.T, src, dst string) {
	t.Helper()
	img, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+4096 <= len(img); off += 512 {
		if img[off] != 'M' || img[off+1] != 'Z' {
			continue
		}
		pe := int(binary.LittleEndian.Uint32(img[off+0x3c:]))
		if pe <= 0 || pe > 2048 || !bytes.Equal(img[off+pe:off+pe+4], []byte("PE\x00\x00")) {
			continue
		}
		copy(img[off:off+4096], bytes.Repeat([]byte{0xEE}, 4096))
		if err := os.WriteFile(dst, img, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("UKI at byte %d of the slot image: its first 4 KiB overwritten", off)
		return
	}
	t.Fatal("no PE image in the slot image")
}

// TestUpdateBrokenBundlesUEFI installs three signed bundles whose trial
// cannot succeed and checks that each comes back to the committed slot by
// itself, and that the console, the status API, the dashboard's items and
// the audit log say why: a slot whose UKI the firmware cannot load (OVMF
// falls through BootNext to BootOrder), a kernel that panics at once
// (its initramfs has no such init: rdinit= names a missing file; panic=-1
// reboots), and an edgepbxd that hangs once ready (test builds:
// edgepbx.test.hang stops it), which the watchdog resets.
func TestUpdateBrokenBundlesUEFI(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	requireFirmware(t, "ovmf", ovmfCode, ovmfVars)
	dir := t.TempDir()
	release, err := bundle.GenerateKey(bundle.RoleRelease)
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
	panicImg := buildUpdatable(t, filepath.Join(dir, "panic"), "e2e-3", n+1, keyring, "rdinit=/edgepbx-missing")
	hangImg := buildUpdatable(t, filepath.Join(dir, "hang"), "e2e-3", n+1, keyring, "edgepbx.test.hang")
	t.Logf("three image builds: %.1fs", time.Since(start).Seconds())
	garbageSlot := filepath.Join(dir, "garbage.img")
	corruptUKI(t, oldImg.Disk.Slot, garbageSlot)
	// None of them commits: the floor stays at n, each may be e2e-3.
	bundles := map[string]string{}
	for name, src := range map[string]string{"garbage": garbageSlot, "panic": panicImg.Disk.Slot, "hang": hangImg.Disk.Slot} {
		bundles[name] = filepath.Join(dir, name+".bundle")
		signSlot(t, src, bundles[name], release, "e2e-3", n+1)
	}

	u := &qemu.UEFI{Code: ovmfCode, Vars: filepath.Join(dir, "vars.fd"), Disk: filepath.Join(dir, "disk.img")}
	copyFile(t, ovmfVars, u.Vars)
	copyFile(t, oldImg.Disk.Path, u.Disk)
	fwd := []qemu.Option{qemu.WithHostForward("tcp", 0, 443)}
	vm, b1 := uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot a booted, slot a committed")
	fp := b1["tls sha256"]
	healthzEventually(t, vm.HostPort("tcp", 443))
	a := newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), fp)
	a.claim(b1["setup code"])

	startVM := func() *qemu.VM {
		vm, err := qemu.BootTarget(context.Background(), qemu.Target{Arch: qemu.ArchX86_64, UEFI: u},
			append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t}), qemu.WithMemory(768)}, fwd...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(vm.Kill)
		return vm
	}
	wait := func(vm *qemu.VM, within time.Duration, lines ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		line, err := vm.WaitFirst(ctx, lines...)
		if err != nil {
			t.Fatalf("waiting for %q: %v\n%s", lines, err, vm.Tail(60))
		}
		return line
	}
	for i, c := range []struct {
		name string
		// trial runs the trial boot until QEMU exits, or returns the VM
		// already back on slot a (the firmware fell through).
		trial  func(t *testing.T) *qemu.VM
		reason string
	}{
		{"garbage", func(t *testing.T) *qemu.VM {
			// OVMF cannot load BootNext's UKI and goes on with BootOrder:
			// slot a boots in the same power-on.
			return startVM()
		}, "trial boot of slot b never reached its PID 1"},
		{"panic", func(t *testing.T) *qemu.VM {
			vm := startVM()
			waitExit(t, vm, bootTimeout) // panic=-1: the panic reboots, QEMU exits
			if lines := strings.Join(vm.Lines(), "\n"); !strings.Contains(lines, "Kernel panic") || strings.Contains(lines, "edgepbx:") {
				t.Fatalf("the trial kernel did not panic before PID 1:\n%s", vm.Tail(40))
			}
			return startVM()
		}, "trial boot of slot b never reached its PID 1"},
		{"hang", func(t *testing.T) *qemu.VM {
			vm := startVM()
			wait(vm, bootTimeout, "edgepbx: slot b booted, slot a committed (trial boot")
			wait(vm, bootTimeout, "edgepbx: TEST BUILD: edgepbxd hung once ready")
			// Health goes stale after 15 s, PID 1 stops petting, the
			// i6300esb (60 s) resets the box before the trial's deadline.
			waitExit(t, vm, 4*time.Minute)
			lines := strings.Join(vm.Lines(), "\n")
			if !strings.Contains(lines, "msg=watchdog petting=false") || strings.Contains(lines, "UPDATE ROLLED BACK") {
				t.Fatalf("the hung trial did not end by the watchdog:\n%s", vm.Tail(40))
			}
			return startVM()
		}, "trial boot of slot b did not become healthy"},
	} {
		t0 := time.Now()
		code, out := a.upload(bundles[c.name])
		if code != http.StatusOK {
			t.Fatalf("%s bundle: %d %s", c.name, code, out)
		}
		t.Logf("%s bundle installed in %.1fs", c.name, time.Since(t0).Seconds())
		a.do(http.StatusAccepted, "POST", "/api/v1/system/reboot", nil)
		waitExit(t, vm, stepTimeout)
		t1 := time.Now()
		vm = c.trial(t)
		line := wait(vm, bootTimeout, "edgepbx: ready", "edgepbx: HALTED")
		if !strings.HasPrefix(line, "edgepbx: ready") {
			t.Fatalf("%s: %s\n%s", c.name, line, vm.Tail(60))
		}
		banner(t, vm)
		lines := strings.Join(vm.Lines(), "\n")
		for _, w := range []string{"edgepbx: slot a booted, slot a committed", "edgepbx: UPDATE ROLLED BACK: " + c.reason} {
			if !strings.Contains(lines, w) {
				t.Fatalf("%s: console lacks %q:\n%s", c.name, w, vm.Tail(80))
			}
		}
		t.Logf("%s: back on slot a %.1fs after the reboot into the trial", c.name, time.Since(t1).Seconds())
		healthzEventually(t, vm.HostPort("tcp", 443))
		a = newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), fp)
		a.login("owner1", ownerPW)
		if st, raw := a.updateStatus(); st.Version != "e2e-2" || st.Trial != nil || !strings.Contains(st.LastRollback, c.reason) || st.Floor != n {
			t.Fatalf("%s: update status %s; want e2e-2, no trial, floor %d, the reason %q", c.name, raw, n, c.reason)
		}
		if raw := string(a.do(http.StatusOK, "GET", "/api/v1/status", nil)); !strings.Contains(raw, "the last update was rolled back: "+c.reason) {
			t.Fatalf("%s: the dashboard's items do not say why: %s", c.name, raw)
		}
		var audit struct {
			Entries []struct{ Outcome, Detail string } `json:"entries"`
		}
		if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/audit?action=update.rollback", nil), &audit); err != nil {
			t.Fatal(err)
		}
		if len(audit.Entries) != i+1 || !strings.Contains(audit.Entries[0].Detail+audit.Entries[len(audit.Entries)-1].Detail, c.reason) {
			t.Fatalf("%s: audit update.rollback: %+v; want %d entries, the last with %q", c.name, audit.Entries, i+1, c.reason)
		}
	}
	vm.Kill()
}
