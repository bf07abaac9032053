package image

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// StubPackage is Debian's package with systemd-stub, the small UEFI
// program a unified kernel image starts with: it hands the kernel its
// embedded initramfs and command line, so the firmware boots one file
// with no Boot#### options (a freshly flashed box has none).
const StubPackage = "systemd-boot-efi"

const maxStubSize = 4 << 20

// stubFile is the stub's path inside the package for arch.
func stubFile(arch string) string {
	if arch == "arm64" {
		return "usr/lib/systemd/boot/efi/linuxaa64.efi.stub"
	}
	return "usr/lib/systemd/boot/efi/linuxx64.efi.stub"
}

// fetchStub downloads (or finds in the cache) systemd-boot-efi for arch
// like the kernel package (apt, SHA256 from the signed index checked on
// every use) and returns the stub's bytes and the package version.
func fetchStub(ctx context.Context, o *options, arch string) ([]byte, string, error) {
	hostArch, err := run(ctx, "", "dpkg", "--print-architecture")
	if err != nil {
		return nil, "", err
	}
	spec := StubPackage
	if strings.TrimSpace(hostArch) != arch {
		spec += ":" + arch
	}
	info, err := aptShow(ctx, spec)
	if err != nil {
		return nil, "", fmt.Errorf("%s cannot be fetched (run \"apt-get update\"; arm64 needs \"dpkg --add-architecture arm64\"): %w", spec, err)
	}
	ver, sum := info["Version"], info["SHA256"]
	if !versionRE.MatchString(ver) || info["Architecture"] != arch || !sha256RE.MatchString(sum) {
		return nil, "", fmt.Errorf("%s: unexpected apt metadata (version %q, arch %q)", spec, ver, info["Architecture"])
	}
	key := StubPackage + "_" + strings.ReplaceAll(ver, ":", "%3a") + "_" + arch
	debDir := filepath.Join(o.cacheDir, "debs")
	if err := os.MkdirAll(debDir, 0o755); err != nil {
		return nil, "", err
	}
	deb := filepath.Join(debDir, key+".deb")
	if err := verifySHA256(deb, sum); err != nil {
		o.log.Info("downloading stub package", "package", spec, "version", ver, "reason", err)
		if err := aptDownload(ctx, debDir, spec+"="+ver, deb, sum); err != nil {
			return nil, "", fmt.Errorf("%s=%s cannot be fetched: %w", spec, ver, err)
		}
	}
	tmp, err := os.MkdirTemp(o.tempDir, "edgepbx-stub-*")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(tmp)
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, tmp); err != nil {
		return nil, "", err
	}
	p := filepath.Join(tmp, filepath.FromSlash(stubFile(arch)))
	fi, err := os.Stat(p)
	if err != nil {
		return nil, "", fmt.Errorf("%s=%s: no %s: %w", spec, ver, stubFile(arch), err)
	}
	if fi.Size() > maxStubSize {
		return nil, "", fmt.Errorf("%s: stub is %d bytes, limit %d", spec, fi.Size(), maxStubSize)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, "", err
	}
	return b, ver, nil
}
