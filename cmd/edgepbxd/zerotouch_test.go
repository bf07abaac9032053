package main

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv4"

	"github.com/edgepbx/edgepbx/firmware/provision"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

type noSystem struct{}

func (noSystem) Health(control.Health) {}
func (noSystem) Reboot() error         { return nil }
func (noSystem) Poweroff() error       { return nil }

// TestZeroTouchWired: edgepbxd in a box namespace behind PID 1's real
// nftables policy and control socket. Enabling the phones' DHCP server in
// the phones settings starts it on ph0 and makes PID 1 open UDP 67 there,
// so a phone's DHCP client (nclient4, from 0.0.0.0) leases an address with
// option 66 = the bootstrap URL; disabling it stops the server and closes
// the port. A known phone's multicast PnP SUBSCRIBE to 224.0.1.75 on the
// SIP port is answered with the bootstrap URL by provisioning, and the SIP
// edge, bound to the same port, never sees it.
func TestZeroTouchWired(t *testing.T) {
	netnstest.Require(t, "nft")
	box, phone := netnstest.New(t), netnstest.New(t)
	bh, err := netlink.NewHandleAt(box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ph0"}, PeerName: "ph1", PeerNamespace: netlink.NsFd(int(phone))}); err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, bh, "ph0", "10.20.0.1/24")
	ph, err := netlink.NewHandleAt(phone)
	if err != nil {
		t.Fatal(err)
	}
	netnstest.LinkUp(t, ph, "ph1", "10.20.0.2/24")
	ph.Close()

	// PID 1's side: netfw's default policy and the control socket.
	fw, err := netfw.New(netfw.WithNetNS(int(box)), netfw.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: sock, Firewall: fw, DHCP: fw, System: noSystem{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)

	dir := t.TempDir()
	var d *daemon
	if err := netnstest.Run(box, func() error {
		var err error
		d, err = newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "0.0.0.0:5060", // the firewall opens 5060 (fresh namespace: free)
			provHTTPSAddr: "10.20.0.1:0", provHTTPAddr: "10.20.0.1:0", pnp: true}, slog.New(slog.DiscardHandler))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.ctrl, err = control.Dial(sock); err != nil {
		t.Fatal(err)
	}
	defer d.ctrl.Close()
	if d.pnp == nil {
		t.Fatal("--pnp: no PnP responder bound")
	}
	go d.serveSIP(ctx)
	zt := make(chan error, 1)
	go func() { zt <- netnstest.Run(box, func() error { return d.runZeroTouch(ctx) }) }()
	defer func() {
		cancel()
		if err := <-zt; err != nil {
			t.Error(err)
		}
	}()
	_, bootURL := d.prov.ProvisioningURLs()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s (dhcp %+v, open %v)", what, d.prov.DHCPStatus(), fw.DHCPServerInterfaces())
			}
		}
	}
	setDHCP := func(on bool) {
		t.Helper()
		st := d.prov.Settings()
		st.DHCP = provision.DHCPSettings{Enabled: on, Interface: "ph0", PoolStart: netip.MustParseAddr("10.20.0.100"),
			PoolEnd: netip.MustParseAddr("10.20.0.110"), LeaseMinutes: 30}
		if err := d.prov.SetSettings(st, "test", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}

	// 1. DHCP: off by default, started (and the port opened) by the settings.
	waitFor("dhcp off", func() bool { return d.prov.DHCPStatus().State == "off" })
	if got := fw.DHCPServerInterfaces(); len(got) != 0 {
		t.Fatalf("UDP 67 open while the server is off: %v", got)
	}
	setDHCP(true)
	waitFor("dhcp running", func() bool { return d.prov.DHCPStatus().State == "running" })
	if got := fw.DHCPServerInterfaces(); !slices.Equal(got, []string{"ph0"}) {
		t.Fatalf("open interfaces %v, want [ph0]", got)
	}
	var lease *nclient4.Lease
	if err := netnstest.Run(phone, func() error {
		c, err := nclient4.New("ph1", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer c.Close()
		lctx, lcancel := context.WithTimeout(ctx, 20*time.Second)
		defer lcancel()
		lease, err = c.Request(lctx)
		return err
	}); err != nil {
		t.Fatalf("phone DHCP: %v (dhcp %+v)", err, d.prov.DHCPStatus())
	}
	if ip := lease.ACK.YourIPAddr; !ip.Equal(net.IPv4(10, 20, 0, 100)) {
		t.Errorf("leased %v, want 10.20.0.100", ip)
	}
	if o66 := string(lease.ACK.Options.Get(dhcpv4.OptionTFTPServerName)); o66 != bootURL {
		t.Errorf("option 66 %q, want %q", o66, bootURL)
	}
	setDHCP(false)
	waitFor("dhcp off and UDP 67 closed", func() bool {
		return d.prov.DHCPStatus().State == "off" && len(fw.DHCPServerInterfaces()) == 0
	})

	// 2. PnP beside the SIP edge on the same UDP port.
	if err := d.sip.Extensions().Set("101", "initial-password-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.prov.Add(provision.AddRequest{MAC: "805ec0112233", Vendor: provision.Yealink, Extensions: []string{"101"}, Approve: true}, "test", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	sipPort := d.sip.Addr("udp").(*net.UDPAddr).Port
	var c *net.UDPConn
	if err := netnstest.Run(phone, func() error {
		var err error
		if c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 20, 0, 2)}); err != nil {
			return err
		}
		ifi, err := net.InterfaceByName("ph1")
		if err != nil {
			return err
		}
		return ipv4.NewPacketConn(c).SetMulticastInterface(ifi)
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	passed := func() uint64 { return d.sip.Counters()["filter_passed"] }
	before := passed()
	from := c.LocalAddr().String()
	sub := "SUBSCRIBE sip:805ec0112233@224.0.1.75 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + from + ";branch=z9hG4bK77;rport\r\n" +
		"From: <sip:805ec0112233@224.0.1.75>;tag=12\r\nTo: <sip:805ec0112233@224.0.1.75>\r\n" +
		"Call-ID: 99@" + from + "\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:" + from + ">\r\n" +
		"Event: ua-profile;profile-type=\"device\";vendor=\"Yealink\";model=\"SIP-T46S\";version=\"66.86.0.15\"\r\n" +
		"Expires: 0\r\nAccept: application/url\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n"
	if _, err := c.WriteToUDP([]byte(sub), &net.UDPAddr{IP: net.IPv4(224, 0, 1, 75), Port: sipPort}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var notify string
	for notify == "" {
		buf := make([]byte, 4096)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no NOTIFY: %v (pnp %+v)", err, d.prov.PnPStats())
		}
		if m := string(buf[:n]); strings.HasPrefix(m, "NOTIFY ") {
			notify = m
		} else if !strings.HasPrefix(m, "SIP/2.0 200 ") {
			t.Fatalf("unexpected answer %q", m)
		}
	}
	if !strings.HasSuffix(notify, "\r\n\r\n"+bootURL) {
		t.Errorf("NOTIFY body is not the bootstrap URL %q:\n%s", bootURL, notify)
	}
	// A unicast datagram to the edge after it: the edge counts only that one.
	if _, err := c.WriteToUDP([]byte("OPTIONS sip:10.20.0.1 SIP/2.0\r\n\r\n"), &net.UDPAddr{IP: net.IPv4(10, 20, 0, 1), Port: sipPort}); err != nil {
		t.Fatal(err)
	}
	waitFor("the edge to read the unicast datagram", func() bool { return passed() > before })
	if got := passed(); got != before+1 {
		t.Errorf("the SIP edge passed %d datagrams, want only the unicast one (the multicast SUBSCRIBE reached it)", got-before)
	}
}
