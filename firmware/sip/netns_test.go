package sip

import (
	"context"
	"crypto/rand"
	"github.com/edgepbx/edgepbx/netfw/netnstest"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/vishvananda/netlink"
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

// TestBruteForceBannedInFirewall: a "box" namespace runs netfw's default
// policy and the SIP edge; from a "phones" namespace an attacker guesses
// passwords and is banned in nftables (its packets no longer reach the
// edge at all) while another phone keeps registering.
func TestBruteForceBannedInFirewall(t *testing.T) {
	netnstest.Require(t)
	box, phones := netnstest.New(t), netnstest.New(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ph0"}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(phones))}); err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, bh, "ph0", "10.9.0.1/24")
	ph, err := netlink.NewHandleAt(phones)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	netnstest.LinkUp(t, ph, "lo")
	netnstest.LinkUp(t, ph, "eth0", "10.9.0.2/24", "10.9.0.3/24")

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
	if err := netnstest.Run(box, func() error {
		var err error
		s, err = New(cfg, Deps{Store: db, Banner: banner, Security: lg})
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
		if err := netnstest.Run(phones, func() error {
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
