// Package image builds a bootable edgepbx image for a board: it fetches
// Debian's kernel package for the board's arch, stages the board's modules
// with their dependency closure and index, builds PID 1 (cmd/init) and
// edgepbxd into an initramfs with u-root's mkuimage, and writes the kernel,
// the compressed initramfs and a manifest.json. Two builds of the same tree
// give the same bytes.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/u-root/mkuimage/cpio"
	"github.com/u-root/mkuimage/uimage"
	"github.com/u-root/uio/llog"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/init/modules"
)

// Paths inside the image.
const (
	BoardPath   = "etc/edgepbx/board.json"
	VersionPath = "etc/edgepbx/version"
	InitPath    = "bin/init" // /init links here
	DaemonPath  = "bin/edgepbxd"
)

// Output file names in the out dir.
const (
	InitramfsName = "initramfs.cpio.gz"
	ManifestName  = "manifest.json"
)

// Image is a built image.
type Image struct {
	Board         board.Profile
	Kernel        string // path of the kernel to boot (vmlinux, vmlinuz or Image)
	Initramfs     string // path of the gzip-compressed initramfs
	KernelRelease string // uname -r
	Cmdline       string // kernel command line
	Size          int64  // compressed initramfs bytes
	KernelSize    int64  // kernel file bytes
	Manifest      string // path of manifest.json
	// Disk is set when the image was built WithDisk.
	Disk *Disk
}

// Manifest is manifest.json in the out dir.
type Manifest struct {
	Board           string   `json:"board"`
	Arch            string   `json:"arch"`
	Version         string   `json:"version"`
	KernelPackage   string   `json:"kernel_package"`
	KernelVersion   string   `json:"kernel_version"`
	KernelRelease   string   `json:"kernel_release"`
	Kernel          string   `json:"kernel"`
	KernelSHA256    string   `json:"kernel_sha256"`
	KernelSize      int64    `json:"kernel_size"`
	Initramfs       string   `json:"initramfs"`
	InitramfsSHA256 string   `json:"initramfs_sha256"`
	InitramfsSize   int64    `json:"initramfs_size"`
	Cmdline         string   `json:"cmdline"`
	BuildTags       []string `json:"build_tags"`
	Modules         []string `json:"modules"` // staged modules (closure), sorted
	// License is set only for images built WithLicense, so other
	// manifests keep their bytes.
	License *ManifestLicense `json:"license,omitempty"`
	// RootsSHA256 is of the CA bundle at /etc/ssl/certs/ca-certificates.crt.
	RootsSHA256 string `json:"roots_sha256"`
}

// ManifestLicense records what an image trusts for its phone-home.
type ManifestLicense struct {
	URL       string `json:"url"`
	VendorKey string `json:"vendor_key"` // ed25519:<base64>
	CASHA256  string `json:"ca_sha256"`  // of /etc/edgepbx/license-ca.pem
}

