package qemu

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Option changes how a VM is booted.
type Option func(*config) error

// Forward is one user-mode networking port forward from the host's loopback
// to the guest.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  int    // chosen at boot when requested as 0
	GuestPort int
}

// GuestForward sends the guest's TCP connections to Guest (an address in
// user-mode networking's 10.0.2.0/24 that no one else uses) to Host on the
// host's loopback.
type GuestForward struct {
	Guest netip.AddrPort
	Host  netip.AddrPort
	// Each makes every guest connection its own connection to Host: QEMU
	// spawns `busybox nc` per connection. A plain guest forward is one
	// character device dialled once at start, which carries a single guest
	// connection for the VM's life.
	Each bool
}

type tapConfig struct {
	netns string // path of the network namespace, e.g. /var/run/netns/NAME
	name  string // tap device created inside it
}

type config struct {
	dataDisk     string
	dataDiskSize int64
	forwards     []Forward
	guestFwds    []GuestForward
	tap          *tapConfig
	runNet       *RunNet // configures the tap once it exists
	kvm          bool
	memoryMiB    int
	consoleLog   io.Writer
	appendArgs   []string
	logger       *slog.Logger
	stopTimeout  time.Duration
	consoleLines int
	tscKHz       int    // host TSC rate handed to an x86 TCG guest; 0: none
	tpmCtrl      string // swtpm control socket for a TPM 2.0; "": none
}

// kernelArgs are the runner's additions to the kernel command line.
func (c config) kernelArgs() []string {
	var a []string
	if c.tscKHz > 0 {
		a = append(a, fmt.Sprintf("tsc_early_khz=%d", c.tscKHz))
	}
	return append(a, c.appendArgs...)
}

func defaultConfig() config {
	return config{
		dataDiskSize: 256 << 20,
		memoryMiB:    512,
		logger:       slog.New(slog.DiscardHandler),
		stopTimeout:  60 * time.Second,
		consoleLines: 5000,
	}
}

// WithDataDisk attaches a persistent raw data disk at path. A missing file is
// created and formatted ext4 (label edgepbx-data) with the host's mkfs.ext4,
// because the appliance carries no mkfs.
func WithDataDisk(path string) Option {
	return func(c *config) error {
		if path == "" {
			return fmt.Errorf("qemu: empty data disk path")
		}
		c.dataDisk = path
		return nil
	}
}

// WithDataDiskSize sets the size of a data disk created by WithDataDisk.
func WithDataDiskSize(bytes int64) Option {
	return func(c *config) error {
		if bytes < 16<<20 || bytes > 64<<30 {
			return fmt.Errorf("qemu: data disk size %d out of range [16 MiB, 64 GiB]", bytes)
		}
		c.dataDiskSize = bytes
		return nil
	}
}

// WithHostForward forwards 127.0.0.1:hostPort on the host to guestPort in the
// guest (user-mode networking). hostPort 0 picks a free port at boot; VM.HostPort
// tells which.
func WithHostForward(proto string, hostPort, guestPort int) Option {
	return func(c *config) error {
		proto = strings.ToLower(proto)
		if proto != "tcp" && proto != "udp" {
			return fmt.Errorf("qemu: forward protocol %q: want tcp or udp", proto)
		}
		if hostPort < 0 || hostPort > 65535 || guestPort < 1 || guestPort > 65535 {
			return fmt.Errorf("qemu: forward %s %d->%d: port out of range", proto, hostPort, guestPort)
		}
		for _, f := range c.forwards {
			if f.Proto == proto && f.GuestPort == guestPort {
				return fmt.Errorf("qemu: forward %s to guest port %d given twice", proto, guestPort)
			}
		}
		c.forwards = append(c.forwards, Forward{Proto: proto, HostPort: hostPort, GuestPort: guestPort})
		return nil
	}
}

// userNet is QEMU's user-mode network; slirp answers its gateway, DNS and
// the guest's DHCP address itself.
var (
	userNet      = netip.MustParsePrefix("10.0.2.0/24")
	userReserved = []netip.Addr{
		netip.MustParseAddr("10.0.2.0"), netip.MustParseAddr("10.0.2.2"), netip.MustParseAddr("10.0.2.3"),
		netip.MustParseAddr("10.0.2.15"), netip.MustParseAddr("10.0.2.255"),
	}
)

