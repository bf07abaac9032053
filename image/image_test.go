package image

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/u-root/mkuimage/cpio"
	"github.com/ulikunitz/xz"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/init/modules"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

const maxImageSize = 24 << 20

// needTools skips (or, under CI, fails) when the Debian tools the builder
// uses are missing.
func needTools(tb testing.TB) {
	tb.Helper()
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg", "dpkg-deb", "go"} {
		netnstest.NeedTool(tb, tool, map[string]string{"apt-get": "apt", "apt-cache": "apt", "dpkg": "dpkg", "dpkg-deb": "dpkg", "go": "golang-go"}[tool])
	}
}

// repoDir returns the module root to build cmd/init and cmd/edgepbxd from:
// the real repo when both commands exist, otherwise a throwaway module with
// trivial mains outside the repo (while the real ones are being written).
func repoDir(tb testing.TB) string {
	tb.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		tb.Fatal(err)
	}
	if hasMain(filepath.Join(root, "cmd", "init")) && hasMain(filepath.Join(root, "cmd", "edgepbxd")) {
		return root
	}
	if os.Getenv("CI") != "" {
		tb.Fatal("cmd/init or cmd/edgepbxd missing (CI builds the real ones)")
	}
	tb.Log("cmd/init or cmd/edgepbxd not written yet: building trivial stand-ins from a temporary module")
	dir := tb.TempDir()
	files := map[string]string{
		"go.mod":               "module example.invalid/standin\n\ngo 1.26\n",
		"cmd/init/main.go":     "package main\n\nfunc main() { select {} }\n",
		"cmd/edgepbxd/main.go": "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"edgepbxd\") }\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

func hasMain(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".go") && !strings.HasSuffix(e.Name(), "_test.go") {
			if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil && bytes.Contains(b, []byte("package main")) {
				return true
			}
		}
	}
	return false
}

func build(t testing.TB, prof board.Profile, extra ...Option) *Image {
	t.Helper()
	opts := append([]Option{
		WithRepoDir(repoDir(t)),
		WithOutDir(filepath.Join(t.TempDir(), "out")),
		WithTempDir(t.TempDir()),
		WithVersion("1.2.3-test"),
		WithBuildTags("testhook"),
		WithLogger(slog.New(slog.NewTextHandler(testLog{t}, nil))),
	}, extra...)
	img, err := Build(context.Background(), prof, opts...)
	if err != nil {
		t.Fatalf("Build(%s): %v", prof.Name, err)
	}
	return img
}

// testLog sends build progress to the test log.
type testLog struct{ tb testing.TB }

func (l testLog) Write(p []byte) (int, error) {
	l.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func fileSHA(t testing.TB, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// readInitramfs returns the archive's records by name and their contents.
func readInitramfs(t *testing.T, p string) (map[string]cpio.Record, map[string][]byte) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]cpio.Record{}
	data := map[string][]byte{}
	for _, r := range recs {
		byName[r.Name] = r
		if r.ReaderAt != nil && r.FileSize > 0 {
			b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			if err != nil {
				t.Fatal(err)
			}
			data[r.Name] = b
		}
	}
	return byName, data
}

