package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/qemu"
)

// Debian's ovmf and qemu-efi-aarch64 packages (.ci/deps).
const (
	ovmfCode  = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars  = "/usr/share/OVMF/OVMF_VARS_4M.fd"
	aavmfCode = "/usr/share/AAVMF/AAVMF_CODE.fd"
	aavmfVars = "/usr/share/AAVMF/AAVMF_VARS.fd"
)

// buildDisk builds pc-x86_64 with --disk (serial console, test hook) into dir.
func buildDisk(t *testing.T, dir string) *image.Image {
	t.Helper()
	// no_timer_check: on a loaded TCG host the kernel's IO-APIC timer
	// check can fail ("IO-APIC + timer doesn't work!") and panic.
	return buildBoardDisk(t, "pc-x86_64", "ttyS0", dir, "no_timer_check")
}

func buildBoardDisk(t *testing.T, boardName, console, dir string, params ...string) *image.Image {
	t.Helper()
	prof, err := board.Load(boardName)
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
		image.WithOutDir(dir), image.WithVersion("e2e"), image.WithBuildTags("testhook"),
		image.WithRepoDir(repo), image.WithDisk(), image.WithConsole(console), image.WithKernelParams(params...),
		image.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	if err != nil {
		t.Fatalf("build disk image: %v", err)
	}
	return img
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// uefiBoot boots the disk through OVMF and waits for ready, checking that
// the console shows each of want before it.
func uefiBoot(t *testing.T, u *qemu.UEFI, want ...string) (*qemu.VM, map[string]string) {
	t.Helper()
	return uefiBootArch(t, qemu.ArchX86_64, u, want...)
}

func uefiBootArch(t *testing.T, arch qemu.Arch, u *qemu.UEFI, want ...string) (*qemu.VM, map[string]string) {
	t.Helper()
	return uefiBootWith(t, arch, u, nil, want...)
}

// uefiBootWith is uefiBootArch with more QEMU options (host forwards).
func uefiBootWith(t *testing.T, arch qemu.Arch, u *qemu.UEFI, opts []qemu.Option, want ...string) (*qemu.VM, map[string]string) {
	t.Helper()
	start := time.Now()
	vm, err := qemu.BootTarget(context.Background(), qemu.Target{Arch: arch, UEFI: u},
		append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t}), qemu.WithMemory(768)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	// Phases: the firmware has read the slot's UKI from FAT and starts it
	// (edk2's BdsDxe prints "starting" between LoadImage and StartImage),
	// the kernel's EFI stub runs (systemd-stub handed over), PID 1 logs.
	phases := []string{"BdsDxe: starting", "EFI stub:", "time="}
	at := make([]time.Duration, len(phases))
	for i := 0; i < len(phases); i++ {
		line, err := vm.WaitFirst(ctx, append(slices.Clone(phases[i:]), "edgepbx: HALTED")...)
		if err != nil || strings.HasPrefix(line, "edgepbx: HALTED") {
			t.Fatalf("boot: %v %s\n%s", err, line, vm.Tail(60))
		}
		for j := i; j < len(phases); j++ {
			if strings.HasPrefix(strings.TrimSpace(line), phases[j]) {
				at[j], i = time.Since(start), j
				break
			}
		}
	}
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil || strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("boot: %v %s\n%s", err, line, vm.Tail(60))
	}
	t.Logf("UEFI boot (%s): firmware loaded and started the slot's UKI at %.1fs, kernel EFI stub at %.1fs, PID 1 at %.1fs, ready at %.1fs after QEMU start",
		arch, at[0].Seconds(), at[1].Seconds(), at[2].Seconds(), time.Since(start).Seconds())
	lines := strings.Join(vm.Lines(), "\n")
	for _, w := range want {
		if !strings.Contains(lines, w) {
			t.Fatalf("console lacks %q:\n%s", w, vm.Tail(80))
		}
	}
	return vm, banner(t, vm)
}

