package identity

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"golang.org/x/sys/unix"
)

func TestCreateThenReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "identity")
	id, created, err := LoadOrCreate(dir, "PF2XK9QZ")
	if err != nil || !created {
		t.Fatalf("first boot: created %v err %v", created, err)
	}
	if id.Serial != "PF2XK9QZ" || len(id.InstallID) != 32 {
		t.Fatalf("identity %+v", id)
	}
	for _, n := range []string{SerialFile, InstallIDFile} {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", n, fi, err)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	// Second boot: same identity, even if the board now reports another serial.
	id2, created, err := LoadOrCreate(dir, "OTHER123")
	if err != nil || created {
		t.Fatalf("second boot: created %v err %v", created, err)
	}
	if id2.Serial != id.Serial || id2.InstallID != id.InstallID {
		t.Fatal("identity changed across boots")
	}
	if id.Hostname() != "edgepbx-pf2xk9qz" {
		t.Fatalf("hostname %q", id.Hostname())
	}
}

func TestRandomSerialWhenBoardHasNone(t *testing.T) {
	for _, board := range []string{"", "To be filled by O.E.M.", "0000"} {
		id, _, err := LoadOrCreate(t.TempDir(), board)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`^EPX[` + Alphabet + `]{9}$`).MatchString(id.Serial) {
			t.Fatalf("board %q: serial %q", board, id.Serial)
		}
	}
}

func TestCorruptIsNotOverwritten(t *testing.T) {
	tests := []struct{ file, content string }{
		{InstallIDFile, "not-hex\n"},
		{SerialFile, "x y z\n"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dir := t.TempDir()
			if _, _, err := LoadOrCreate(dir, ""); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, tt.file)
			os.WriteFile(p, []byte(tt.content), 0o600)
			_, _, err := LoadOrCreate(dir, "")
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.file) {
				t.Fatalf("err = %v", err)
			}
			if b, _ := os.ReadFile(p); string(b) != tt.content {
				t.Fatal("corrupt file was overwritten")
			}
		})
	}
}

func mountTmpfs(t *testing.T, data string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, data); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

func list(t *testing.T, dir string) []string {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestFullData(t *testing.T) {
	netnstest.NeedRoot(t, "mounting tmpfs")
	data := mountTmpfs(t, "size=64k")
	dir := filepath.Join(data, "identity")
	os.MkdirAll(dir, 0o700)
	// Fill the file system.
	f, _ := os.Create(filepath.Join(data, "filler"))
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	f.Close()
	_, _, err := LoadOrCreate(dir, "")
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "identity: write") {
		t.Fatalf("err = %v, want a clear ENOSPC", err)
	}
	if got := list(t, dir); len(got) != 0 {
		t.Fatalf("half-written files left: %v", got)
	}
	// With room again, the next boot creates the identity normally.
	os.Remove(filepath.Join(data, "filler"))
	if _, created, err := LoadOrCreate(dir, ""); err != nil || !created {
		t.Fatalf("after freeing space: %v %v", created, err)
	}
}

func TestReadOnlyData(t *testing.T) {
	netnstest.NeedRoot(t, "mounting tmpfs")
	data := mountTmpfs(t, "size=1m")
	dir := filepath.Join(data, "identity")
	// A partial identity (install id only) from an interrupted first boot.
	key := []byte("0123456789abcdef0123456789abcdef\n")
	os.MkdirAll(dir, 0o700)
	if err := writeAtomic(dir, InstallIDFile, key); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", data, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadOrCreate(dir, "")
	if !errors.Is(err, syscall.EROFS) {
		t.Fatalf("err = %v, want EROFS", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, InstallIDFile)); !bytes.Equal(b, key) {
		t.Fatal("existing install id changed")
	}
	if got := list(t, dir); len(got) != 1 {
		t.Fatalf("files: %v", got)
	}
	// A complete identity loads fine from a read-only /data.
	unix.Mount("", data, "", unix.MS_REMOUNT, "")
	want, _, err := LoadOrCreate(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	unix.Mount("", data, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	got, created, err := LoadOrCreate(dir, "")
	if err != nil || created || got.Serial != want.Serial || got.InstallID != strings.TrimSpace(string(key)) {
		t.Fatalf("read-only load: %+v %v %v", got, created, err)
	}
}

func TestSetupCode(t *testing.T) {
	re := regexp.MustCompile(`^[` + Alphabet + `]{4}-[` + Alphabet + `]{4}-[` + Alphabet + `]{4}$`)
	seen := map[string]bool{}
	for range 100 {
		c := SetupCode()
		if !re.MatchString(c) {
			t.Fatalf("code %q", c)
		}
		seen[c] = true
	}
	if len(seen) != 100 {
		t.Fatal("setup codes repeat")
	}
	for _, amb := range "01ILO" {
		if strings.ContainsRune(Alphabet, amb) {
			t.Fatalf("alphabet has ambiguous %q", amb)
		}
	}
}
