package sipedge

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/vishvananda/netns"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
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

// fwLab is a "box" namespace running netfw's default policy and the SIP
// edge on 10.9.0.1, a "phones" namespace on its segment (10.9.0.2 and
// 10.9.0.3), and an "attacker" namespace on another segment (10.8.0.2).
type fwLab struct {
	t                     *testing.T
	box, phones, attacker netns.NsHandle
	fw                    *netfw.Firewall
	s                     *Server
	banner                *firewallBanner
}

func newFWLab(t *testing.T, mods ...func(*pbxconfig.SIP)) *fwLab {
	netnstest.Require(t)
	l := &fwLab{t: t, box: netnstest.New(t), phones: netnstest.New(t), attacker: netnstest.New(t)}
	bh, err := netlink.NewHandleAt(l.box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	for _, v := range []struct {
		name string
		peer netns.NsHandle
	}{{"ph0", l.phones}, {"at0", l.attacker}} {
		if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(v.peer))}); err != nil {
			t.Fatal(err)
		}
	}
	netnstest.LinkUp(t, bh, "ph0", "10.9.0.1/24")
	netnstest.LinkUp(t, bh, "at0", "10.8.0.1/24")
	// No reverse-path filter on the box: the spoofed packets must reach
	// the SIP edge, as they do on a LAN where the attacker sits on the
	// phones' own segment.
	if err := netnstest.Run(l.box, func() error {
		for _, f := range []string{"all", "default", "at0", "ph0"} {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+f+"/rp_filter", []byte("0"), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ph, err := netlink.NewHandleAt(l.phones)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	netnstest.LinkUp(t, ph, "lo")
	netnstest.LinkUp(t, ph, "eth0", "10.9.0.2/24", "10.9.0.3/24")
	ah, err := netlink.NewHandleAt(l.attacker)
	if err != nil {
		t.Fatal(err)
	}
	defer ah.Close()
	netnstest.LinkUp(t, ah, "lo")
	// The attacker owns 10.8.0.2 and also puts the victim's 10.9.0.3 on
	// its packets (a /32 it can bind to), and reaches the box directly.
	netnstest.LinkUp(t, ah, "eth0", "10.8.0.2/24", "10.9.0.3/32", "10.7.0.9/32")
	at, err := ah.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := ah.RouteAdd(&netlink.Route{LinkIndex: at.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 9, 0, 1), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}

	l.fw, err = netfw.New(netfw.WithNetNS(int(l.box)), netfw.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.fw.Close() })
	if err := l.fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	lg, _ := logs.New(db, 100)
	l.banner = &firewallBanner{fw: l.fw, done: make(chan error, 4)}
	cfg := pbxconfig.DefaultSIP()
	cfg.UDP, cfg.TCP, cfg.TLS = "10.9.0.1:5060", "", ""
	for _, m := range mods {
		m(&cfg)
	}
	if err := netnstest.Run(l.box, func() error {
		var err error
		l.s, err = New(cfg, Deps{Store: db, Banner: l.banner, Security: lg})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"101", "102"} {
		if err := l.s.Extensions().Set(u, testPassword); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// dial opens a UDP socket on ip in ns, as a phone for user 101.
func (l *fwLab) dial(ns netns.NsHandle, ip string) *phone {
	var c *net.UDPConn
	if err := netnstest.Run(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	srv := l.s.Addr("udp").(*net.UDPAddr)
	return &phone{t: l.t, raw: siptest.RawUDP(l.t, c, srv.AddrPort()), srv: srv, user: "101", tag: randHex(4), call: randHex(8), local: c.LocalAddr().String()}
}

// TestBruteForceBannedInFirewall: from the phones' segment an attacker
// guesses passwords of many extensions (a scan) and is banned in nftables,
// as one host (its packets no longer reach the edge at all), while another
// phone on the same segment keeps registering.
func TestBruteForceBannedInFirewall(t *testing.T) {
	l := newFWLab(t)
	atk, good := l.dial(l.phones, "10.9.0.2"), l.dial(l.phones, "10.9.0.3")
	for i := 0; i < 5; i++ {
		user := fmt.Sprint(200 + i)
		msg, _ := atk.register(regOpts{toUser: user})
		r, ok := atk.exchange(msg)
		if !ok || r.StatusCode != 401 {
			t.Fatalf("attacker challenge %d: %v", i, r)
		}
		msg, _ = atk.register(regOpts{toUser: user, auth: authHeader(AlgMD5, user, "guess"+randHex(2), "edgepbx", challengeOf(t, r, AlgMD5), "sip:10.9.0.1", "00000001", "c")})
		atk.send(msg)
	}
	if err := <-l.banner.done; err != nil {
		t.Fatalf("netfw ban: %v", err)
	}
	bans, err := l.fw.ListBans()
	if err != nil || len(bans) != 1 || bans[0].Prefix.String() != "10.9.0.2/32" {
		t.Fatalf("firewall bans %v (%v), want the attacker's host alone", bans, err)
	}
	before := l.s.filter.Counters.Banned.Load()
	for i := 0; i < 5; i++ {
		msg, _ := atk.register(regOpts{})
		atk.send(msg)
	}
	// The phone's exchange is queued behind anything the attacker got through.
	if r, ok := good.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("legitimate phone: %v", r)
	}
	if after := l.s.filter.Counters.Banned.Load(); after != before {
		t.Fatalf("%d attacker packets reached the edge after the firewall ban", after-before)
	}
}

// TestSpoofedSourceNotBanned: an attacker on another segment sends UDP
// REGISTERs carrying a phone's address (10.9.0.3) with wrong passwords on
// made-up nonces, on a nonce the box issued to the attacker's own address,
// for one extension and for many. It never sees the challenges sent to the
// phone, so it has no evidence to give against that address: nothing is
// banned in nftables or in the edge, nothing is throttled, and the phone
// registers afterwards.
func TestSpoofedSourceNotBanned(t *testing.T) {
	l := newFWLab(t)
	own := l.dial(l.attacker, "10.8.0.2")
	spoof := l.dial(l.attacker, "10.9.0.3")
	msg, _ := own.register(regOpts{})
	r, ok := own.exchange(msg)
	if !ok || r.StatusCode != 401 {
		t.Fatalf("attacker's own challenge: %v", r)
	}
	real := challengeOf(t, r, AlgMD5)
	sent := 0
	for i := 0; i < 10; i++ {
		for _, nonce := range []string{strings.Repeat("A", nonceLen), real} {
			for _, user := range []string{"101", fmt.Sprint(300 + i)} {
				m, _ := spoof.register(regOpts{toUser: user, auth: authHeader(AlgMD5, user, "guess"+randHex(2), "edgepbx", nonce, "sip:10.9.0.1", "00000001", "c")})
				spoof.send(m)
				sent++
			}
		}
	}
	// Wait until every packet (the attacker's own REGISTER and the
	// spoofed ones) went through stage 1.
	seen := func() uint64 { c := l.s.Counters(); return c["filter_passed"] + c["filter_banned"] }
	for deadline := time.Now().Add(30 * time.Second); seen() < uint64(sent+1); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("spoofed packets never reached the edge: %v", l.s.Counters())
		}
	}
	c := l.s.Counters()
	if c["auth_failed"] != 0 || c["guard_auth_bans"] != 0 || c["guard_throttles"] != 0 || len(l.s.Blocks()) != 0 {
		t.Fatalf("spoofed packets charged to the victim: %v", c)
	}
	if bans, err := l.fw.ListBans(); err != nil || len(bans) != 0 {
		t.Fatalf("firewall bans %v (%v)", bans, err)
	}
	victim := l.dial(l.phones, "10.9.0.3")
	if r, ok := victim.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("victim phone: %v", r)
	}
}

// TestSpoofedFloodNotBanned: with the SIP zone narrowed to the phones'
// segment and an IP trunk at 10.7.0.9 outside it, an attacker on another
// segment floods UDP carrying a registered phone's address (10.9.0.3) and
// the trunk's, and floods from its own address (10.8.0.2, outside the
// zones, never proven). Only its own address is banned in nftables; the
// spoofed floods are limited in process. The phone registers during the
// flood (its authenticated flow keeps its budget), as does another phone,
// and the trunk is answered once the flood stops.
func TestSpoofedFloodNotBanned(t *testing.T) {
	l := newFWLab(t, func(c *pbxconfig.SIP) {
		c.AllowedZones = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")}
		c.Trunks = []pbxconfig.Trunk{{Name: "itsp", Peers: []netip.Prefix{netip.MustParsePrefix("10.7.0.9/32")}}}
		c.Guard.RateWindow, c.Guard.RateLimit = 2*time.Second, 200
	})
	// The real trunk host sits behind the phones' link.
	ph, err := netlink.NewHandleAt(l.phones)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	netnstest.LinkUp(t, ph, "eth0", "10.7.0.9/32")
	bh, err := netlink.NewHandleAt(l.box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	link, err := bh.LinkByName("ph0")
	if err != nil {
		t.Fatal(err)
	}
	if err := bh.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 7, 0, 9), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}

	victim, other := l.dial(l.phones, "10.9.0.3"), l.dial(l.phones, "10.9.0.2")
	if r, ok := victim.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("victim before the flood: %v", r)
	}
	floods := []*phone{l.dial(l.attacker, "10.9.0.3"), l.dial(l.attacker, "10.7.0.9"), l.dial(l.attacker, "10.8.0.2")}
	junk, _ := floods[0].register(regOpts{})
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				for i := 0; i < 20; i++ { // about 4,000 packets/s per address
					for _, f := range floods {
						_ = f.raw.Flood([]byte(junk)) // errors: the flood is best effort
					}
				}
			}
		}
	}()
	var once sync.Once
	stopFlood := func() { once.Do(func() { close(stop); <-stopped }) }
	defer stopFlood()

	// The attacker's own flood is banned in the firewall, no innocent
	// address is, and both spoofed floods are being limited.
	innocent := func(p netip.Prefix) bool {
		return p.Contains(netip.MustParseAddr("10.9.0.3")) || p.Contains(netip.MustParseAddr("10.7.0.9"))
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		bans, err := l.fw.ListBans()
		if err != nil {
			t.Fatal(err)
		}
		own := false
		for _, b := range bans {
			if innocent(b.Prefix) {
				t.Fatalf("firewall bans %v: a spoofed address is banned", bans)
			}
			own = own || b.Prefix.String() == "10.8.0.2/32"
		}
		if own && l.s.Counters()["guard_flood_limited"] >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("firewall bans %v; counters %v", bans, l.s.Counters())
		}
	}
	if r, ok := victim.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("victim during the flood: %v", r)
	}
	if r, ok := other.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("other phone during the flood: %v", r)
	}
	// The victim's packets came while its address was over the rate.
	if l.s.Counters()["guard_flood_flow_passed"] == 0 {
		t.Fatalf("the victim's flow never used its own budget: %v", l.s.Counters())
	}
	stopFlood()

	bans, err := l.fw.ListBans()
	if err != nil || len(bans) != 1 || bans[0].Prefix.String() != "10.8.0.2/32" {
		t.Fatalf("firewall bans %v (%v), want the attacker's own address alone", bans, err)
	}
	for _, b := range l.s.Blocks() {
		if innocent(b.Source) {
			t.Fatalf("edge ban %v covers an innocent address", b)
		}
	}
	trunk := l.dial(l.phones, "10.7.0.9")
	msg, _ := trunk.register(regOpts{})
	if _, ok := trunk.exchange(msg); !ok {
		t.Fatalf("trunk not answered after the flood: %v", l.s.Counters())
	}
	again := l.dial(l.phones, "10.9.0.3") // a new flow of the victim's address
	if r, ok := again.registerAuthRetrans(AlgMD5); !ok || r.StatusCode != 200 {
		t.Fatalf("victim after the flood: %v", r)
	}
}
