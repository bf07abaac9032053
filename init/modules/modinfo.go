package modules

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ulikunitz/xz"
)

// MaxModuleSize bounds a decompressed .ko; Debian's largest is ~20 MiB.
const MaxModuleSize = 128 << 20

// maxModinfo bounds the .modinfo section we parse.
const maxModinfo = 1 << 20

// ModInfo is what a module's ELF .modinfo section says about it.
type ModInfo struct {
	Name     string   // canonical name ('_' not '-')
	Depends  []string // hard dependencies, canonical names
	SoftPre  []string // softdep "pre:" entries (module names or aliases)
	SoftPost []string // softdep "post:" entries
	Aliases  []string // plain aliases only
	Vermagic string
}

// ReadModInfo reads the .modinfo of a .ko or .ko.xz file.
func ReadModInfo(path string) (ModInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return ModInfo{}, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	var r io.ReaderAt = f
	if strings.HasSuffix(path, ".xz") {
		data, err := DecompressXZ(f)
		if err != nil {
			return ModInfo{}, fmt.Errorf("read module %s: %w", path, err)
		}
		r = bytes.NewReader(data)
	}
	mi, err := modinfoFromELF(r)
	if err != nil {
		return ModInfo{}, fmt.Errorf("read module %s: %w", path, err)
	}
	if mi.Name == "" {
		mi.Name = NameFromPath(path)
	}
	return mi, nil
}

// DecompressXZ decompresses a single xz stream, bounded by MaxModuleSize.
func DecompressXZ(r io.Reader) ([]byte, error) {
	cfg := xz.ReaderConfig{SingleStream: true}
	zr, err := cfg.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(zr, MaxModuleSize+1))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	if len(data) > MaxModuleSize {
		return nil, fmt.Errorf("xz: decompressed module exceeds %d bytes", MaxModuleSize)
	}
	return data, nil
}

func modinfoFromELF(r io.ReaderAt) (ModInfo, error) {
	ef, err := elf.NewFile(r)
	if err != nil {
		return ModInfo{}, fmt.Errorf("not an ELF module: %w", err)
	}
	defer ef.Close()
	sec := ef.Section(".modinfo")
	if sec == nil {
		return ModInfo{}, errors.New("no .modinfo section")
	}
	if sec.Size > maxModinfo {
		return ModInfo{}, fmt.Errorf(".modinfo section of %d bytes exceeds %d", sec.Size, maxModinfo)
	}
	data, err := sec.Data()
	if err != nil {
		return ModInfo{}, fmt.Errorf(".modinfo: %w", err)
	}
	return ParseModinfo(data)
}

// ParseModinfo parses the NUL-separated key=value records of a .modinfo
// section.
func ParseModinfo(data []byte) (ModInfo, error) {
	if len(data) > maxModinfo {
		return ModInfo{}, fmt.Errorf(".modinfo of %d bytes exceeds %d", len(data), maxModinfo)
	}
	var mi ModInfo
	for _, rec := range bytes.Split(data, []byte{0}) {
		k, v, ok := strings.Cut(string(rec), "=")
		if !ok {
			continue // alignment padding or a bare string
		}
		switch k {
		case "name":
			if !validName(v) {
				return ModInfo{}, fmt.Errorf(".modinfo: invalid name %q", v)
			}
			mi.Name = Canonical(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d == "" {
					continue
				}
				if !validName(d) {
					return ModInfo{}, fmt.Errorf(".modinfo: invalid dependency %q", d)
				}
				mi.Depends = append(mi.Depends, Canonical(d))
			}
		case "softdep":
			// Some modules (cifs) declare softdeps without pre:/post:;
			// modprobe ignores those words, and so do we.
			pre, post, err := parseSoftdep(strings.Fields(v), true)
			if err != nil {
				return ModInfo{}, fmt.Errorf(".modinfo: softdep %q: %w", v, err)
			}
			mi.SoftPre = append(mi.SoftPre, pre...)
			mi.SoftPost = append(mi.SoftPost, post...)
		case "alias":
			// Only plain aliases (crc32c, crypto-crc32c, fs-ext4); device
			// globs are dropped: nothing in the image loads by device.
			if validToken(v) {
				mi.Aliases = append(mi.Aliases, v)
			}
		case "vermagic":
			mi.Vermagic = v
		}
	}
	return mi, nil
}

// parseSoftdep parses "pre: a b post: c" fields.
// Words before the first pre:/post: are an error unless lenient.
func parseSoftdep(fields []string, lenient bool) (pre, post []string, err error) {
	var cur *[]string
	for _, f := range fields {
		switch f {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur == nil {
				if lenient {
					continue
				}
				return nil, nil, fmt.Errorf("%q before pre: or post:", f)
			}
			if !validToken(f) {
				return nil, nil, fmt.Errorf("invalid name %q", f)
			}
			*cur = append(*cur, f)
		}
	}
	return pre, post, nil
}

// Canonical returns the kernel's form of a module name ('-' becomes '_').
func Canonical(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

// NameFromPath returns the canonical module name of a .ko or .ko.xz path.
func NameFromPath(p string) string {
	base := p[strings.LastIndexByte(p, '/')+1:]
	base = strings.TrimSuffix(base, ".xz")
	base = strings.TrimSuffix(base, ".ko")
	return Canonical(base)
}

// validName accepts module names and plain aliases (no globs, no paths).
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return s != "." && s != ".."
}

// validToken accepts soft dependency entries and aliases: module names,
// plain aliases and bus-prefixed ones (platform:leds-gpio), but no globs.
func validToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':') {
			return false
		}
	}
	return s != "." && s != ".."
}
