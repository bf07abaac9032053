package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func writeImage(t *testing.T, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestFlashFile(t *testing.T) {
	img, data := writeImage(t, 3<<20+123)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		pre  []byte // existing target content; nil: no file
	}{{"new", nil}, {"larger file", bytes.Repeat([]byte{1}, 8<<20)}, {"smaller file", []byte("x")}} {
		t.Run(tc.name, func(t *testing.T) {
			target := filepath.Join(dir, tc.name)
			if tc.pre != nil {
				os.WriteFile(target, tc.pre, 0o644)
			}
			n, sum, err := flash(realHost, img, target, 0)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(target)
			if n != int64(len(data)) || sum != sha256.Sum256(data) || !bytes.Equal(got, data) {
				t.Fatalf("target holds %d bytes (n=%d), want the image", len(got), n)
			}
		})
	}
	if _, _, err := flash(realHost, img, img, 0); err == nil {
		t.Fatal("flashing the image onto itself accepted")
	}
	if _, _, err := flash(realHost, img, "/dev/null", 0); err == nil {
		t.Fatal("a character device accepted")
	}
}

// TestFlashRefusesBusyDevices points flash at an unused loop device node
// (unbound, so even a wrong verdict could not write to it) with a
// sysfs and mountinfo describing what the host does with it.
func TestFlashRefusesBusyDevices(t *testing.T) {
	const node = "/dev/loop7"
	st, err := os.Stat(node)
	if err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		t.Skipf("no %s block device: %v", node, err)
	}
	r := st.Sys().(*syscall.Stat_t).Rdev
	dev := fmt.Sprintf("%d:%d", unix.Major(uint64(r)), unix.Minor(uint64(r)))
	img, _ := writeImage(t, 1<<20)
	for _, tc := range []struct {
		name      string
		sectors   int64
		mountinfo string
		swaps     string
		max       int64
		want      error
	}{
		{"root disk", 1 << 21, "27 1 " + dev + " / / rw - ext4 /dev/x rw\n", "", 0, ErrTargetSystem},
		{"disk mounted", 1 << 21, "30 27 " + dev + " / /mnt rw - ext4 /dev/x rw\n", "", 0, ErrTargetMounted},
		{"partition mounted", 1 << 21, "30 27 259:77 / /media/usb rw - vfat /dev/xp1 rw\n", "", 0, ErrTargetMounted},
		{"too small", 100, "", "", 0, ErrTargetSmall},
		{"too large", 1 << 31, "", "", 1 << 30, ErrTargetLarge},
		{"swap", 1 << 21, "", "Filename Type Size Used Priority\n" + node + " partition 1 0 -2\n", 0, ErrTargetMounted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := t.TempDir()
			disk := filepath.Join(sys, "devices/virtual/block/loop7")
			part := filepath.Join(disk, "loop7p1")
			os.MkdirAll(part, 0o755)
			os.WriteFile(filepath.Join(disk, "dev"), []byte(dev+"\n"), 0o644)
			os.WriteFile(filepath.Join(disk, "size"), []byte(fmt.Sprint(tc.sectors)), 0o644)
			os.WriteFile(filepath.Join(part, "dev"), []byte("259:77\n"), 0o644)
			os.WriteFile(filepath.Join(part, "partition"), []byte("1\n"), 0o644)
			os.MkdirAll(filepath.Join(sys, "dev/block"), 0o755)
			os.Symlink(disk, filepath.Join(sys, "dev/block", dev))
			h := flashHost{mountinfo: filepath.Join(sys, "mountinfo"), swaps: filepath.Join(sys, "swaps"), sys: sys}
			os.WriteFile(h.mountinfo, []byte(tc.mountinfo), 0o644)
			os.WriteFile(h.swaps, []byte(tc.swaps), 0o644)
			if _, _, err := flash(h, img, node, tc.max); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// The spelling: --board B --device X flashes out/B/disk.img.
func TestFlashCommandBoardDevice(t *testing.T) {
	out := t.TempDir()
	os.MkdirAll(filepath.Join(out, "pc-x86_64"), 0o755)
	data := bytes.Repeat([]byte("disk"), 1<<18)
	os.WriteFile(filepath.Join(out, "pc-x86_64", "disk.img"), data, 0o644)
	target := filepath.Join(t.TempDir(), "box.img")
	cmd := newFlashCmd()
	var stdout bytes.Buffer
	cmd.SetOut(&stdout)
	cmd.SetArgs([]string{"--board", "pc-x86_64", "--device", target, "--out", out})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, data) || !bytes.Contains(stdout.Bytes(), []byte("verified")) {
		t.Fatalf("target not flashed: %s", stdout.String())
	}
	for _, args := range [][]string{{}, {"only-one"}, {"--board", "nope", "--device", target}, {"a", "b", "--board", "pc-x86_64"}} {
		c := newFlashCmd()
		c.SetArgs(args)
		c.SetOut(io.Discard)
		c.SetErr(io.Discard)
		if err := c.Execute(); err == nil {
			t.Errorf("flash %q accepted", args)
		}
	}
}
