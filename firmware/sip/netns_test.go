package sip

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// firewallBanner hands bans straight to netfw, standing in for PID 1's
// control socket (which does the same after its own checks).
type firewallBanner struct {
	fw   *netfw.Firewall
	done chan error
}

func (b *firewallBanner) Ban(_ context.Context, ban netfw.Ban) error {
	err := b.fw.Ban(ban)
	b.done <- err
	return err
}

// inNetNS runs fn on a locked OS thread inside ns; the thread is discarded.
func inNetNS(ns netns.NsHandle, fn func() error) error {
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

func newNetNS(t *testing.T) netns.NsHandle {
	t.Helper()
	var h netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		var err error
		h, err = netns.New()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("new netns: %v", err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func linkUp(t *testing.T, h *netlink.Handle, name string, addrs ...string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		addr, _ := netlink.ParseAddr(a)
		addr.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
}

// TestBruteForceBannedInFirewall: a "box" namespace runs netfw's default
// policy and the SIP edge; from a "phones" namespace an attacker guesses
// passwords and is banned in nftables (its packets no longer reach the
// edge at all) while another phone keeps registering.
func TestBruteForceBannedInFirewall(t *testing.T) {
	if os.Geteuid() != 0 {
		if ciSet() {
			t.Fatal("needs root for network namespaces and nftables")
		}
		t.Skip("needs root for network namespaces and nftables")
	}
	box, phones := newNetNS(t), newNetNS(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	linkUp(t, bh, "lo")
	if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ph0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(phones))}); err != nil {
		t.Fatal(err)
	}
	linkUp(t, bh, "ph0", "10.9.0.1/24")
	ph, err := netlink.NewHandleAt(phones)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	linkUp(t, ph, "lo")
	linkUp(t, ph, "eth0", "10.9.0.2/24", "10.9.0.3/24")

	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}

	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	lg, _ := logs.New(db, 100)
	banner := &firewallBanner{fw: fw, done: make(chan error, 4)}
	cfg := config.DefaultSIP()
	cfg.UDP, cfg.TCP, cfg.TLS = "10.9.0.1:5060", "", ""
	var s *Server
	if err := inNetNS(box, func() error {
		var err error
		s, err = New(cfg, Deps{Store: db, Banner: banner, Log: lg})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Extensions().Set("101", testPassword); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	defer func() { cancel(); <-done }()

	dial := func(ip string) *phone {
		var c *net.UDPConn
		if err := inNetNS(phones, func() error {
			var err error
			c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &phone{t: t, conn: c, srv: s.Addr("udp").(*net.UDPAddr), user: "101", tag: randHex(4), call: randHex(8), local: c.LocalAddr().String()}
	}
	atk, good := dial("10.9.0.2"), dial("10.9.0.3")
	for i := 0; i < 3; i++ {
		msg, _ := atk.register(regOpts{})
		r, ok := atk.exchange(msg)
		if !ok || r.StatusCode != 401 {
			t.Fatalf("attacker challenge %d: %v", i, r)
		}
		msg, _ = atk.register(regOpts{auth: authHeader(AlgMD5, "101", "guess"+randHex(2), "edgepbx", challengeOf(t, r, AlgMD5), "sip:10.9.0.1", "00000001", "c")})
		atk.send(msg)
	}
	if err := <-banner.done; err != nil {
		t.Fatalf("netfw ban: %v", err)
	}
	before := s.filter.Counters.Banned.Load()
	for i := 0; i < 5; i++ {
		msg, _ := atk.register(regOpts{})
		atk.send(msg)
	}
	// The phone's exchange is queued behind anything the attacker got through.
	if r, ok := good.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("legitimate phone: %v", r)
	}
	if after := s.filter.Counters.Banned.Load(); after != before {
		t.Fatalf("%d attacker packets reached the edge after the firewall ban", after-before)
	}
}