// send types a test-hook line and waits for the answer.
func send(t *testing.T, vm *qemu.VM, cmd, answer string) {
	t.Helper()
	if err := vm.SendLine(cmd); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, answer, "edgepbx: slot hook failed")
	if err != nil || !strings.HasPrefix(line, answer) {
		t.Fatalf("%s: %v %s\n%s", cmd, err, line, vm.Tail(40))
	}
}

// reboot asks PID 1 to reboot; -no-reboot makes QEMU exit then.
func reboot(t *testing.T, vm *qemu.VM) {
	t.Helper()
	if err := vm.SendLine("edgepbx-test: reboot"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm, stepTimeout)
}

// TestDiskImageUEFI boots the flashable disk image through OVMF, with
// the real firmware keeping the A/B state in its variable store: slot A
// boots from the removable-media path; the data partition grows to a
// bigger disk keeping its data; a trial of slot B that is not healthy
// comes back to A with the reason; a committed B sticks.
func TestDiskImageUEFI(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	requireFirmware(t, "ovmf", ovmfCode, ovmfVars)
	dir := t.TempDir()
	img := buildDisk(t, filepath.Join(dir, "out"))
	u := &qemu.UEFI{Code: ovmfCode, Vars: filepath.Join(dir, "vars.fd"), Disk: filepath.Join(dir, "disk.img")}
	copyFile(t, ovmfVars, u.Vars)
	copyFile(t, img.Disk.Path, u.Disk)

	// 1: fresh NVRAM, image-sized disk: slot A, nothing to grow.
	vm, b1 := uefiBoot(t, u, "edgepbx: slot a booted, slot a committed")
	if strings.Contains(strings.Join(vm.Lines(), "\n"), "data grown") {
		t.Fatal("grew a disk that has no room")
	}
	send(t, vm, "edgepbx-test: slot install", "edgepbx: slot b marked for a trial boot")
	reboot(t, vm)

	// The image goes onto a bigger disk.
	if err := os.Truncate(u.Disk, 1<<30); err != nil {
		t.Fatal(err)
	}
	// 2: the trial of B (BootNext); /data grows, keeping what boot 1 wrote
	// (the TLS key edgepbxd created).
	vm, b2 := uefiBoot(t, u, "edgepbx: slot b booted, slot a committed (trial boot", "edgepbx: data grown from 64 to ")
	if b1["tls sha256"] == "" || b2["tls sha256"] != b1["tls sha256"] || b2["serial"] != b1["serial"] {
		t.Fatalf("data lost across the grow: banner %v then %v", b1, b2)
	}
	send(t, vm, "edgepbx-test: slot rollback", "edgepbx: slot rollback recorded")
	waitExit(t, vm, stepTimeout)

	// 3: back on A, saying why; the grown /data is not grown again.
	vm, _ = uefiBoot(t, u, "edgepbx: slot a booted, slot a committed", "edgepbx: ROLLBACK: test: edgepbxd did not become healthy")
	if strings.Contains(strings.Join(vm.Lines(), "\n"), "data grown") {
		t.Fatal("grew again")
	}
	// A trial that dies without a verdict (power cut) also comes back.
	send(t, vm, "edgepbx-test: slot install", "edgepbx: slot b marked for a trial boot")
	reboot(t, vm)
	vm, _ = uefiBoot(t, u, "edgepbx: slot b booted, slot a committed (trial boot")
	vm.Kill()
	vm, _ = uefiBoot(t, u, "edgepbx: slot a booted, slot a committed", "edgepbx: ROLLBACK: trial boot of slot b did not become healthy")

	// 4: install again, commit on the trial boot: B sticks.
	send(t, vm, "edgepbx-test: slot install", "edgepbx: slot b marked for a trial boot")
	reboot(t, vm)
	vm, _ = uefiBoot(t, u, "edgepbx: slot b booted, slot a committed (trial boot")
	send(t, vm, "edgepbx-test: slot commit", "edgepbx: slot b committed")
	reboot(t, vm)
	vm, _ = uefiBoot(t, u, "edgepbx: slot b booted, slot b committed")
	if strings.Contains(strings.Join(vm.Lines(), "\n"), "ROLLBACK") {
		t.Fatal("a committed slot reported a rollback")
	}

	// 5: a trial whose edgepbxd hangs: PID 1 stops petting the i6300esb,
	// the watchdog resets the box (QEMU exits on the reset) and the
	// committed slot, now B, comes back.
	send(t, vm, "edgepbx-test: slot install", "edgepbx: slot a marked for a trial boot")
	reboot(t, vm)
	vm, _ = uefiBoot(t, u, "edgepbx: slot a booted, slot b committed (trial boot", "msg=\"watchdog armed\"")
	send(t, vm, "edgepbx-test: freeze edgepbxd", "edgepbx: edgepbxd frozen")
	// Health goes stale after 15 s, the watchdog (60 s) then resets.
	waitExit(t, vm, 4*time.Minute)
	if !strings.Contains(strings.Join(vm.Lines(), "\n"), "msg=watchdog petting=false") {
		t.Fatalf("the box went down, but not because PID 1 stopped petting the watchdog:\n%s", vm.Tail(30))
	}
	vm, _ = uefiBoot(t, u, "edgepbx: slot b booted, slot b committed", "edgepbx: ROLLBACK: trial boot of slot a did not become healthy")
	vm.Kill()
}

