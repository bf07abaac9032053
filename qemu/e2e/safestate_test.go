package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/qemu"
)

// damageFile overwrites the first n bytes of path inside the (not running)
// ext4 image in place, through the file's own blocks.
func damageFile(t *testing.T, disk, path string, n int) {
	t.Helper()
	stats, err := exec.Command("debugfs", "-R", "stats", disk).Output()
	if err != nil {
		t.Fatalf("debugfs stats: %v", err)
	}
	bs := 0
	for _, l := range strings.Split(string(stats), "\n") {
		if v, ok := strings.CutPrefix(l, "Block size:"); ok {
			bs, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if bs == 0 {
		t.Fatalf("no block size in debugfs stats")
	}
	out, err := exec.Command("debugfs", "-R", "blocks "+path, disk).Output()
	if err != nil {
		t.Fatalf("debugfs blocks %s: %v", path, err)
	}
	blocks := strings.Fields(string(out))
	f, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	junk := bytes.Repeat([]byte{0xA5}, bs)
	for i := 0; i*bs < n; i++ {
		blk, err := strconv.ParseInt(blocks[i], 10, 64)
		if err != nil {
			t.Fatalf("block %q: %v", blocks[i], err)
		}
		if _, err := f.WriteAt(junk, blk*int64(bs)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// bootSafeState boots a box whose store does not open and waits until
// PID 1 announces the safe state; it fails if the box comes up instead.
func bootSafeState(t *testing.T, img *image.Image, opts ...qemu.Option) *qemu.VM {
	t.Helper()
	opts = append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t})}, opts...)
	vm, err := qemu.Boot(context.Background(), img, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: SAFE STATE", "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(line, "edgepbx: SAFE STATE") || !strings.Contains(line, "database file is damaged") {
		t.Fatalf("a damaged store gave %q, want the safe state naming the damage\n%s", line, vm.Tail(40))
	}
	if _, err := vm.WaitLine(ctx, "edgepbx:   2. restore a backup"); err != nil {
		t.Fatalf("choices not shown: %v\n%s", err, vm.Tail(20))
	}
	return vm
}

// TestX86DamagedStoreSafeState: a store whose pages are overwritten does
// not open; the box does not start empty but stops in a safe state that
// names the damage and the choices, leaves the file as it is (checked
// after a power-off from that state), and carries out a factory reset
// typed on the console: the box comes up unclaimed with a new setup code.
func TestX86DamagedStoreSafeState(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4", "debugfs")
	img := buildImage(t, "qemu-x86_64")
	disk := filepath.Join(t.TempDir(), "data.img")
	opts := []qemu.Option{qemu.WithDataDisk(disk), qemu.WithHostForward("tcp", 0, 443)}

	vm := boot(t, img, opts...)
	first := banner(t, vm)
	a := newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), first["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.claim(first["setup code"])
	a.extension("201")
	powerdown(t, vm)

	damageFile(t, disk, "/edgepbx.db", 8192) // both bbolt meta pages
	damaged := readDiskFile(t, disk, "/edgepbx.db")

	// Safe state, then a power-off from it: the file is untouched.
	vm = bootSafeState(t, img, opts...)
	powerdown(t, vm)
	if !bytes.Equal(readDiskFile(t, disk, "/edgepbx.db"), damaged) {
		t.Fatal("the damaged store was changed by the boot that refused it")
	}

	// Safe state again; the factory reset typed on the console.
	vm = bootSafeState(t, img, opts...)
	if err := vm.SendLine("ERASE"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if _, err := vm.WaitFirst(ctx, "edgepbx: factory reset done", "edgepbx: HALTED"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm, stepTimeout)

	vm = boot(t, img, opts...)
	fresh := banner(t, vm)
	if fresh["setup code"] == "" || fresh["setup code"] == first["setup code"] {
		t.Fatalf("setup code after the reset %q (before %q)", fresh["setup code"], first["setup code"])
	}
	a = newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), fresh["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.claim(fresh["setup code"])
	if got := a.do(http.StatusOK, "GET", "/api/v1/extensions", nil); bytes.Contains(got, []byte(`"201"`)) {
		t.Fatalf("extensions after the reset: %s", got)
	}
	powerdown(t, vm)
}
