package image

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Kernel is a Debian kernel package fetched and extracted into the cache.
type Kernel struct {
	Metapackage string // linux-image-amd64
	Package     string // linux-image-6.1.0-56-amd64 (the ABI package it resolved to)
	Version     string // Debian version, e.g. 6.1.192-2
	Arch        string // amd64 or arm64
	Release     string // uname -r, e.g. 6.1.0-56-amd64
	Deb         string // cached .deb
	Root        string // extracted package root
	ModulesDir  string // Root/lib/modules/<Release>
	// Vmlinuz is Debian's boot image (bzImage on amd64, Image on arm64).
	Vmlinuz string
	// Vmlinux is the uncompressed ELF kernel (amd64 only), which
	// QEMU's microvm machine boots directly.
	Vmlinux string
	// Image is the uncompressed arm64 Image (arm64 only).
	Image string
}

var (
	pkgNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.+-]{1,100}$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z.+~:-]{1,100}$`)
	sha256RE  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	releaseRE = regexp.MustCompile(`^[0-9A-Za-z._+-]{1,100}$`)
)

// Limits for what we decompress out of the kernel package.
const maxKernelImage = 512 << 20

// FetchKernel resolves the ABI package behind a Debian kernel metapackage
// (linux-image-amd64, linux-image-arm64) for arch, downloads it with
// apt-get (apt checks it against the signed package index; we check the
// SHA256 from that index again on every use of the cache), and extracts it
// into the cache, keyed by package and version.
func FetchKernel(ctx context.Context, metapackage, arch string, opts ...Option) (*Kernel, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	return fetchKernel(ctx, o, metapackage, arch)
}

func fetchKernel(ctx context.Context, o *options, metapackage, arch string) (*Kernel, error) {
	if !pkgNameRE.MatchString(metapackage) {
		return nil, fmt.Errorf("kernel package %q: invalid package name", metapackage)
	}
	if arch != "amd64" && arch != "arm64" {
		return nil, fmt.Errorf("kernel package %s: unsupported arch %q", metapackage, arch)
	}
	for _, tool := range []string{"apt-cache", "apt-get", "dpkg", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("kernel package %s: %s not found (the image builder needs Debian's apt and dpkg): %w", metapackage, tool, err)
		}
	}
	hostArch, err := run(ctx, "", "dpkg", "--print-architecture")
	if err != nil {
		return nil, err
	}
	hostArch = strings.TrimSpace(hostArch)
	qual := ""
	if arch != hostArch {
		qual = ":" + arch
	}
	fixArch := fmt.Sprintf("run \"dpkg --add-architecture %s && apt-get update\" as root", arch)

	meta, err := aptShow(ctx, metapackage+qual)
	if err != nil {
		if qual != "" {
			return nil, fmt.Errorf("kernel package %s%s cannot be fetched: not in the apt package lists for %s: %s: %w", metapackage, qual, arch, fixArch, err)
		}
		return nil, fmt.Errorf("kernel package %s cannot be fetched: not in the apt package lists (run \"apt-get update\"): %w", metapackage, err)
	}
	abi := ""
	for _, alt := range splitDepends(meta["Depends"]) {
		if strings.HasPrefix(alt, "linux-image-") {
			abi = alt
			break
		}
	}
	if abi == "" || !pkgNameRE.MatchString(abi) {
		return nil, fmt.Errorf("kernel package %s: no linux-image-* dependency in %q", metapackage, meta["Depends"])
	}
	info, err := aptShow(ctx, abi+qual)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s (from %s) cannot be fetched: %w", abi+qual, metapackage, err)
	}
	k := &Kernel{Metapackage: metapackage, Package: abi, Version: info["Version"], Arch: info["Architecture"]}
	sum := info["SHA256"]
	if !versionRE.MatchString(k.Version) || k.Arch != arch || !sha256RE.MatchString(sum) {
		return nil, fmt.Errorf("kernel package %s: unexpected apt metadata (version %q, arch %q, sha256 %q)", abi, k.Version, k.Arch, sum)
	}
	o.log.Info("kernel resolved", "metapackage", metapackage, "package", abi, "version", k.Version, "arch", arch)

	key := abi + "_" + strings.ReplaceAll(k.Version, ":", "%3a") + "_" + arch
	debDir := filepath.Join(o.cacheDir, "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	k.Deb = filepath.Join(debDir, key+".deb")
	if err := verifySHA256(k.Deb, sum); err != nil {
		o.log.Info("downloading kernel package", "package", abi, "version", k.Version, "reason", err)
		if err := aptDownload(ctx, debDir, abi+qual+"="+k.Version, k.Deb, sum); err != nil {
			return nil, fmt.Errorf("kernel package %s=%s cannot be fetched: %w", abi+qual, k.Version, err)
		}
	}

	k.Root = filepath.Join(o.cacheDir, "kernels", key)
	if _, err := os.Stat(filepath.Join(k.Root, ".complete")); err != nil {
		if err := extractKernel(ctx, o, k); err != nil {
			return nil, fmt.Errorf("kernel package %s=%s: %w", abi, k.Version, err)
		}
	}
	if err := k.fill(); err != nil {
		return nil, fmt.Errorf("kernel package %s=%s in %s: %w", abi, k.Version, k.Root, err)
	}
	return k, nil
}

// fill sets the derived paths of an extracted kernel and checks they exist.
func (k *Kernel) fill() error {
	ents, err := os.ReadDir(filepath.Join(k.Root, "lib", "modules"))
	if err != nil {
		return err
	}
	if len(ents) != 1 || !releaseRE.MatchString(ents[0].Name()) {
		return fmt.Errorf("want exactly one kernel release in lib/modules, found %d", len(ents))
	}
	k.Release = ents[0].Name()
	k.ModulesDir = filepath.Join(k.Root, "lib", "modules", k.Release)
	k.Vmlinuz = filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release)
	want := []string{k.Vmlinuz, filepath.Join(k.ModulesDir, "modules.builtin")}
	switch k.Arch {
	case "amd64":
		k.Vmlinux = filepath.Join(k.Root, "vmlinux")
		want = append(want, k.Vmlinux)
	case "arm64":
		k.Image = filepath.Join(k.Root, "Image")
		want = append(want, k.Image)
	}
	for _, p := range want {
		if _, err := os.Stat(p); err != nil {
			return err
		}
	}
	return nil
}

// extractKernel unpacks the .deb into a temporary directory next to the
// final one, adds the uncompressed kernel, and renames it into place, so an
// interrupted extraction never looks complete.
func extractKernel(ctx context.Context, o *options, k *Kernel) error {
	parent := filepath.Dir(k.Root)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".extract-*")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	o.log.Info("extracting kernel package", "deb", k.Deb)
	if _, err := run(ctx, "", "dpkg-deb", "-x", k.Deb, tmp); err != nil {
		return err
	}
	probe := *k
	probe.Root = tmp
	ents, err := os.ReadDir(filepath.Join(tmp, "lib", "modules"))
	if err != nil || len(ents) != 1 {
		return fmt.Errorf("package has no single lib/modules/<release> directory")
	}
	rel := ents[0].Name()
	vmlinuz, err := os.ReadFile(filepath.Join(tmp, "boot", "vmlinuz-"+rel))
	if err != nil {
		return fmt.Errorf("package has no kernel image: %w", err)
	}
	switch k.Arch {
	case "amd64":
		elf, err := vmlinuxFromBzImage(vmlinuz)
		if err != nil {
			return fmt.Errorf("extract vmlinux from bzImage: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "vmlinux"), elf, 0o644); err != nil {
			return err
		}
	case "arm64":
		img, err := arm64Image(vmlinuz)
		if err != nil {
			return fmt.Errorf("arm64 kernel image: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "Image"), img, 0o644); err != nil {
			return err
		}
	}
	if err := probe.fill(); err != nil {
		return fmt.Errorf("extracted package: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(k.Package+" "+k.Version+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, k.Root); err != nil {
		// Another build extracted the same package meanwhile.
		if _, serr := os.Stat(filepath.Join(k.Root, ".complete")); serr == nil {
			return nil
		}
		return fmt.Errorf("kernel cache: %w", err)
	}
	return nil
}

var (
	xzMagic   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	gzipMagic = []byte{0x1f, 0x8b, 0x08}
	elfMagic  = []byte{0x7f, 'E', 'L', 'F'}
)

// vmlinuxFromBzImage finds the compressed payload inside an x86 bzImage
// (Debian uses xz) and decompresses the first stream that yields an ELF.
func vmlinuxFromBzImage(bz []byte) ([]byte, error) {
	for _, m := range []struct {
		magic  []byte
		decomp func([]byte) ([]byte, error)
	}{{xzMagic, unxz}, {gzipMagic, gunzip}} {
		off := 0
		for tries := 0; tries < 8; tries++ {
			i := bytes.Index(bz[off:], m.magic)
			if i < 0 {
				break
			}
			out, err := m.decomp(bz[off+i:])
			if err == nil && bytes.HasPrefix(out, elfMagic) {
				return out, nil
			}
			off += i + 1
		}
	}
	return nil, errors.New("no compressed ELF kernel found (looked for xz and gzip streams)")
}

// unxz decompresses the first xz stream in b with the host's xz: Linux
// compresses with the x86 BCJ filter, which Go's xz package lacks.
func unxz(b []byte) ([]byte, error) {
	if _, err := exec.LookPath("xz"); err != nil {
		return nil, fmt.Errorf("xz not found (install xz-utils): %w", err)
	}
	cmd := exec.Command("xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(b)
	var out, stderr bytes.Buffer
	cmd.Stdout = &limitedBuffer{buf: &out, max: maxKernelImage}
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("xz -dc --single-stream: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return out.Bytes(), nil
}

// limitedBuffer fails writes past max bytes.
type limitedBuffer struct {
	buf *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if l.buf.Len()+len(p) > l.max {
		return 0, fmt.Errorf("decompressed kernel exceeds %d bytes", l.max)
	}
	return l.buf.Write(p)
}

func gunzip(b []byte) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	r.Multistream(false)
	return readBounded(r)
}

func readBounded(r io.Reader) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, maxKernelImage+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxKernelImage {
		return nil, fmt.Errorf("decompressed kernel exceeds %d bytes", maxKernelImage)
	}
	return out, nil
}

// arm64Image returns the raw arm64 Image: Debian ships it uncompressed as
// vmlinuz on bookworm; a gzipped one is decompressed.
func arm64Image(b []byte) ([]byte, error) {
	if bytes.HasPrefix(b, gzipMagic) {
		out, err := gunzip(b)
		if err != nil {
			return nil, err
		}
		b = out
	}
	// The arm64 boot protocol puts "ARM\x64" at offset 56.
	if len(b) < 64 || string(b[56:60]) != "ARM\x64" {
		return nil, errors.New("not an arm64 Image (no ARM\\x64 magic)")
	}
	return b, nil
}

// aptShow returns the fields of the candidate version of pkg.
func aptShow(ctx context.Context, pkg string) (map[string]string, error) {
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", pkg)
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break // first record only
		}
		if k, v, ok := strings.Cut(line, ": "); ok && !strings.HasPrefix(line, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["Package"] == "" {
		return nil, fmt.Errorf("apt-cache show %s: no package record", pkg)
	}
	return fields, nil
}

// splitDepends returns the package names of a Depends field, dropping
// version constraints and architecture qualifiers.
func splitDepends(s string) []string {
	var out []string
	for _, dep := range strings.Split(s, ",") {
		for _, alt := range strings.Split(dep, "|") {
			name := strings.Fields(strings.TrimSpace(alt))
			if len(name) == 0 {
				continue
			}
			n, _, _ := strings.Cut(name[0], ":")
			out = append(out, n)
		}
	}
	return out
}

// aptDownload fetches pkgSpec into dir via a private temporary directory,
// checks the SHA256 from the signed index and renames it to dest.
func aptDownload(ctx context.Context, dir, pkgSpec, dest, sum string) error {
	tmp, err := os.MkdirTemp(dir, ".download-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// apt drops privileges to _apt for downloads when it can write there.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return err
	}
	if _, err := run(ctx, tmp, "apt-get", "download", "-q", pkgSpec); err != nil {
		return err
	}
	debs, err := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if err != nil || len(debs) != 1 {
		return fmt.Errorf("apt-get download left %d .deb files", len(debs))
	}
	if err := verifySHA256(debs[0], sum); err != nil {
		return err
	}
	return os.Rename(debs[0], dest)
}

func verifySHA256(path, want string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%s: sha256 %s, want %s from the signed package index", filepath.Base(path), got, want)
	}
	return nil
}

// run runs a host tool and returns its stdout; the error carries the
// command and the end of its stderr.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}

// discard is the default logger.
var discard = slog.New(slog.DiscardHandler)