// Build builds the image for prof.
func Build(ctx context.Context, prof board.Profile, opts ...Option) (*Image, error) {
	start := time.Now()
	if err := prof.Validate(); err != nil {
		return nil, err
	}
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if o.repoDir == "" {
		if o.repoDir, err = findRepo(); err != nil {
			return nil, err
		}
	}
	if o.outDir == "" {
		o.outDir = filepath.Join(o.repoDir, "out", prof.Name)
	}
	for _, d := range []*string{&o.repoDir, &o.outDir, &o.cacheDir} {
		if *d, err = filepath.Abs(*d); err != nil {
			return nil, err
		}
	}
	log := o.log.With("board", prof.Name)

	k, err := fetchKernel(ctx, o, prof.KernelPackage, prof.Arch)
	if err != nil {
		return nil, fmt.Errorf("board %s: %w", prof.Name, err)
	}
	log.Info("kernel ready", "package", k.Package, "version", k.Version, "release", k.Release, "t", time.Since(start))

	work, err := os.MkdirTemp(o.tempDir, "edgepbx-image-*")
	if err != nil {
		return nil, fmt.Errorf("image: %w", err)
	}
	defer os.RemoveAll(work)

	stage := filepath.Join(work, "stage")
	staged, err := stageModules(prof, k, stage)
	if err != nil {
		return nil, fmt.Errorf("board %s: %w", prof.Name, err)
	}
	log.Info("modules staged", "count", len(staged), "t", time.Since(start))

	if err := buildBinaries(ctx, o, prof.Arch, stage); err != nil {
		return nil, fmt.Errorf("board %s: %w", prof.Name, err)
	}
	log.Info("binaries built", "tags", o.tags, "t", time.Since(start))

	boardJSON, err := prof.Marshal()
	if err != nil {
		return nil, err
	}
	if err := writeStaged(stage, BoardPath, boardJSON, 0o644); err != nil {
		return nil, err
	}
	if err := writeStaged(stage, VersionPath, []byte(o.version+"\n"), 0o644); err != nil {
		return nil, err
	}
	rootsFile := o.roots
	if rootsFile == "" {
		rootsFile = HostRoots
	}
	roots, rootsSum, err := loadRoots(rootsFile)
	if err != nil {
		return nil, err
	}
	if err := writeStaged(stage, RootsPath, roots, 0o644); err != nil {
		return nil, err
	}
	if o.license != nil {
		cfg, ca, err := o.license.files()
		if err != nil {
			return nil, err
		}
		if err := writeStaged(stage, LicensePath, cfg, 0o644); err != nil {
			return nil, err
		}
		if err := writeStaged(stage, LicenseCAPath, ca, 0o644); err != nil {
			return nil, err
		}
	}

	if o.update != nil {
		fs, err := o.update.files(prof.Name, o.version)
		if err != nil {
			return nil, err
		}
		for p, b := range fs {
			if err := writeStaged(stage, p, b, 0o644); err != nil {
				return nil, err
			}
		}
	}
	cpioPath := filepath.Join(work, "initramfs.cpio")
	if err := writeCPIO(o, stage, work, cpioPath); err != nil {
		return nil, fmt.Errorf("board %s: initramfs: %w", prof.Name, err)
	}
	log.Info("cpio written", "t", time.Since(start))

	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return nil, fmt.Errorf("image: out dir: %w", err)
	}
	initrd := filepath.Join(o.outDir, InitramfsName)
	isum, isize, err := gzipAtomic(cpioPath, initrd)
	if err != nil {
		return nil, fmt.Errorf("board %s: compress initramfs: %w", prof.Name, err)
	}

	log.Info("initramfs compressed", "t", time.Since(start))
	ksrc, kname := bootKernel(prof, k)
	kernel := filepath.Join(o.outDir, kname)
	ksum, ksize, err := copyAtomic(ksrc, kernel)
	if err != nil {
		return nil, fmt.Errorf("board %s: copy kernel: %w", prof.Name, err)
	}

	img := &Image{
		Board:         prof,
		Kernel:        kernel,
		Initramfs:     initrd,
		KernelRelease: k.Release,
		Cmdline:       strings.Join(append([]string{cmdline(prof, o.console)}, o.params...), " "),
		Size:          isize,
		KernelSize:    ksize,
		Manifest:      filepath.Join(o.outDir, ManifestName),
	}
	if o.disk {
		if img.Disk, err = buildDisk(ctx, o, prof, k, img, o.version); err != nil {
			return nil, fmt.Errorf("board %s: %w", prof.Name, err)
		}
		log.Info("disk image written", "disk", img.Disk.Path, "slot_bytes", img.Disk.SlotSize, "t", time.Since(start))
	}
	tags := append([]string{}, o.tags...)
	man := Manifest{
		Board: prof.Name, Arch: prof.Arch, Version: o.version,
		KernelPackage: k.Package, KernelVersion: k.Version, KernelRelease: k.Release,
		Kernel: kname, KernelSHA256: ksum, KernelSize: ksize,
		Initramfs: InitramfsName, InitramfsSHA256: isum, InitramfsSize: isize,
		Cmdline: img.Cmdline, BuildTags: tags, Modules: staged, RootsSHA256: rootsSum,
	}
	if o.license != nil {
		sum := sha256.Sum256(o.license.caPEM)
		man.License = &ManifestLicense{URL: o.license.url, VendorKey: o.license.vendorKey, CASHA256: hex.EncodeToString(sum[:])}
	}
	mj, err := json.MarshalIndent(man, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(img.Manifest, append(mj, '\n')); err != nil {
		return nil, err
	}
	log.Info("image built", "initramfs_bytes", isize, "kernel_bytes", ksize, "dur", time.Since(start))
	return img, nil
}