func TestBuildBoards(t *testing.T) {
	needTools(t)
	tests := []struct {
		board      string
		kernelName string
		machine    elf.Machine
	}{
		{"qemu-x86_64", "vmlinux", elf.EM_X86_64},
		{"qemu-arm64", "Image", elf.EM_AARCH64},
		{"pc-x86_64", "vmlinuz", elf.EM_X86_64},
	}
	for _, tt := range tests {
		t.Run(tt.board, func(t *testing.T) {
			prof, err := board.Load(tt.board)
			if err != nil {
				t.Fatal(err)
			}
			img := build(t, prof)
			t.Logf("%s: kernel %s release %s: %d bytes (%.1f MiB); initramfs %d bytes (%.1f MiB compressed)",
				tt.board, filepath.Base(img.Kernel), img.KernelRelease, img.KernelSize, float64(img.KernelSize)/(1<<20), img.Size, float64(img.Size)/(1<<20))
			if img.Size > maxImageSize {
				t.Errorf("initramfs %d bytes exceeds the %d byte target", img.Size, maxImageSize)
			}
			if filepath.Base(img.Kernel) != tt.kernelName {
				t.Errorf("kernel %s, want %s", img.Kernel, tt.kernelName)
			}
			if !strings.HasPrefix(img.Cmdline, "console="+prof.Console+" ") {
				t.Errorf("cmdline %q", img.Cmdline)
			}
			kb, err := os.ReadFile(img.Kernel)
			if err != nil {
				t.Fatal(err)
			}
			switch tt.kernelName {
			case "vmlinux":
				ef, err := elf.NewFile(bytes.NewReader(kb))
				if err != nil || ef.Machine != elf.EM_X86_64 {
					t.Fatalf("vmlinux is not an x86-64 ELF: %v", err)
				}
			case "Image":
				if string(kb[56:60]) != "ARM\x64" {
					t.Fatal("Image lacks the arm64 magic")
				}
			case "vmlinuz":
				if string(kb[0x202:0x206]) != "HdrS" {
					t.Fatal("vmlinuz is not a bzImage")
				}
			}

			recs, data := readInitramfs(t, img.Initramfs)
			if r, ok := recs["init"]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK || string(data["init"]) != "bin/init" {
				t.Fatalf("/init is not a link to bin/init: %+v %q", r.Info, data["init"])
			}
			for _, bin := range []string{InitPath, DaemonPath} {
				ef, err := elf.NewFile(bytes.NewReader(data[bin]))
				if err != nil {
					t.Fatalf("%s: %v", bin, err)
				}
				if ef.Machine != tt.machine {
					t.Errorf("%s: machine %v, want %v", bin, ef.Machine, tt.machine)
				}
				if _, err := ef.DynamicSymbols(); err == nil {
					t.Errorf("%s is dynamically linked", bin)
				}
				if recs[bin].Mode&0o777 != 0o755 {
					t.Errorf("%s mode %o", bin, recs[bin].Mode&0o777)
				}
			}
			if c := recs["dev/console"]; c.Mode&cpio.S_IFMT != cpio.S_IFCHR || c.Rmajor != 5 || c.Rminor != 1 {
				t.Errorf("dev/console: %+v", c.Info)
			}
			// Without WithLicense the image does not phone home.
			for _, p := range []string{LicensePath, LicenseCAPath} {
				if _, ok := recs[p]; ok {
					t.Errorf("%s in an image built without WithLicense", p)
				}
			}
			// The public CA roots ride along, as the build host's bundle.
			roots, rootsSum, err := loadRoots(HostRoots)
			if err != nil || !bytes.Equal(data[RootsPath], roots) {
				t.Errorf("%s in the image differs from the host's bundle (%v)", RootsPath, err)
			}
			if got := string(data[VersionPath]); got != "1.2.3-test\n" {
				t.Errorf("version file %q", got)
			}
			back, err := board.Parse(data[BoardPath])
			if err != nil {
				t.Fatalf("embedded board.json: %v", err)
			}
			if !reflect.DeepEqual(back, prof) {
				t.Errorf("embedded profile differs")
			}

			// What PID 1 will do: read the staged index and order the
			// board's modules; every file must be in the archive.
			dir := t.TempDir()
			modDir := "lib/modules/" + img.KernelRelease + "/"
			for name, b := range data {
				if rel, ok := strings.CutPrefix(name, modDir); ok {
					p := filepath.Join(dir, rel)
					if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(p, b, 0o644); err != nil {
						t.Fatal(err)
					}
				}
			}
			ix, err := modules.ReadIndex(dir)
			if err != nil {
				t.Fatal(err)
			}
			order, err := ix.Order(prof.Modules)
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int{}
			for i, p := range order {
				if _, ok := data[modDir+p]; !ok {
					t.Errorf("%s ordered but not in the image", p)
				}
				pos[modules.NameFromPath(p)] = i
				mi, err := modules.ReadModInfo(filepath.Join(dir, p))
				if err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(mi.Vermagic, img.KernelRelease+" ") {
					t.Errorf("%s: vermagic %q is not from kernel %s", p, mi.Vermagic, img.KernelRelease)
				}
			}
			if !(pos["crc32c_generic"] < pos["libcrc32c"] && pos["libcrc32c"] < pos["nf_tables"]) {
				t.Errorf("crc32c_generic must load before libcrc32c before nf_tables: %v", order)
			}

			var man Manifest
			mb, err := os.ReadFile(img.Manifest)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(mb, &man); err != nil {
				t.Fatal(err)
			}
			if man.InitramfsSHA256 != fileSHA(t, img.Initramfs) || man.KernelSHA256 != fileSHA(t, img.Kernel) || man.KernelRelease != img.KernelRelease {
				t.Errorf("manifest does not match the files: %+v", man)
			}
			if man.RootsSHA256 != rootsSum {
				t.Errorf("manifest roots_sha256 %q, want %q", man.RootsSHA256, rootsSum)
			}
		})
	}
}

