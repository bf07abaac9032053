package provision

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// ztLab is a "box" namespace with two links: ph0 (10.9.0.1/24, the phones
// zone) to the "phones" namespace (10.9.0.2, and 198.51.100.2 outside the
// zone on the same wire), and ot0 (10.7.0.1/24, another zone) to "other".
type ztLab struct {
	box, phones, other netns.NsHandle
}

func newZTLab(t *testing.T) *ztLab {
	netnstest.Require(t)
	l := &ztLab{box: netnstest.New(t), phones: netnstest.New(t), other: netnstest.New(t)}
	bh, err := netlink.NewHandleAt(l.box)
	if err != nil {
		t.Fatal(err)
	}
	defer bh.Close()
	netnstest.LinkUp(t, bh, "lo")
	for _, v := range []struct {
		name string
		peer netns.NsHandle
	}{{"ph0", l.phones}, {"ot0", l.other}} {
		if err := bh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: v.name}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(v.peer))}); err != nil {
			t.Fatal(err)
		}
	}
	netnstest.LinkUp(t, bh, "ph0", "10.9.0.1/24", "198.51.100.1/24")
	netnstest.LinkUp(t, bh, "ot0", "10.7.0.1/24")
	for _, p := range []struct {
		ns    netns.NsHandle
		addrs []string
	}{{l.phones, []string{"10.9.0.2/24", "198.51.100.2/24"}}, {l.other, nil}} {
		h, err := netlink.NewHandleAt(p.ns)
		if err != nil {
			t.Fatal(err)
		}
		netnstest.LinkUp(t, h, "lo")
		netnstest.LinkUp(t, h, "eth0", p.addrs...)
		h.Close()
	}
	return l
}

// inNS runs a command inside ns (through nsenter, so no test thread
// switches namespace).
func inNS(ctx context.Context, ns netns.NsHandle, name string, args ...string) *exec.Cmd {
	fd, _ := unix.Dup(int(ns))
	nsf := os.NewFile(uintptr(fd), "netns")
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/proc/self/fd/3", name}, args...)...)
	cmd.ExtraFiles = []*os.File{nsf}
	return cmd
}

func yealinkSubscribe(mac, from string, n int) []byte {
	return []byte("SUBSCRIBE sip:" + mac + "@224.0.1.75:5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + from + ";branch=z9hG4bK" + strings.Repeat("7", n+1) + ";rport\r\n" +
		"From: <sip:" + mac + "@224.0.1.75:5060>;tag=1" + strings.Repeat("2", n+1) + "\r\n" +
		"To: <sip:" + mac + "@224.0.1.75:5060>\r\n" +
		"Call-ID: " + strings.Repeat("9", n+1) + "@" + from + "\r\n" +
		"CSeq: 1 SUBSCRIBE\r\n" +
		"Contact: <sip:" + from + ">\r\n" +
		"Event: ua-profile;profile-type=\"device\";vendor=\"Yealink\";model=\"SIP-T46S\";version=\"66.86.0.15\"\r\n" +
		"Expires: 0\r\nAccept: application/url\r\n" +
		"User-Agent: Yealink SIP-T46S 66.86.0.15\r\nContent-Length: 0\r\n\r\n")
}

func snomSubscribe(mac, from string) []byte {
	return []byte("SUBSCRIBE sip:MAC%3a" + mac + "@224.0.1.75 SIP/2.0\r\n" +
		"v: SIP/2.0/UDP " + from + ";branch=z9hG4bKsnom1\r\n" +
		"f: <sip:" + strings.ToUpper(mac) + "@" + from + ">;tag=snom\r\n" +
		"t: <sip:MAC%3a" + mac + "@224.0.1.75>\r\n" +
		"i: snomcall@" + from + "\r\nCSeq: 1 SUBSCRIBE\r\n" +
		"o: ua-profile;profile-type=\"device\";vendor=\"snom\";model=\"snomD785\";version=\"10.1.169.16\"\r\n" +
		"Expires: 0\r\nl: 0\r\n\r\n")
}

