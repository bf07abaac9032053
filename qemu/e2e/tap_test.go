package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/qemu"
)

// The test network lives only inside the test's own network namespace. The
// LAN is private (the default policy opens admin HTTPS to private networks);
// the host also holds a public documentation address to probe from outside.
var (
	tapHostIP   = net.IPv4(10, 99, 0, 1)
	tapGuestIP  = net.IPv4(10, 99, 0, 15)
	tapMask     = net.CIDRMask(24, 32)
	tapPublicIP = net.IPv4(192, 0, 2, 1)
)

// netnsThread runs functions on one OS thread inside a fresh network
// namespace; the host's namespace is never touched.
type netnsThread struct {
	path string
	jobs chan func()
}

func newNetnsThread(t *testing.T) *netnsThread {
	t.Helper()
	n := &netnsThread{jobs: make(chan func())}
	ready := make(chan error)
	go func() {
		// Never unlocked: the thread leaves with the goroutine instead of
		// returning to the pool in a foreign namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- err
			return
		}
		n.path = fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		ready <- nil
		for f := range n.jobs {
			f()
		}
	}()
	if err := <-ready; err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("cannot create a network namespace (needs root): %v", err)
		}
		t.Fatalf("cannot create a network namespace (needs root): %v", err)
	}
	t.Cleanup(func() { close(n.jobs) })
	return n
}

// do runs f inside the namespace and waits for it.
func (n *netnsThread) do(f func()) {
	done := make(chan struct{})
	n.jobs <- func() { defer close(done); f() }
	<-done
}

// dhcpServer answers the guest's DHCP with tapGuestIP, so the appliance's own
// DHCP client configures it as on a real LAN.
func dhcpServer(t *testing.T, ifname string) error {
	handler := func(conn net.PacketConn, _ net.Addr, m *dhcpv4.DHCPv4) {
		var typ dhcpv4.MessageType
		switch m.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			typ = dhcpv4.MessageTypeOffer
		case dhcpv4.MessageTypeRequest:
			typ = dhcpv4.MessageTypeAck
		default:
			return
		}
		reply, err := dhcpv4.NewReplyFromRequest(m,
			dhcpv4.WithMessageType(typ),
			dhcpv4.WithYourIP(tapGuestIP),
			dhcpv4.WithServerIP(tapHostIP),
			dhcpv4.WithNetmask(tapMask),
			dhcpv4.WithRouter(tapHostIP),
			dhcpv4.WithLeaseTime(3600),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(tapHostIP)),
		)
		if err != nil {
			return
		}
		conn.WriteTo(reply.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort})
	}
	s, err := server4.NewServer(ifname, &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ServerPort}, handler)
	if err != nil {
		return fmt.Errorf("dhcp server on %s: %w", ifname, err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return nil
}

// TestX86DroppedPortsTap puts the guest's NIC on a tap device in a test
// namespace, where a real host-side socket sees exactly what the guest sends:
// a closed TCP port must not answer with RST (ECONNREFUSED) and a closed UDP
// port must not answer with ICMP port unreachable (ECONNREFUSED on read),
// while HTTPS on the same path works.
func TestX86DroppedPortsTap(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	img := buildImage(t, "qemu-x86_64")
	ns := newNetnsThread(t)
	vm, err := qemu.Boot(context.Background(), img,
		qemu.WithDataDisk(filepath.Join(t.TempDir(), "data.img")),
		qemu.WithTap(ns.path, "tap0"),
		qemu.WithConsoleLog(&consoleLog{tb: t}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	// t.Fatal only on the test's goroutine: the namespace thread reports back.
	var setupErr error
	ns.do(func() {
		l, err := netlink.LinkByName("tap0")
		if err == nil {
			err = netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: tapHostIP, Mask: tapMask}})
		}
		if err == nil {
			err = netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: tapPublicIP, Mask: net.CIDRMask(32, 32)}})
		}
		if err == nil {
			err = netlink.LinkSetUp(l)
		}
		if err != nil {
			setupErr = fmt.Errorf("configure tap0: %w", err)
			return
		}
		setupErr = dhcpServer(t, "tap0")
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("appliance halted: %s", line)
	}

	var ne net.Error
	ns.do(func() {
		// Positive control: the path works, HTTPS answers.
		var err error
		for deadline := time.Now().Add(stepTimeout); time.Now().Before(deadline); time.Sleep(time.Second) {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", net.JoinHostPort(tapGuestIP.String(), "443"), 10*time.Second); err == nil {
				c.Close()
				break
			}
		}
		if err != nil {
			t.Errorf("HTTPS port 443 on the guest unreachable over tap: %v", err)
			return
		}

		silentTCP := func(what string, d net.Dialer, port string) {
			d.Timeout = 5 * time.Second
			c, err := d.Dial("tcp", net.JoinHostPort(tapGuestIP.String(), port))
			switch {
			case err == nil:
				c.Close()
				t.Errorf("%s: connection accepted", what)
			case errors.Is(err, syscall.ECONNREFUSED):
				t.Errorf("%s: refused (RST): must be dropped silently", what)
			case !errors.As(err, &ne) || !ne.Timeout():
				t.Errorf("%s: %v; want a timeout (silence)", what, err)
			}
		}
		silentTCP("tcp 7070 (no service)", net.Dialer{}, "7070")
		silentTCP("tcp 443 from a public address (admin is LAN only)",
			net.Dialer{LocalAddr: &net.TCPAddr{IP: tapPublicIP}}, "443")

		u, err := net.Dial("udp", net.JoinHostPort(tapGuestIP.String(), "9"))
		if err != nil {
			t.Error(err)
			return
		}
		defer u.Close()
		// Several probes: an ICMP error for any of them shows on a later read.
		for range 3 {
			u.Write([]byte("probe"))
			time.Sleep(200 * time.Millisecond)
		}
		u.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, err = u.Read(make([]byte, 64))
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			t.Error("udp 9: ICMP port unreachable: closed ports must be dropped silently")
		case !errors.As(err, &ne) || !ne.Timeout():
			t.Errorf("udp 9: %v; want a timeout (silence)", err)
		}
	})

	pctx, pcancel := context.WithTimeout(context.Background(), stepTimeout)
	defer pcancel()
	if err := vm.Powerdown(pctx); err != nil {
		t.Errorf("powerdown: %v", err)
	}
}