func requireFirmware(t *testing.T, pkg string, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("UEFI firmware not installed: %v", err)
			}
			t.Fatalf("UEFI firmware not installed (Debian package %s): %v", pkg, err)
		}
	}
}

// TestDiskImageUEFIARM64 boots the uefi-arm64 disk image through AAVMF
// on a disk bigger than the image: /data grows on first boot, slot A
// boots, a trial of B commits and sticks.
func TestDiskImageUEFIARM64(t *testing.T) {
	require(t, "qemu-system-aarch64", "mkfs.ext4")
	requireFirmware(t, "qemu-efi-aarch64", aavmfCode, aavmfVars)
	dir := t.TempDir()
	img := buildBoardDisk(t, "uefi-arm64", "ttyAMA0", filepath.Join(dir, "out"))
	u := &qemu.UEFI{Code: aavmfCode, Vars: filepath.Join(dir, "vars.fd"), Disk: filepath.Join(dir, "disk.img")}
	copyFile(t, aavmfVars, u.Vars)
	copyFile(t, img.Disk.Path, u.Disk)
	if err := os.Truncate(u.Disk, 1<<30); err != nil {
		t.Fatal(err)
	}
	vm, _ := uefiBootArch(t, qemu.ArchARM64, u, "edgepbx: slot a booted, slot a committed", "edgepbx: data grown from 64 to ")
	send(t, vm, "edgepbx-test: slot install", "edgepbx: slot b marked for a trial boot")
	reboot(t, vm)
	vm, _ = uefiBootArch(t, qemu.ArchARM64, u, "edgepbx: slot b booted, slot a committed (trial boot")
	send(t, vm, "edgepbx-test: slot commit", "edgepbx: slot b committed")
	reboot(t, vm)
	vm, _ = uefiBootArch(t, qemu.ArchARM64, u, "edgepbx: slot b booted, slot b committed")
	vm.Kill()
}

// TestDiskImageReproducible builds the disk image twice: byte-identical.
func TestDiskImageReproducible(t *testing.T) {
	require(t, "mkfs.ext4")
	dir := t.TempDir()
	a := buildDisk(t, filepath.Join(dir, "1"))
	b := buildDisk(t, filepath.Join(dir, "2"))
	for _, p := range [][2]string{{a.Disk.Path, b.Disk.Path}, {a.Disk.Slot, b.Disk.Slot}} {
		x, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(p[1])
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Fatalf("%s and %s differ", p[0], p[1])
		}
	}
}