// TestSIPPnP: multicast SUBSCRIBEs as a Yealink and a Snom send them. A
// known MAC (pending or approved) from inside the phones' zone gets 200
// and a NOTIFY with the bootstrap URL and nothing else; an unknown MAC
// gets silence and appears in the asking list; a known MAC from a source
// outside the zone gets silence; a revoked phone gets silence.
func TestSIPPnP(t *testing.T) {
	l := newZTLab(t)
	h := newHarness(t, func(d *Deps) { d.Host = "10.9.0.1" })
	h.add("805ec0aabbcc", Yealink, true, "101")
	h.add("000413aabbcc", Snom, false)
	h.add("805ec0dddddd", Yealink, true)
	if _, err := h.svc.Revoke("805ec0dddddd", "admin", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	zone := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	var p *PnP
	if err := netnstest.Run(l.box, func() error {
		var err error
		p, err = h.svc.ListenPnP(PnPConfig{Interfaces: []string{"ph0"}, Zone: func() []netip.Prefix { return zone }})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- p.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-served })

	// Phone sockets on port 5060 as the phones use, sending to the group.
	var inside, outside *net.UDPConn
	if err := netnstest.Run(l.phones, func() error {
		var err error
		if inside, err = mcastSender("10.9.0.2:5060"); err != nil {
			return err
		}
		outside, err = mcastSender("198.51.100.2:5060")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	defer outside.Close()
	group := &net.UDPAddr{IP: PnPGroup.AsSlice(), Port: 5060}
	send := func(c *net.UDPConn, b []byte) {
		t.Helper()
		if _, err := c.WriteToUDP(b, group); err != nil {
			t.Fatal(err)
		}
	}
	// answer reads the 200 and the NOTIFY for one Call-ID.
	answer := func(c *net.UDPConn, callID string) (ok, notify string) {
		t.Helper()
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for ok == "" || notify == "" {
			n, err := c.Read(buf)
			if err != nil {
				t.Fatalf("no answer for %s: %v (responder %+v)", callID, err, p.Stats())
			}
			m := string(buf[:n])
			if !strings.Contains(m, "Call-ID: "+callID+"\r\n") {
				t.Fatalf("answer for another request (one that must get none?):\n%s", m)
			}
			switch {
			case strings.HasPrefix(m, "SIP/2.0 200 OK\r\n"):
				ok = m
			case strings.HasPrefix(m, "NOTIFY "):
				notify = m
			default:
				t.Fatalf("unexpected message:\n%s", m)
			}
		}
		return ok, notify
	}
	_, boot := h.svc.ProvisioningURLs()

	// Unknown MAC, then the revoked phone, then a known one: answers are
	// sent in order, so the first answer seen must be the known phone's.
	send(inside, yealinkSubscribe("805ec0123456", "10.9.0.2:5060", 1))
	send(inside, yealinkSubscribe("805ec0dddddd", "10.9.0.2:5060", 2))
	// The known MAC from outside the zone: silence (its answer would go
	// to the outside socket, checked below).
	send(outside, yealinkSubscribe("805ec0aabbcc", "198.51.100.2:5060", 3))
	send(inside, yealinkSubscribe("805ec0aabbcc", "10.9.0.2:5060", 4))
	ok, notify := answer(inside, strings.Repeat("9", 5)+"@10.9.0.2:5060")
	mustContain(t, ok, "Via: SIP/2.0/UDP 10.9.0.2:5060;branch=z9hG4bK77777;rport", "CSeq: 1 SUBSCRIBE", "To: <sip:805ec0aabbcc@224.0.1.75:5060>;tag=")
	mustContain(t, notify, "NOTIFY sip:805ec0aabbcc@10.9.0.2:5060 SIP/2.0", "Via: SIP/2.0/UDP 10.9.0.1:", "Event: ua-profile;profile-type=\"device\"",
		"Content-Type: application/url", "\r\n\r\n"+boot)
	if body := notify[strings.Index(notify, "\r\n\r\n")+4:]; body != boot {
		t.Fatalf("NOTIFY body %q, want only the bootstrap URL %q", body, boot)
	}
	sec := h.secrets("805ec0aabbcc")
	mustNotContain(t, ok+notify, sec.Credential, sec.Token, sec.SIP["101"], "https://")

	// Snom (compact headers, pending phone) is answered too.
	send(inside, snomSubscribe("000413aabbcc", "10.9.0.2:5060"))
	_, notify = answer(inside, "snomcall@10.9.0.2:5060")
	mustContain(t, notify, "NOTIFY sip:000413aabbcc@10.9.0.2:5060", boot)

	outside.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, err := outside.Read(make([]byte, 4096)); err == nil {
		t.Fatalf("a source outside the phones zone got an answer (%d bytes)", n)
	}
	st := p.Stats()
	if st.Answered != 2 || st.Unknown != 2 || st.OutsideZone != 1 || st.Bad != 0 {
		t.Fatalf("stats %+v, want 2 answered, 2 unknown (new, revoked), 1 outside", st)
	}
	asking := h.svc.Asking()
	if len(asking) != 1 || asking[0].MAC != "805ec0123456" || asking[0].Vendor != Yealink || asking[0].Model != "SIP-T46S" {
		t.Fatalf("asking list %+v, want the unknown Yealink", asking)
	}

	// Garbage and a flood from one source: counted and dropped, the
	// responder stays up and still answers another phone.
	send(inside, []byte("SUBSCRIBE sip:x SIP/2.0\r\n\r\n"))
	for i := range 20 {
		send(inside, yealinkSubscribe("805ec0aabbcc", "10.9.0.2:5060", 10+i))
	}
	var other *net.UDPConn
	if err := netnstest.Run(l.phones, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		link, _ := h.LinkByName("eth0")
		a, _ := netlink.ParseAddr("10.9.0.3/24")
		a.Flags = unix.IFA_F_NODAD
		if err := h.AddrAdd(link, a); err != nil {
			return err
		}
		other, err = mcastSender("10.9.0.3:5060")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	send(other, yealinkSubscribe("805ec0aabbcc", "10.9.0.3:5060", 40))
	answer(other, strings.Repeat("9", 41)+"@10.9.0.3:5060")
	if st := p.Stats(); st.Bad != 1 || st.Limited == 0 {
		t.Fatalf("stats %+v: want the garbage counted bad and the flood limited", st)
	}
}

func mcastSender(laddr string) (*net.UDPConn, error) {
	a, err := net.ResolveUDPAddr("udp4", laddr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp4", a)
	if err != nil {
		return nil, err
	}
	ifi, err := net.InterfaceByName("eth0")
	if err == nil {
		err = unixSetMulticastIf(c, ifi.Index)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func unixSetMulticastIf(c *net.UDPConn, index int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_MULTICAST_IF, &unix.IPMreqn{Ifindex: int32(index)})
	})
	return errors.Join(err, serr)
}

// udhcpc runs busybox's DHCP client once on eth0 of ns and returns the
// variables its script saw on "bound" (nil: no lease).
func udhcpc(t *testing.T, ns netns.NsHandle) map[string]string {
	t.Helper()
	dir := t.TempDir()
	script := filepath.Join(dir, "script")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n[ \"$1\" = bound ] && env > "+dir+"/bound\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := inNS(ctx, ns, "busybox", "udhcpc", "-f", "-q", "-n", "-i", "eth0", "-t", "3", "-T", "1", "-A", "1", "-O", "tftp", "-s", script).CombinedOutput()
	b, rerr := os.ReadFile(filepath.Join(dir, "bound"))
	if rerr != nil {
		t.Logf("udhcpc: %v: %s", err, out)
		return nil
	}
	vars := map[string]string{}
	for _, ln := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(ln, "="); ok {
			vars[k] = v
		}
	}
	return vars
}

// TestDHCPServer: busybox udhcpc on the phones link gets an address from
// the pool, the router and DNS the admin set and option 66 (the bootstrap
// URL); the lease is stored; a client on another link gets nothing; and
// with a second DHCP server (busybox udhcpd) on the link ours refuses to
// start and says so.
func TestDHCPServer(t *testing.T) {
	netnstest.Require(t)
	netnstest.NeedTool(t, "busybox", "busybox")
	l := newZTLab(t)
	h := newHarness(t, func(d *Deps) { d.Host = "10.9.0.1"; d.Clock = time.Now })
	set := DHCPSettings{Enabled: true, Interface: "ph0", PoolStart: netip.MustParseAddr("10.9.0.100"), PoolEnd: netip.MustParseAddr("10.9.0.109"),
		Router: netip.MustParseAddr("10.9.0.254"), DNS: []netip.Addr{netip.MustParseAddr("10.9.0.53")}, LeaseMinutes: 30}
	if err := set.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- netnstest.Run(l.box, func() error {
			return h.svc.serveDHCP(ctx, set, DHCPConfig{Probe: 500 * time.Millisecond}, nil)
		})
	}()
	waitLong(t, func() bool { return h.svc.DHCPStatus().State == "running" })

	vars := udhcpc(t, l.phones)
	if vars == nil {
		t.Fatal("the phone got no lease")
	}
	_, boot := h.svc.ProvisioningURLs()
	want := map[string]string{"ip": "10.9.0.100", "subnet": "255.255.255.0", "router": "10.9.0.254", "dns": "10.9.0.53", "serverid": "10.9.0.1", "lease": "1800"}
	for k, v := range want {
		if strings.TrimSpace(vars[k]) != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, vars[k], v, vars)
		}
	}
	for _, risky := range []string{"opt43", "staticroutes", "msstaticroutes", "bootfile", "siaddr", "boot_file"} {
		if v := vars[risky]; v != "" && v != "0.0.0.0" {
			t.Errorf("reply carries %s=%q", risky, v)
		}
	}
	st := h.svc.DHCPStatus()
	if len(st.Leases) != 1 || st.Leases[0].IP.String() != "10.9.0.100" {
		t.Fatalf("status %+v: want one lease for 10.9.0.100", st)
	}
	if f := h.svc.Fetches(); len(f) == 0 || f[len(f)-1].File != "dhcp" || f[len(f)-1].Source != "10.9.0.100" {
		t.Fatalf("fetch log %+v: want the lease logged", f)
	}
	// busybox shows option 66 only when it is a bare host name ("bad" for
	// a URL): read the raw options with the library's client, and fill
	// the rest of the pool with it (bounded table: the 11th phone gets
	// nothing).
	for i := range 10 {
		hw := net.HardwareAddr{0x02, 0x66, 0, 0, 0, byte(i + 1)}
		var lease *nclient4.Lease
		err := netnstest.Run(l.phones, func() error {
			c, err := nclient4.New("eth0", nclient4.WithHWAddr(hw), nclient4.WithTimeout(time.Second), nclient4.WithRetry(2))
			if err != nil {
				return err
			}
			defer c.Close()
			lease, err = c.Request(context.Background())
			return err
		})
		if i == 9 {
			if err == nil {
				t.Fatalf("a phone beyond the 10-address pool got %s", lease.ACK.YourIPAddr)
			}
			break
		}
		if err != nil {
			t.Fatalf("phone %d: %v", i, err)
		}
		ack := lease.ACK
		if got := string(ack.Options.Get(dhcpv4.OptionTFTPServerName)); got != boot {
			t.Fatalf("option 66 = %q, want %q", got, boot)
		}
		var codes []int
		for c := range ack.Options {
			codes = append(codes, int(c))
		}
		slices.Sort(codes)
		// 1 mask, 3 router, 6 DNS, 51 lease, 53 type, 54 server id, 66.
		if want := []int{1, 3, 6, 51, 53, 54, 66}; !slices.Equal(codes, want) {
			t.Fatalf("ACK options %v, want exactly %v", codes, want)
		}
		if !ack.ServerIPAddr.IsUnspecified() || ack.BootFileName != "" || ack.ServerHostName != "" {
			t.Fatalf("ACK carries boot fields: siaddr %s file %q sname %q", ack.ServerIPAddr, ack.BootFileName, ack.ServerHostName)
		}
	}
	if st := h.svc.DHCPStatus(); len(st.Leases) != 10 || st.Exhausted == 0 {
		t.Fatalf("status %+v: want 10 leases and the 11th phone counted as exhausted", st)
	}
	var stored Lease
	if err := h.db.View(func(tx *store.Tx) error {
		ok, err := tx.Get(bucketLeases, "10.9.0.100", &stored)
		if err == nil && !ok {
			err = errors.New("lease not stored")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if stored.MAC == "" || stored.Expires.Before(time.Now().Add(29*time.Minute)) {
		t.Fatalf("stored lease %+v", stored)
	}

	// A client on the other zone's link: nothing.
	if vars := udhcpc(t, l.other); vars != nil {
		t.Fatalf("a client on another link got a lease: %v", vars)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	// A second server on the link: ours refuses to start.
	dir := t.TempDir()
	conf := "start 10.9.0.150\nend 10.9.0.160\ninterface eth0\nlease_file " + dir + "/leases\npidfile " + dir + "/pid\n"
	os.WriteFile(filepath.Join(dir, "udhcpd.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "leases"), nil, 0o644)
	dctx, dcancel := context.WithCancel(context.Background())
	defer dcancel()
	other := inNS(dctx, l.phones, "busybox", "udhcpd", "-f", filepath.Join(dir, "udhcpd.conf"))
	var stderr bytes.Buffer
	other.Stderr = &stderr
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { dcancel(); other.Wait() }()
	// udhcpd is up once it answers a probe.
	waitLong(t, func() bool {
		var got netip.Addr
		_ = netnstest.Run(l.box, func() error {
			var err error
			got, err = ProbeDHCP(context.Background(), "ph0", nil, 67, 68, 300*time.Millisecond)
			return err
		})
		return got.IsValid()
	})
	// Bounded: a server that wrongly starts serves until the deadline.
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	err := netnstest.Run(l.box, func() error {
		return h.svc.serveDHCP(rctx, set, DHCPConfig{}, nil)
	})
	if !errors.Is(err, ErrOtherDHCPServer) || !strings.Contains(err.Error(), "10.9.0.2") {
		t.Fatalf("with udhcpd on the link: %v, want ErrOtherDHCPServer naming 10.9.0.2 (udhcpd: %s)", err, stderr.String())
	}
}

// waitLong waits for cond with a bound sized for a loaded machine (the
// probe alone listens 0.5 s).
func waitLong(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