func TestBuildReproducible(t *testing.T) {
	needTools(t)
	prof, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	a := build(t, prof)
	b := build(t, prof)
	for _, f := range []struct{ name, x, y string }{
		{"initramfs", a.Initramfs, b.Initramfs},
		{"kernel", a.Kernel, b.Kernel},
		{"manifest", a.Manifest, b.Manifest},
	} {
		if f.x == f.y {
			t.Fatalf("%s: both builds wrote %s", f.name, f.x)
		}
		if sx, sy := fileSHA(t, f.x), fileSHA(t, f.y); sx != sy {
			t.Errorf("%s differs between two builds: %s vs %s", f.name, sx, sy)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	needTools(t)
	good, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	unknownMod := good
	unknownMod.Modules = append(append([]string{}, good.Modules...), "edgepbx_nosuch_module")
	badArch := good
	badArch.Arch = "riscv64"
	noKernel := good
	noKernel.KernelPackage = "linux-image-edgepbx-nosuch"
	noArm := good
	noArm.Arch, noArm.KernelPackage, noArm.QEMU = "arm64", "linux-image-edgepbx-nosuch", nil
	tests := []struct {
		name string
		prof board.Profile
		want []string
	}{
		{"unknown module", unknownMod, []string{"board qemu-x86_64", "edgepbx_nosuch_module", "unknown module"}},
		{"invalid board", badArch, []string{"board qemu-x86_64", `arch "riscv64"`}},
		{"kernel package cannot be fetched", noKernel, []string{"linux-image-edgepbx-nosuch", "cannot be fetched"}},
		{"foreign arch lists", noArm, []string{"linux-image-edgepbx-nosuch:arm64", "dpkg --add-architecture arm64 && apt-get update"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			_, err := Build(context.Background(), tt.prof, WithRepoDir(repoDir(t)), WithOutDir(out), WithTempDir(t.TempDir()))
			if err == nil {
				t.Fatal("Build succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			// Nothing half-written: the out dir stays empty or absent.
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Errorf("out dir has %d entries after a failed build", len(ents))
			}
		})
	}
}

func TestBadOptions(t *testing.T) {
	prof, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	for _, opt := range []Option{WithVersion("1.0 ; rm"), WithBuildTags("a,b"), WithCacheDir(""), WithOutDir("")} {
		if _, err := Build(context.Background(), prof, opt); err == nil {
			t.Error("bad option accepted")
		}
	}
}

func TestVmlinuxFromBzImage(t *testing.T) {
	payload := append([]byte("\x7fELF"), bytes.Repeat([]byte("kernel"), 1000)...)
	var z bytes.Buffer
	zw, err := xz.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	// A false magic first, then the real stream followed by trailing data.
	bz := append([]byte("setup\xfd7zXZ\x00junk"), z.Bytes()...)
	bz = append(bz, "trailer"...)
	got, err := vmlinuxFromBzImage(bz)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("wrong payload")
	}
	if _, err := vmlinuxFromBzImage([]byte("no kernel here")); err == nil {
		t.Fatal("want error without payload")
	}
}

func TestArm64Image(t *testing.T) {
	img := make([]byte, 128)
	copy(img[56:], "ARM\x64")
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(img)
	zw.Close()
	for _, in := range [][]byte{img, z.Bytes()} {
		got, err := arm64Image(in)
		if err != nil || !bytes.Equal(got, img) {
			t.Fatalf("arm64Image: %v", err)
		}
	}
	if _, err := arm64Image(make([]byte, 128)); err == nil {
		t.Fatal("want error for non-Image")
	}
}

func BenchmarkBuild(b *testing.B) {
	needTools(b)
	for _, name := range []string{"qemu-x86_64", "qemu-arm64"} {
		b.Run(name, func(b *testing.B) {
			prof, err := board.Load(name)
			if err != nil {
				b.Fatal(err)
			}
			var img *Image
			for b.Loop() {
				img = build(b, prof)
			}
			b.ReportMetric(float64(img.Size), "initramfs-bytes")
			b.ReportMetric(float64(img.KernelSize), "kernel-bytes")
		})
	}
}
