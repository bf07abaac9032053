// Package board holds the board profiles: which architecture, console,
// kernel package, kernel modules, NICs, data device and watchdog a box has.
//
// Profiles are embedded JSON files (profiles/<name>.json). The image builder
// embeds the chosen profile at /etc/edgepbx/board.json and PID 1 parses it
// again with Parse, so the same validation runs on the host and in the box.
package board

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"path"
	"regexp"
	"sort"
	"strings"
)

//go:embed profiles/*.json
var profiles embed.FS

// MaxProfileSize bounds a profile file; real ones are about 1 KiB.
const MaxProfileSize = 64 << 10

// Limits on list lengths keep a hostile profile from costing memory or time.
const (
	maxModules = 256
	maxNICs    = 16
)

// Arch values, named like GOARCH and Debian's architecture names.
const (
	ArchAMD64 = "amd64"
	ArchARM64 = "arm64"
)

// NIC modes.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
)

// ErrUnknownBoard is returned by Load for a name with no profile.
var ErrUnknownBoard = errors.New("unknown board")

// Profile describes one board.
type Profile struct {
	Name string `json:"name"`
	Arch string `json:"arch"`
	// Console is the kernel console device without /dev/ (ttyS0, ttyAMA0, tty0).
	Console string `json:"console"`
	// KernelPackage is Debian's kernel metapackage (linux-image-amd64, …);
	// the builder resolves the current ABI package from it.
	KernelPackage string `json:"kernel_package"`
	// Modules are the kernel modules PID 1 loads, by module name; the
	// builder stages them with their dependency closure.
	Modules  []string `json:"modules"`
	NICs     []NIC    `json:"nics"`
	Data     Data     `json:"data"`
	Watchdog Watchdog `json:"watchdog"`
	QEMU     *QEMU    `json:"qemu,omitempty"`
}

// NIC is one network interface PID 1 brings up.
type NIC struct {
	Name string `json:"name"`
	Mode string `json:"mode"` // "dhcp" or "static"
	// Address is a CIDR prefix (192.0.2.10/24), only for static.
	Address string `json:"address,omitempty"`
	// Gateway is optional, only for static, and must be inside Address.
	Gateway string `json:"gateway,omitempty"`
}

// Data is the persistent data partition mounted at /data.
type Data struct {
	// Device is a /dev path or PARTLABEL=<label>.
	Device string `json:"device"`
	FSType string `json:"fstype"`
}

// Watchdog is the hardware (or softdog) watchdog PID 1 pets.
type Watchdog struct {
	Device     string `json:"device"`
	Module     string `json:"module"` // must be one of Modules
	TimeoutSec int    `json:"timeout_sec"`
}

// QEMU is set only for boards that are QEMU machines; the qemu package owns
// the device flags.
type QEMU struct {
	Binary  string `json:"binary"`
	Machine string `json:"machine"`
	CPU     string `json:"cpu"`
}

