package qemu

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

func needMkfs(t *testing.T) {
	t.Helper()
	netnstest.NeedTool(t, "mkfs.ext4", "e2fsprogs")
}

func TestEnsureDataDiskCreates(t *testing.T) {
	needMkfs(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "sub", "data.img")
	created, err := EnsureDataDisk(ctx, path, 32<<20)
	if err != nil || !created {
		t.Fatalf("created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 32<<20 {
		t.Fatalf("disk: %v size %d", err, fi.Size())
	}
	if dumpe2fs, err := exec.LookPath("dumpe2fs"); err == nil {
		out, err := exec.Command(dumpe2fs, "-h", path).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Filesystem volume name:   "+DataLabel)) {
			t.Errorf("label not %s: %v\n%s", DataLabel, err, out)
		}
	}
	// Only the disk is left in the directory: no temporary files.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
	// An existing disk is reused, never rewritten.
	f, _ := os.OpenFile(path, os.O_WRONLY, 0)
	f.WriteAt([]byte("keep"), 16<<20)
	f.Close()
	created, err = EnsureDataDisk(ctx, path, 64<<20)
	if err != nil || created {
		t.Fatalf("second call: created=%v err=%v", created, err)
	}
	b := make([]byte, 4)
	f, _ = os.Open(path)
	f.ReadAt(b, 16<<20)
	f.Close()
	if string(b) != "keep" {
		t.Error("existing disk was rewritten")
	}
}

func TestEnsureDataDiskRejects(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.img")
	os.WriteFile(junk, bytes.Repeat([]byte{0xAA}, 8192), 0o600)
	small := filepath.Join(dir, "small.img")
	os.WriteFile(small, []byte("x"), 0o600)
	for name, tc := range map[string]struct{ path, want string }{
		"not ext4":  {junk, "not an ext4"},
		"too small": {small, "too small"},
		"directory": {dir, "not a regular file"},
	} {
		before, _ := os.ReadFile(tc.path)
		_, err := EnsureDataDisk(context.Background(), tc.path, 32<<20)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
		if after, _ := os.ReadFile(tc.path); !bytes.Equal(before, after) {
			t.Errorf("%s: file changed", name)
		}
	}
}
