package mount

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

func TestEarlyTableStrings(t *testing.T) {
	want := []string{
		"mount proc on /r/proc type proc (rw,nosuid,nodev,noexec)",
		"mount sysfs on /r/sys type sysfs (rw,nosuid,nodev,noexec)",
		"mount devtmpfs on /r/dev type devtmpfs (rw,nosuid) mode=0755",
		"mount devpts on /r/dev/pts type devpts (rw,nosuid,noexec) newinstance,ptmxmode=0666,mode=0620",
		"symlink /r/dev/fd -> /proc/self/fd",
		"mount tmpfs on /r/run type tmpfs (rw,nosuid,nodev) mode=0755,size=16m",
		"mount tmpfs on /r/tmp type tmpfs (rw,nosuid,nodev) mode=1777,size=64m",
	}
	ops := Early("/r")
	if len(ops) != len(want) {
		t.Fatalf("got %d ops, want %d", len(ops), len(want))
	}
	for i, op := range ops {
		if op.String() != want[i] {
			t.Errorf("op %d: got %q, want %q", i, op.String(), want[i])
		}
	}
}

func TestDirAndSymlink(t *testing.T) {
	root := t.TempDir()
	ops := []Op{
		Dir{Name: filepath.Join(root, "a/b"), Mode: 0o750},
		Dir{Name: filepath.Join(root, "a/b"), Mode: 0o750}, // idempotent
		Symlink{Target: "b", NewPath: filepath.Join(root, "a/c")},
		Symlink{Target: "b", NewPath: filepath.Join(root, "a/c")}, // same link is fine
	}
	if err := Apply(slog.New(slog.DiscardHandler), ops); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "a/b"))
	if err != nil || fi.Mode().Perm() != 0o750 {
		t.Fatalf("dir: %v %v", fi, err)
	}
	if l, _ := os.Readlink(filepath.Join(root, "a/c")); l != "b" {
		t.Fatalf("link = %q", l)
	}
	// A different existing link is an error, not silently replaced.
	err = Symlink{Target: "x", NewPath: filepath.Join(root, "a/c")}.Create()
	if err == nil {
		t.Fatal("replacing a different symlink succeeded")
	}
}

func TestApplyStopsAtFirstFailure(t *testing.T) {
	root := t.TempDir()
	blocker := filepath.Join(root, "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	after := filepath.Join(root, "after")
	err := Apply(slog.New(slog.DiscardHandler), []Op{
		Dir{Name: filepath.Join(blocker, "sub"), Mode: 0o755}, // parent is a file
		Dir{Name: after, Mode: 0o755},
	})
	if err == nil || !strings.Contains(err.Error(), "mkdir") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(after); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("ops after the failure ran")
	}
}

func TestMountTmpfs(t *testing.T) {
	netnstest.NeedRoot(t, "mounting file systems")
	target := filepath.Join(t.TempDir(), "run")
	m := Mount{Source: "tmpfs", Target: target, FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "size=1m"}
	if err := Apply(slog.New(slog.DiscardHandler), []Op{m}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		t.Fatalf("fs type %#x, want tmpfs", st.Type)
	}
	if st.Flags&unix.ST_NOSUID == 0 || st.Flags&unix.ST_NODEV == 0 {
		t.Fatalf("flags %#x lack nosuid/nodev", st.Flags)
	}
}

func TestDataMountErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		d    DataMount
		want string
	}{
		{"missing device", DataMount{Device: filepath.Join(dir, "vdb"), FSType: "ext4", Target: filepath.Join(dir, "data"), Wait: 50 * time.Millisecond}, "did not appear"},
		{"not a block device", DataMount{Device: regular, FSType: "ext4", Target: filepath.Join(dir, "data")}, "not a block device"},
		{"no fs type", DataMount{Device: regular, Target: filepath.Join(dir, "data")}, "must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.d.Create()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
	if err := (DataMount{Device: filepath.Join(dir, "vdb"), FSType: "ext4", Target: dir}).Create(); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("err = %v, want ErrNoDevice", err)
	}
}

// TestDataMountExt4 mounts a real ext4 file system on a loop device.
func TestDataMountExt4(t *testing.T) {
	netnstest.NeedRoot(t, "mounting file systems")
	for _, tool := range []string{"mkfs.ext4", "losetup"} {
		netnstest.NeedTool(t, tool, map[string]string{"mkfs.ext4": "e2fsprogs", "losetup": "mount"}[tool])
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "data.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img, "8M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).Output()
	if err != nil {
		netnstest.Unavailable(t, "needs a loop device: %v", err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	target := filepath.Join(dir, "data")
	d := DataMount{Device: loop, FSType: "ext4", Target: target, Wait: time.Second}
	if err := d.Create(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(target, 0) })
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != unix.EXT4_SUPER_MAGIC || st.Flags&unix.ST_NOEXEC == 0 {
		t.Fatalf("type %#x flags %#x", st.Type, st.Flags)
	}
	// A wrong file-system type is a clear error.
	unix.Unmount(target, 0)
	bad := DataMount{Device: loop, FSType: "vfat", Target: target, Wait: time.Second}
	if err := bad.Create(); err == nil || !strings.Contains(err.Error(), loop) {
		t.Fatalf("vfat mount of ext4: err = %v", err)
	}
}

func TestDataMountPartLabel(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=esp\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=edgepbx-data\n",
	} {
		os.MkdirAll(filepath.Join(sys, "class/block", name), 0o755)
		os.WriteFile(filepath.Join(sys, "class/block", name, "uevent"), []byte(uevent), 0o644)
	}
	tests := []struct{ spec, want string }{
		{"PARTLABEL=edgepbx-data", "/dev/vda2"},
		{"PARTLABEL=esp", "/dev/vda1"},
		{"PARTLABEL=missing", ""},
		{"/dev/sdb1", "/dev/sdb1"},
	}
	for _, tt := range tests {
		got, err := DataMount{Device: tt.spec, SysRoot: sys}.resolve()
		if err != nil || got != tt.want {
			t.Errorf("resolve(%q) = %q, %v; want %q", tt.spec, got, err, tt.want)
		}
	}
	err := DataMount{Device: "PARTLABEL=missing", FSType: "ext4", SysRoot: sys, Target: t.TempDir(), Wait: 30 * time.Millisecond}.Create()
	if !errors.Is(err, ErrNoDevice) {
		t.Fatalf("err = %v", err)
	}
}