var (
	nameRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	consoleRE = regexp.MustCompile(`^(ttyS|ttyAMA|tty|hvc|ttyUSB)[0-9]{1,2}$`)
	kpkgRE    = regexp.MustCompile(`^linux-image-[a-z0-9][a-z0-9.+-]{0,62}$`)
	moduleRE  = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
	ifnameRE  = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,14}$`)
	labelRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,36}$`)
	qemuRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.,=-]{0,63}$`)
)

var fsTypes = map[string]bool{"ext4": true}

// ValidConsole reports whether dev names a console device the kernel
// command line may carry (without /dev/).
func ValidConsole(dev string) bool { return consoleRE.MatchString(dev) }

// Names lists the embedded profiles, sorted.
func Names() []string {
	ents, err := fs.ReadDir(profiles, "profiles")
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// Load returns the embedded profile called name.
func Load(name string) (Profile, error) {
	if !nameRE.MatchString(name) {
		return Profile{}, fmt.Errorf("board %q: %w (known: %s)", name, ErrUnknownBoard, strings.Join(Names(), ", "))
	}
	data, err := profiles.ReadFile(path.Join("profiles", name+".json"))
	if err != nil {
		return Profile{}, fmt.Errorf("board %q: %w (known: %s)", name, ErrUnknownBoard, strings.Join(Names(), ", "))
	}
	p, err := Parse(data)
	if err != nil {
		return Profile{}, err
	}
	if p.Name != name {
		return Profile{}, fmt.Errorf("board %q: profile names itself %q", name, p.Name)
	}
	return p, nil
}

// Parse decodes and validates a profile. Unknown fields, trailing data and
// oversize input are errors.
func Parse(data []byte) (Profile, error) {
	if len(data) > MaxProfileSize {
		return Profile{}, fmt.Errorf("board profile: %d bytes exceeds limit of %d", len(data), MaxProfileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var p Profile
	if err := dec.Decode(&p); err != nil {
		return Profile{}, fmt.Errorf("board profile: corrupt JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Profile{}, errors.New("board profile: corrupt JSON: trailing data after the profile object")
	}
	if err := p.Validate(); err != nil {
		return Profile{}, err
	}
	return p, nil
}

// Marshal encodes the profile as indented JSON (what the image embeds).
// Output is deterministic for a given profile.
func (p Profile) Marshal() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("board %s: marshal: %w", p.Name, err)
	}
	return append(b, '\n'), nil
}

// Validate checks every field; the error names the board and the field.
func (p Profile) Validate() error {
	if err := p.validate(); err != nil {
		name := p.Name
		if !nameRE.MatchString(name) {
			name = "?"
		}
		return fmt.Errorf("board %s: invalid profile: %w", name, err)
	}
	return nil
}

func (p Profile) validate() error {
	if !nameRE.MatchString(p.Name) {
		return fmt.Errorf("name %q: want lower-case letters, digits, '-' or '_'", p.Name)
	}
	switch p.Arch {
	case ArchAMD64, ArchARM64:
	default:
		return fmt.Errorf("arch %q: unknown (want %q or %q)", p.Arch, ArchAMD64, ArchARM64)
	}
	if !consoleRE.MatchString(p.Console) {
		return fmt.Errorf("console %q: want a tty name such as ttyS0 or ttyAMA0", p.Console)
	}
	if !kpkgRE.MatchString(p.KernelPackage) {
		return fmt.Errorf("kernel_package %q: want a Debian linux-image-* package name", p.KernelPackage)
	}
	if len(p.Modules) == 0 {
		return errors.New("modules: empty")
	}
	if len(p.Modules) > maxModules {
		return fmt.Errorf("modules: %d entries exceeds limit of %d", len(p.Modules), maxModules)
	}
	seen := make(map[string]bool, len(p.Modules))
	for _, m := range p.Modules {
		if !moduleRE.MatchString(m) {
			return fmt.Errorf("modules: invalid module name %q", m)
		}
		n := NormalizeModule(m)
		if seen[n] {
			return fmt.Errorf("modules: %q listed twice", m)
		}
		seen[n] = true
	}
	if len(p.NICs) > maxNICs {
		return fmt.Errorf("nics: %d entries exceeds limit of %d", len(p.NICs), maxNICs)
	}
	nics := make(map[string]bool, len(p.NICs))
	for i, n := range p.NICs {
		if err := n.validate(); err != nil {
			return fmt.Errorf("nics[%d]: %w", i, err)
		}
		if nics[n.Name] {
			return fmt.Errorf("nics[%d]: %q listed twice", i, n.Name)
		}
		nics[n.Name] = true
	}
	if err := p.Data.validate(); err != nil {
		return fmt.Errorf("data: %w", err)
	}
	if err := p.Watchdog.validate(seen); err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	if p.QEMU != nil {
		if err := p.QEMU.validate(p.Arch); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	return nil
}

func (n NIC) validate() error {
	if !ifnameRE.MatchString(n.Name) {
		return fmt.Errorf("name %q: not a valid interface name", n.Name)
	}
	switch n.Mode {
	case ModeDHCP:
		if n.Address != "" || n.Gateway != "" {
			return fmt.Errorf("%s: address and gateway are only for mode %q", n.Name, ModeStatic)
		}
	case ModeStatic:
		pfx, err := netip.ParsePrefix(n.Address)
		if err != nil {
			return fmt.Errorf("%s: address %q: want CIDR such as 192.0.2.10/24: %w", n.Name, n.Address, err)
		}
		if n.Gateway != "" {
			gw, err := netip.ParseAddr(n.Gateway)
			if err != nil {
				return fmt.Errorf("%s: gateway %q: %w", n.Name, n.Gateway, err)
			}
			if !pfx.Masked().Contains(gw) {
				return fmt.Errorf("%s: gateway %s is outside %s", n.Name, gw, pfx)
			}
		}
	default:
		return fmt.Errorf("%s: mode %q: want %q or %q", n.Name, n.Mode, ModeDHCP, ModeStatic)
	}
	return nil
}

func (d Data) validate() error {
	switch {
	case strings.HasPrefix(d.Device, "PARTLABEL="):
		if !labelRE.MatchString(strings.TrimPrefix(d.Device, "PARTLABEL=")) {
			return fmt.Errorf("device %q: invalid partition label", d.Device)
		}
	case strings.HasPrefix(d.Device, "/dev/"):
		if !validDevPath(d.Device) {
			return fmt.Errorf("device %q: invalid /dev path", d.Device)
		}
	default:
		return fmt.Errorf("device %q: want /dev/<name> or PARTLABEL=<label>", d.Device)
	}
	if !fsTypes[d.FSType] {
		return fmt.Errorf("fstype %q: unsupported (want ext4)", d.FSType)
	}
	return nil
}

func (w Watchdog) validate(modules map[string]bool) error {
	if !validDevPath(w.Device) {
		return fmt.Errorf("device %q: want a /dev path", w.Device)
	}
	if !modules[NormalizeModule(w.Module)] {
		return fmt.Errorf("module %q: not in the board's modules", w.Module)
	}
	if w.TimeoutSec < 1 || w.TimeoutSec > 600 {
		return fmt.Errorf("timeout_sec %d: want 1..600", w.TimeoutSec)
	}
	return nil
}

func (q QEMU) validate(arch string) error {
	want := map[string]string{ArchAMD64: "qemu-system-x86_64", ArchARM64: "qemu-system-aarch64"}[arch]
	if q.Binary != want {
		return fmt.Errorf("binary %q: want %q for arch %s", q.Binary, want, arch)
	}
	if !qemuRE.MatchString(q.Machine) {
		return fmt.Errorf("machine %q: invalid", q.Machine)
	}
	if !qemuRE.MatchString(q.CPU) {
		return fmt.Errorf("cpu %q: invalid", q.CPU)
	}
	return nil
}

func validDevPath(p string) bool {
	rest, ok := strings.CutPrefix(p, "/dev/")
	if !ok || rest == "" || len(p) > 64 || path.Clean(p) != p {
		return false
	}
	for _, c := range rest {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/_.-", c)) {
			return false
		}
	}
	return !strings.Contains(rest, "..")
}

// NormalizeModule returns the kernel's canonical form of a module name: the
// kernel treats '-' and '_' alike and reports names with '_'.
func NormalizeModule(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}
