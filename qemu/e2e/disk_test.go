package e2e

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/qemu"
)

// Debian's ovmf package (.ci/deps).
const (
	ovmfCode = "/usr/share/OVMF/OVMF_CODE_4M.fd"
	ovmfVars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
)

// buildDisk builds pc-x86_64 with --disk (serial console, test hook) into dir.
func buildDisk(t *testing.T, dir string) *image.Image {
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
		image.WithOutDir(dir), image.WithVersion("e2e"), image.WithBuildTags("testhook"),
		image.WithRepoDir(repo), image.WithDisk(), image.WithConsole("ttyS0"),
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
	start := time.Now()
	vm, err := qemu.BootTarget(context.Background(), qemu.Target{Arch: qemu.ArchX86_64, UEFI: u},
		qemu.WithConsoleLog(&consoleLog{tb: t}), qemu.WithMemory(768))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	if _, err := vm.WaitFirst(ctx, "time=", "edgepbx: HALTED"); err != nil {
		t.Fatal(err)
	}
	fwDone := time.Since(start)
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil || strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("boot: %v %s\n%s", err, line, vm.Tail(60))
	}
	t.Logf("UEFI boot: first PID 1 line %.1fs after QEMU start (firmware + loading the UKI), ready after %.1fs", fwDone.Seconds(), time.Since(start).Seconds())
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
	waitExit(t, vm)
}

func waitExit(t *testing.T, vm *qemu.VM) {
	t.Helper()
	select {
	case <-vm.Exited():
	case <-time.After(stepTimeout):
		t.Fatalf("guest did not reboot:\n%s", vm.Tail(40))
	}
}

// TestDiskImageUEFI boots the flashable disk image through OVMF, with
// the real firmware keeping the A/B state in its variable store: slot A
// boots from the removable-media path; the data partition grows to a
// bigger disk keeping its data; a trial of slot B that is not healthy
// comes back to A with the reason; a committed B sticks.
func TestDiskImageUEFI(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	for _, f := range []string{ovmfCode, ovmfVars} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") == "" {
				t.Skipf("OVMF not installed: %v", err)
			}
			t.Fatalf("OVMF not installed (Debian package ovmf): %v", err)
		}
	}
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
	waitExit(t, vm)

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