// WithGuestForward lets the guest reach a service on the host: its TCP
// connections to guest (an unused address in 10.0.2.0/24, any port) go to
// host, which must be a loopback address, so the VM still reaches nothing
// else (restrict=on stays). QEMU connects to host once, when it starts,
// and carries the guest's connection over that one stream: host must be
// listening before Boot, should not time out an idle connection, and
// serves one guest connection per boot.
func WithGuestForward(guest, host netip.AddrPort) Option {
	return func(c *config) error {
		g, h := guest.Addr(), host.Addr()
		if !g.Is4() || !userNet.Contains(g) || slices.Contains(userReserved, g) || guest.Port() == 0 {
			return fmt.Errorf("qemu: guest forward address %s: want an unused 10.0.2.x:port", guest)
		}
		if !h.Is4() || !h.IsLoopback() || host.Port() == 0 {
			return fmt.Errorf("qemu: guest forward target %s: want 127.x.x.x:port", host)
		}
		for _, f := range c.guestFwds {
			if f.Guest == guest {
				return fmt.Errorf("qemu: guest forward %s given twice", guest)
			}
		}
		c.guestFwds = append(c.guestFwds, GuestForward{Guest: guest, Host: host})
		return nil
	}
}

// WithGuestForwardEach is WithGuestForward for a guest that opens more
// than one connection (HTTP clients, repeated checks): each is carried to
// host by its own `busybox nc`, which must be on the host's PATH.
func WithGuestForwardEach(guest, host netip.AddrPort) Option {
	return func(c *config) error {
		if err := WithGuestForward(guest, host)(c); err != nil {
			return err
		}
		c.guestFwds[len(c.guestFwds)-1].Each = true
		return nil
	}
}

// WithTap connects the guest's NIC to a tap device created (by Boot) inside
// the network namespace at netnsPath instead of user-mode networking, so a test
// in that namespace sees the guest's real packets. The caller brings the link up
// and configures addresses.
func WithTap(netnsPath, tapName string) Option {
	return func(c *config) error {
		if netnsPath == "" || tapName == "" || len(tapName) > 15 || strings.ContainsAny(tapName, "/ \x00") {
			return fmt.Errorf("qemu: invalid tap %q in netns %q", tapName, netnsPath)
		}
		c.tap = &tapConfig{netns: netnsPath, name: tapName}
		return nil
	}
}

// WithKVM selects KVM acceleration; the default is TCG, which works everywhere.
func WithKVM(on bool) Option {
	return func(c *config) error { c.kvm = on; return nil }
}

// WithMemory sets the guest memory in MiB.
func WithMemory(mib int) Option {
	return func(c *config) error {
		if mib < 64 || mib > 65536 {
			return fmt.Errorf("qemu: memory %d MiB out of range [64, 65536]", mib)
		}
		c.memoryMiB = mib
		return nil
	}
}

// WithConsoleLog copies the raw console output to w as it arrives.
func WithConsoleLog(w io.Writer) Option {
	return func(c *config) error { c.consoleLog = w; return nil }
}

// WithAppend appends parameters to the kernel command line.
func WithAppend(params ...string) Option {
	return func(c *config) error {
		for _, p := range params {
			if strings.ContainsAny(p, "\x00\n\r") {
				return fmt.Errorf("qemu: kernel parameter %q contains a control character", p)
			}
		}
		c.appendArgs = append(c.appendArgs, params...)
		return nil
	}
}

// WithLogger sets the logger for the runner's own messages.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l != nil {
			c.logger = l
		}
		return nil
	}
}

// WithTPM gives the guest a TPM 2.0 served by swtpm, whose control socket
// (swtpm socket --tpm2 --ctrl type=unixio,path=…) is ctrlSocket. QEMU
// drives the TPM's init and startup, so swtpm runs without --server. The
// swtpm state directory is the "chip": the same state is the same box.
// x86-64 only (Debian's arm64 kernel has no driver for QEMU's TPM device).
func WithTPM(ctrlSocket string) Option {
	return func(c *config) error {
		if ctrlSocket == "" || strings.ContainsAny(ctrlSocket, "\x00\n\r") {
			return fmt.Errorf("qemu: invalid TPM socket %q", ctrlSocket)
		}
		c.tpmCtrl = ctrlSocket
		return nil
	}
}
