package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteModes(t *testing.T) {
	old := syscall.Umask(0o077) // the mode must not depend on the umask
	defer syscall.Umask(old)
	for _, tc := range []struct {
		perm, dir os.FileMode
	}{{0o600, 0o700}, {0o644, 0o755}, {0o640, 0o750}} {
		base := t.TempDir()
		p := filepath.Join(base, "sub", "f")
		if err := Write(p, []byte("one"), tc.perm); err != nil {
			t.Fatal(err)
		}
		if err := Write(p, []byte("two"), tc.perm); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(p)
		fst, _ := os.Stat(p)
		dst, _ := os.Stat(filepath.Dir(p))
		if string(b) != "two" || fst.Mode().Perm() != tc.perm || dst.Mode().Perm() != tc.dir {
			t.Errorf("perm %v: content %q file %v dir %v, want dir %v", tc.perm, b, fst.Mode().Perm(), dst.Mode().Perm(), tc.dir)
		}
		ents, _ := os.ReadDir(filepath.Dir(p))
		if len(ents) != 1 {
			t.Errorf("temp files left: %v", ents)
		}
	}
}

func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory in the way of the rename: the write fails, the old file stays.
	if err := Write(dir, []byte("x"), 0o600); err == nil {
		t.Fatal("replacing a directory succeeded")
	}
	if b, _ := os.ReadFile(p); string(b) != "old" {
		t.Fatalf("old content lost: %q", b)
	}
}