// Cmdline is the kernel command line for a board: its console, and
// panic=-1 so a kernel panic reboots (QEMU with -no-reboot exits) instead
// of hanging.
func Cmdline(prof board.Profile) string {
	return cmdline(prof, "")
}

func cmdline(prof board.Profile, console string) string {
	if console == "" {
		console = prof.Console
	}
	return "console=" + console + " panic=-1 loglevel=4"
}

// bootKernel picks the kernel file a board boots: QEMU's microvm loads the
// uncompressed ELF vmlinux; other x86 machines the bzImage; arm64 the Image.
func bootKernel(prof board.Profile, k *Kernel) (src, name string) {
	switch {
	case prof.Arch == board.ArchARM64:
		return k.Image, "Image"
	case prof.QEMU != nil && prof.QEMU.Machine == "microvm":
		return k.Vmlinux, "vmlinux"
	default:
		return k.Vmlinuz, "vmlinuz"
	}
}

// stageModules copies the board's modules and their dependency closure
// (decompressed) under stage/lib/modules/<release>/ and writes the index.
// It returns the staged module names.
func stageModules(prof board.Profile, k *Kernel, stage string) ([]string, error) {
	full, err := modules.ScanDir(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	closure, err := full.Closure(prof.Modules)
	if err != nil {
		return nil, fmt.Errorf("board modules for kernel %s: %w", k.Release, err)
	}
	sub, err := full.Subset(closure)
	if err != nil {
		return nil, err
	}
	staged, err := sub.WithPaths(func(m modules.Module) string { return strings.TrimSuffix(m.Path, ".xz") })
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(stage, "lib", "modules", k.Release)
	for _, name := range closure {
		src, _ := sub.Module(name)
		out, _ := staged.Module(name)
		data, err := readModule(filepath.Join(k.ModulesDir, src.Path))
		if err != nil {
			return nil, err
		}
		if err := writeStaged(dst, out.Path, data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := staged.WriteIndex(dst); err != nil {
		return nil, err
	}
	// modules.builtin is copied verbatim from the kernel package.
	builtin, err := os.ReadFile(filepath.Join(k.ModulesDir, modules.BuiltinFile))
	if err != nil {
		return nil, err
	}
	if err := writeStaged(dst, modules.BuiltinFile, builtin, 0o644); err != nil {
		return nil, err
	}
	// Check what PID 1 will do: the staged index must order every board
	// module using only staged files.
	ix, err := modules.ReadIndex(dst)
	if err != nil {
		return nil, fmt.Errorf("staged module index: %w", err)
	}
	if _, err := ix.Order(prof.Modules); err != nil {
		return nil, fmt.Errorf("staged module index: %w", err)
	}
	return closure, nil
}

func readModule(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if strings.HasSuffix(p, ".xz") {
		data, err := modules.DecompressXZ(f)
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", p, err)
		}
		return data, nil
	}
	return io.ReadAll(io.LimitReader(f, modules.MaxModuleSize))
}

// writeStaged writes data to root/rel with an explicit mode, so the umask
// does not leak into the archive.
func writeStaged(root, rel string, data []byte, mode os.FileMode) error {
	p := filepath.Join(root, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return err
	}
	return os.Chmod(p, mode)
}

// buildBinaries builds cmd/init and cmd/edgepbxd from the repo as static,
// stripped, reproducible binaries for arch into stage/bin. We call go build
// ourselves (same flags as mkuimage's binary builder minus its -a, so the
// build cache makes warm builds fast) and hand the files to mkuimage.
func buildBinaries(ctx context.Context, o *options, arch, stage string) error {
	for _, cmd := range []string{"init", "edgepbxd"} {
		if _, err := os.Stat(filepath.Join(o.repoDir, "cmd", cmd)); err != nil {
			return fmt.Errorf("build: cmd/%s missing in %s: %w", cmd, o.repoDir, err)
		}
	}
	bin := filepath.Join(stage, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	// edgepbxd reports its version in check-ins (advisories match on it);
	// versionStrRE keeps it free of spaces and quotes.
	ldflags := "-s -w -buildid= -X main.version=" + o.version
	if o.license != nil {
		ldflags += " " + o.license.ldflag()
	}
	args := []string{"build", "-trimpath", "-buildvcs=false", "-ldflags=" + ldflags, "-o", bin + string(filepath.Separator)}
	if len(o.tags) > 0 {
		args = append(args, "-tags="+strings.Join(o.tags, ","))
	}
	args = append(args, "./cmd/init", "./cmd/edgepbxd")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = o.repoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch, "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("build cmd/init and cmd/edgepbxd for %s: %w\n%s", arch, err, out)
	}
	for _, b := range []string{"init", "edgepbxd"} {
		if err := os.Chmod(filepath.Join(bin, b), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// baseRecords are the directories and device nodes every image has before
// PID 1 mounts anything: the kernel opens /dev/console for /init's stdio.
func baseRecords() []cpio.Record {
	return []cpio.Record{
		cpio.Directory("bin", 0o755),
		cpio.Directory("data", 0o755),
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
		cpio.CharDev("dev/null", 0o666, 1, 3),
		cpio.Directory("etc", 0o755),
		cpio.Directory("proc", 0o555),
		cpio.Directory("run", 0o755),
		cpio.Directory("sys", 0o555),
		cpio.Directory("tmp", 0o1777),
	}
}

// writeCPIO assembles the initramfs with mkuimage: every staged file,
// /init -> bin/init, the base records.
func writeCPIO(o *options, stage, work, out string) error {
	var files []string
	err := filepath.WalkDir(stage, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(stage, p)
		if err != nil {
			return err
		}
		files = append(files, p+":"+filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return err
	}
	base, err := cpio.ArchiveFromRecords(baseRecords())
	if err != nil {
		return err
	}
	tmp := filepath.Join(work, "mkuimage")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	l := llog.New(slog.LevelWarn, func(format string, v ...any) {
		o.log.Warn("mkuimage: " + fmt.Sprintf(format, v...))
	})
	return uimage.Create(l,
		uimage.WithTempDir(tmp),
		uimage.WithSkipLDD(), // static Go binaries and kernel modules: nothing for ldd
		uimage.WithBaseArchive(base),
		uimage.WithFiles(files...),
		uimage.WithInit(path.Join("/", InitPath)),
		uimage.WithCPIOOutput(out),
	)
}

// gzipAtomic compresses src to dst with a fixed header (no name, no mtime),
// so equal input gives equal bytes; dst appears only when complete.
func gzipAtomic(src, dst string) (sum string, size int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
		if err != nil {
			return err
		}
		zw.Header = gzip.Header{OS: 3} // Unix, zero mtime, no name
		if _, err := io.Copy(zw, in); err != nil {
			return err
		}
		return zw.Close()
	})
}

func copyAtomic(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	return writeAtomic(dst, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func writeFileAtomic(dst string, data []byte) error {
	_, _, err := writeAtomic(dst, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
	return err
}

// writeAtomic writes via a temporary file in dst's directory, fsyncs and
// renames; it returns the sha256 and size of what it wrote.
func writeAtomic(dst string, fill func(io.Writer) error) (string, int64, error) {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst)+"-*")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := fill(cw); err != nil {
		f.Close()
		return "", 0, fmt.Errorf("write %s: %w", dst, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", 0, err
	}
	if err := f.Close(); err != nil {
		return "", 0, err
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
