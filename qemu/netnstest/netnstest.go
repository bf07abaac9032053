// Package netnstest gives tests their own network namespaces: created and
// entered only on locked OS threads that are then discarded, so a namespace
// switch never leaks into the test's other goroutines or the host. It also
// finds free loopback ports (FreePort) and holds the rule for tests that
// need root or a Debian tool (NeedRoot, NeedTool): skip with the reason
// outside CI, fail under CI. Only tests import it.
package netnstest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// debianPackage names where a tool the tests run comes from.
var debianPackage = map[string]string{"nft": "nftables", "nsenter": "util-linux", "ip": "iproute2", "unshare": "util-linux"}

// Require skips the test (or, with CI set, fails it) unless it runs as root
// and the named tools are installed.
func Require(tb testing.TB, tools ...string) {
	tb.Helper()
	NeedRoot(tb, "network namespaces and nftables")
	for _, tool := range tools {
		NeedTool(tb, tool, debianPackage[tool])
	}
}

// NeedRoot is the one rule for tests that need root: outside CI (CI unset)
// the test skips and says what it needs root for; under CI it fails, so a
// CI run never passes by skipping.
func NeedRoot(tb testing.TB, what string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Unavailable(tb, "needs root for %s", what)
	}
}

// NeedTool returns the path of tool, and follows NeedRoot's rule when it is
// not installed, naming the Debian package that has it.
func NeedTool(tb testing.TB, tool, debianPkg string) string {
	tb.Helper()
	p, err := exec.LookPath(tool)
	if err != nil {
		Unavailable(tb, "needs %s (Debian package %s)", tool, debianPkg)
	}
	return p
}

// Unavailable ends a test whose environment lacks something it needs: it
// fails under CI and skips, with the reason, outside it.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		tb.Fatal(why)
	}
	tb.Skip(why)
}

// FreePort returns a loopback port (network "udp" or "tcp") that was free
// a moment ago.
func FreePort(tb testing.TB, network string) int {
	tb.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeMediaPorts returns an even UDP port on host such that it and the
// three after it are free now: sipp's -mp (audio RTP, RTCP, and the two
// its video stream may take). Deriving -mp from the SIP port instead let
// two sipp processes of one test, or a daemon's relay, pick the same port
// (sipp then exits 254 at once: it could not bind).
func FreeMediaPorts(tb testing.TB, host string) int {
	tb.Helper()
	for range 100 {
		c, err := net.ListenPacket("udp", net.JoinHostPort(host, "0"))
		if err != nil {
			tb.Fatal(err)
		}
		base := c.LocalAddr().(*net.UDPAddr).Port
		held := []net.PacketConn{c}
		ok := base%2 == 0 && base+3 <= 65535
		for i := 1; ok && i < 4; i++ {
			d, err := net.ListenPacket("udp", net.JoinHostPort(host, strconv.Itoa(base+i)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, d)
		}
		for _, h := range held {
			h.Close()
		}
		if ok {
			return base
		}
	}
	tb.Fatalf("no four free UDP ports in a row on %s", host)
	return 0
}

// New creates a namespace, closed when the test ends.
func New(tb testing.TB) netns.NsHandle {
	tb.Helper()
	type res struct {
		h   netns.NsHandle
		err error
	}
	c := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: this thread is discarded
		h, err := netns.New()
		c <- res{h, err}
	}()
	r := <-c
	if r.err != nil {
		tb.Fatalf("new netns: %v", r.err)
	}
	tb.Cleanup(func() { r.h.Close() })
	return r.h
}

// Run runs fn on a fresh locked thread inside ns. Sockets fn creates belong
// to ns for their whole life, whichever thread uses them later.
func Run(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Nft runs the nft tool inside ns (through nsenter, so no thread of the
// test switches namespace) and returns its output; a failure fails the test.
func Nft(tb testing.TB, ns netns.NsHandle, args ...string) string {
	tb.Helper()
	fd, err := unix.Dup(int(ns))
	if err != nil {
		tb.Fatal(err)
	}
	nsf := os.NewFile(uintptr(fd), "netns")
	defer nsf.Close()
	cmd := exec.Command("nsenter", append([]string{"--net=/proc/self/fd/3", "nft"}, args...)...)
	cmd.ExtraFiles = []*os.File{nsf}
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("nft %v: %v: %s", args, err, stderr.String())
	}
	return out.String()
}

// LinkUp gives link name the addresses (usable at once: no DAD wait) and
// sets it up.
func LinkUp(tb testing.TB, h *netlink.Handle, name string, addrs ...string) {
	tb.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		tb.Fatalf("link %s: %v", name, err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			tb.Fatal(err)
		}
		addr.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(link, addr); err != nil {
			tb.Fatalf("addr %s on %s: %v", a, name, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		tb.Fatalf("up %s: %v", name, err)
	}
}
