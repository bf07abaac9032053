// Package mount holds PID 1's early file-system table: declarative values
// (Dir, Mount, Symlink, DataMount) that one loop applies in order and reports
// by name, so the boot reads top to bottom and can be printed and tested.
package mount

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Op is one step of the early file-system table.
type Op interface {
	Create() error
	String() string
}

// Dir makes a directory (and its parents) with the given mode.
type Dir struct {
	Name string
	Mode os.FileMode
}

// Create makes the directory; an existing directory is fine.
func (d Dir) Create() error {
	if err := os.MkdirAll(d.Name, d.Mode); err != nil {
		return fmt.Errorf("mkdir %s: %w", d.Name, err)
	}
	// MkdirAll is subject to the umask and leaves existing dirs alone.
	if err := os.Chmod(d.Name, d.Mode); err != nil {
		return fmt.Errorf("chmod %s: %w", d.Name, err)
	}
	return nil
}

func (d Dir) String() string { return fmt.Sprintf("dir %s (%#o)", d.Name, uint32(d.Mode.Perm())) }

// Symlink makes NewPath point at Target, replacing nothing.
type Symlink struct {
	Target  string
	NewPath string
}

// Create makes the link; an identical existing link is fine.
func (s Symlink) Create() error {
	if cur, err := os.Readlink(s.NewPath); err == nil && cur == s.Target {
		return nil
	}
	if err := os.Symlink(s.Target, s.NewPath); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", s.NewPath, s.Target, err)
	}
	return nil
}

func (s Symlink) String() string { return fmt.Sprintf("symlink %s -> %s", s.NewPath, s.Target) }

// Mount mounts a file system at Target, creating Target first.
type Mount struct {
	Source string
	Target string
	FSType string
	Flags  uintptr
	Data   string
}

// Create mounts the file system.
func (m Mount) Create() error {
	if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return fmt.Errorf("mkdir %s: %w", m.Target, err)
	}
	if err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", m.Source, m.FSType, m.Target, err)
	}
	return nil
}

func (m Mount) String() string {
	s := fmt.Sprintf("mount %s on %s type %s (%s)", m.Source, m.Target, m.FSType, flagString(m.Flags))
	if m.Data != "" {
		s += " " + m.Data
	}
	return s
}

var flagNames = []struct {
	f    uintptr
	name string
}{
	{unix.MS_RDONLY, "ro"}, {unix.MS_NOSUID, "nosuid"}, {unix.MS_NODEV, "nodev"},
	{unix.MS_NOEXEC, "noexec"}, {unix.MS_NOATIME, "noatime"}, {unix.MS_RELATIME, "relatime"},
}

func flagString(f uintptr) string {
	var parts []string
	if f&unix.MS_RDONLY == 0 {
		parts = append(parts, "rw")
	}
	for _, n := range flagNames {
		if f&n.f != 0 {
			parts = append(parts, n.name)
		}
	}
	return strings.Join(parts, ",")
}

// DataMount mounts the data partition. It waits up to Wait for the device
// node to appear (devtmpfs creates it once the disk driver has probed), and
// with FSType "tmpfs" it mounts a RAM file system ("live" mode) instead.
type DataMount struct {
	Device string // a /dev path or PARTLABEL=<GPT partition name>
	FSType string
	Target string
	Wait   time.Duration
	// SysRoot is where sysfs is mounted, for PARTLABEL lookups ("/sys" when empty).
	SysRoot string
}

// resolve turns the device spec into a device node path, or "" if a
// PARTLABEL is not (yet) known to the kernel.
func (d DataMount) resolve() (string, error) {
	label, ok := strings.CutPrefix(d.Device, "PARTLABEL=")
	if !ok {
		return d.Device, nil
	}
	sys := d.SysRoot
	if sys == "" {
		sys = "/sys"
	}
	ents, err := os.ReadDir(filepath.Join(sys, "class/block"))
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sys, "class/block", e.Name(), "uevent"))
		if err != nil {
			continue
		}
		var name, dev string
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PARTNAME="); ok {
				name = v
			}
			if v, ok := strings.CutPrefix(l, "DEVNAME="); ok {
				dev = v
			}
		}
		if name == label && dev != "" && !strings.Contains(dev, "..") {
			return filepath.Join("/dev", dev), nil
		}
	}
	return "", nil
}

// Resolve returns the device node the spec names ("" if a PARTLABEL is
// not known to the kernel).
func (d DataMount) Resolve() (string, error) { return d.resolve() }

// Label returns the GPT partition name of a PARTLABEL= spec.
func (d DataMount) Label() (string, bool) { return strings.CutPrefix(d.Device, "PARTLABEL=") }

// ErrNoDevice means the data device node did not appear in time.
var ErrNoDevice = errors.New("data device did not appear")

// dataFlags: nothing on /data is ever executed or a device node.
const dataFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME

// Live reports whether /data is a RAM file system (lost at power off).
func (d DataMount) Live() bool { return d.FSType == "tmpfs" }

// Create waits for the device and mounts it.
func (d DataMount) Create() error {
	if d.Live() {
		return Mount{Source: "tmpfs", Target: d.Target, FSType: "tmpfs", Flags: dataFlags, Data: "mode=0755,size=64m"}.Create()
	}
	if d.Device == "" || d.FSType == "" {
		return fmt.Errorf("data partition: device and file-system type must be set (device %q, type %q)", d.Device, d.FSType)
	}
	deadline := time.Now().Add(d.Wait)
	var dev string
	for {
		var err error
		dev, err = d.resolve()
		if err != nil {
			return fmt.Errorf("data partition %s: %w", d.Device, err)
		}
		if dev != "" {
			fi, err := os.Stat(dev)
			if err == nil {
				if fi.Mode()&os.ModeDevice == 0 {
					return fmt.Errorf("data partition %s: not a block device", dev)
				}
				break
			}
			if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("data partition %s: %w", dev, err)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("data partition %s after %v: %w", d.Device, d.Wait, ErrNoDevice)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return Mount{Source: dev, Target: d.Target, FSType: d.FSType, Flags: dataFlags}.Create()
}

func (d DataMount) String() string {
	if d.Live() {
		return fmt.Sprintf("data tmpfs on %s (LIVE: nothing persists)", d.Target)
	}
	return fmt.Sprintf("data %s on %s type %s (wait %v)", d.Device, d.Target, d.FSType, d.Wait)
}

// Early is the table PID 1 applies first, rooted at root ("/" on the box;
// a temporary directory in tests).
func Early(root string) []Op {
	p := func(s string) string { return filepath.Join(root, s) }
	return []Op{
		Mount{Source: "proc", Target: p("/proc"), FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		Mount{Source: "sysfs", Target: p("/sys"), FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		Mount{Source: "devtmpfs", Target: p("/dev"), FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
		Mount{Source: "devpts", Target: p("/dev/pts"), FSType: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
		Symlink{Target: "/proc/self/fd", NewPath: p("/dev/fd")},
		Mount{Source: "tmpfs", Target: p("/run"), FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=0755,size=16m"},
		Mount{Source: "tmpfs", Target: p("/tmp"), FSType: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_NODEV, Data: "mode=1777,size=64m"},
	}
}

// Apply runs ops in order, logging each by name. It stops at the first
// failure: every early mount matters, and the caller decides how to halt.
func Apply(log *slog.Logger, ops []Op) error {
	for _, op := range ops {
		if err := op.Create(); err != nil {
			log.Error("early fs", "op", op.String(), "err", err)
			return err
		}
		log.Debug("early fs", "op", op.String())
	}
	return nil
}
