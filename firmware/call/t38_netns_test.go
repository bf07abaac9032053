package call

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The fax lab: the test process re-executed in a network namespace of its
// own is the box (B2BUA, relay and netfw's real nftables ruleset, RTP range
// reachable only through pinholes); an ATA (sipp) and a trunk (sipp) sit in
// two more namespaces behind veth pairs. UDPTL from both sipps crosses the
// box's input hook, so only real pinholes let it reach the relay.
var (
	faxBox   = netip.MustParseAddr("10.38.1.1") // SIP and media address
	faxATA   = netip.MustParseAddr("10.38.1.2")
	faxTrunk = netip.MustParseAddr("10.38.2.2")
)

const faxChild = "EDGEPBX_FAX_LAB"

// udptlPackets is how many UDPTL datagrams each sipp plays.
const udptlPackets = 50

type faxLab struct {
	t        *testing.T
	ata, trk netns.NsHandle
	fw       *netfw.Firewall
	h        *harness
}

// inFaxLab re-runs the test named run in a fresh network namespace and
// reports whether this is that child (which then does the work).
func inFaxLab(t *testing.T, run string) bool {
	if os.Getenv(faxChild) != "" {
		return true
	}
	netnstest.Require(t, "unshare", "nsenter", "nft")
	siptest.NeedSipp(t)
	cmd := exec.Command("unshare", "--net", os.Args[0], "-test.run=^"+run+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), faxChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+run)) {
		t.Fatalf("lab in its own namespace: %v\n%s", err, out)
	}
	return false
}

func newFaxLab(t *testing.T) *faxLab {
	t.Helper()
	l := &faxLab{t: t}
	here, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	netnstest.LinkUp(t, here, "lo")
	var nss []netns.NsHandle
	for _, ln := range []struct{ boxIf, box, host, gw string }{
		{"ata0", "10.38.1.1/24", "10.38.1.2/24", "10.38.1.1"},
		{"trk0", "10.38.2.1/24", "10.38.2.2/24", "10.38.2.1"},
	} {
		ns := netnstest.New(t)
		nss = append(nss, ns)
		if err := here.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ln.boxIf}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
			t.Fatal(err)
		}
		netnstest.LinkUp(t, here, ln.boxIf, ln.box)
		hh, err := netlink.NewHandleAt(ns)
		if err != nil {
			t.Fatal(err)
		}
		netnstest.LinkUp(t, hh, "lo")
		netnstest.LinkUp(t, hh, "eth0", ln.host)
		if err := hh.RouteAdd(&netlink.Route{Gw: net.ParseIP(ln.gw)}); err != nil {
			t.Fatal(err)
		}
		hh.Close()
	}
	l.ata, l.trk = nss[0], nss[1]
	quiet := slog.New(slog.DiscardHandler)
	if l.fw, err = netfw.New(netfw.WithLogger(quiet)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.fw.Close() })
	pol := netfw.DefaultPolicy() // SIP from private networks, RTP only through pinholes
	if err := l.fw.Apply(pol); err != nil {
		t.Fatal(err)
	}
	ports, err := media.NewPorts(pol.RTP.First, pol.RTP.First+99)
	if err != nil {
		t.Fatal(err)
	}
	l.h = startHarnessEnv(t, harnessEnv{
		listen: func() (net.PacketConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(faxBox, 5060)))
		},
		mediaAddr: faxBox,
	}, func(c *media.Config) { c.Ports, c.Pinholes = ports, fwPinholes{l.fw} })
	l.h.dir.set("102", faxTrunk.String()+":5060")
	return l
}

// fwPinholes gives the relay the real firewall.
type fwPinholes struct{ fw *netfw.Firewall }

func (p fwPinholes) OpenPinhole(_ context.Context, ph netfw.Pinhole) error {
	return p.fw.OpenPinhole(ph)
}

func (p fwPinholes) ClosePinhole(_ context.Context, ph netfw.Pinhole) error {
	return p.fw.ClosePinhole(ph)
}

var reFaxPin = regexp.MustCompile(`(\d+\.\d+\.\d+\.\d+) \. (\d+)`)

// pins lists the kernel's IPv4 pinhole set as sorted "addr:port".
func (l *faxLab) pins() []string {
	l.t.Helper()
	out, err := exec.Command("nft", "list", "set", "inet", "edgepbx", "pin_4").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("set pin_4")) {
		l.t.Fatalf("nft list set pin_4: %v\n%s", err, out)
	}
	var got []string
	for _, m := range reFaxPin.FindAllStringSubmatch(string(out), -1) {
		got = append(got, m[1]+":"+m[2])
	}
	slices.Sort(got)
	return got
}

// waitPins waits until the kernel's pinhole set is want (the deadline only
// stops a broken test from hanging).
func (l *faxLab) waitPins(want []string) {
	l.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := l.pins()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("pin_4 = %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFaxPins waits until the kernel holds exactly one pinhole to the ATA
// and one to the trunk, both on even ports (the T.38 phase: RTP and RTCP
// holes come in pairs), and returns the ATA's (the deadline only stops a
// broken test from hanging).
func (l *faxLab) waitFaxPins() uint16 {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := l.pins()
		var ata, trunk []uint16
		for _, p := range got {
			ap, err := netip.ParseAddrPort(p)
			if err != nil {
				l.t.Fatal(err)
			}
			switch ap.Addr() {
			case faxATA:
				ata = append(ata, ap.Port())
			case faxTrunk:
				trunk = append(trunk, ap.Port())
			}
		}
		if len(got) == 2 && len(ata) == 1 && len(trunk) == 1 && ata[0]%2 == 0 && trunk[0]%2 == 0 {
			return ata[0]
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("pin_4 = %v, want one hole each to %s and %s", got, faxATA, faxTrunk)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// counter returns the packets the kernel counted on the named rule.
func (l *faxLab) counter(name string) uint64 {
	l.t.Helper()
	c, err := l.fw.Counters()
	if err != nil {
		l.t.Fatal(err)
	}
	for _, r := range c.Rules {
		if r.Name == name {
			return r.Packets
		}
	}
	l.t.Fatalf("no rule %s", name)
	return 0
}

// sipp runs sipp inside ns (through nsenter) with the scenario from
// testdata and udptl.pcap in its working directory; the channel gets its
// exit (nil: every call passed its scenario).
func (l *faxLab) sipp(ns netns.NsHandle, addr netip.Addr, scenario string, args ...string) <-chan error {
	t := l.t
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "udptl.pcap"), udptlPcap(udptlPackets), 0o644); err != nil {
		t.Fatal(err)
	}
	sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", scenario))
	fd, err := unix.Dup(int(ns))
	if err != nil {
		t.Fatal(err)
	}
	nsf := os.NewFile(uintptr(fd), "netns")
	defer nsf.Close()
	all := append([]string{"--net=/proc/self/fd/3", siptest.NeedSipp(t), "-sf", sc, "-i", addr.String(), "-p", "5060",
		"-mi", addr.String(), "-mp", "6000", "-m", "1", "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err"}, args...)
	cmd := exec.Command("nsenter", all...)
	cmd.ExtraFiles = []*os.File{nsf}
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		err := cmd.Wait()
		if err != nil {
			logs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
			var el []byte
			if len(logs) > 0 {
				el, _ = os.ReadFile(logs[0])
			}
			err = fmt.Errorf("sipp %s: %w\n%s\nerrors:\n%s", scenario, err, tail(out.Bytes()), tail(el))
		}
		done <- err
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	return done
}

// waitSipp waits for a sipp started by sipp to pass.
func waitSipp(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("sipp did not finish")
	}
}

// waitListening waits until something in ns listens on UDP port (sipp
// must listen before the box sends it the INVITE).
func waitListening(t *testing.T, ns netns.NsHandle, port int, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var bound bool
		if err := netnstest.Run(ns, func() error {
			// thread-self: /proc/net follows the process's main thread.
			b, err := os.ReadFile("/proc/thread-self/net/udp")
			bound = bytes.Contains(b, fmt.Appendf(nil, ":%04X ", port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if bound {
			return
		}
		select {
		case err := <-done:
			t.Fatalf("sipp exited before listening: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on UDP %d", port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// udptlPcap is a capture of n UDPTL datagrams 20 ms apart (Ethernet,
// IPv4, UDP; sipp replays the UDP payloads with their timing). Each is a
// T.38 IFP: sequence number, primary IFP (length, a V.21 HDLC data
// field), and redundancy with no secondary packets.
func udptlPcap(n int) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := make([]byte, 24)
	le.PutUint32(hdr[0:], 0xa1b2c3d4)
	le.PutUint16(hdr[4:], 2)
	le.PutUint16(hdr[6:], 4)
	le.PutUint32(hdr[16:], 65535)
	le.PutUint32(hdr[20:], 1) // Ethernet
	b.Write(hdr)
	for i := range n {
		ifp := []byte{0xc0, 0x01, 0x80, 0x00, 0x00, byte(i), 0x7e, 0x7e}
		payload := binary.BigEndian.AppendUint16(nil, uint16(i))
		payload = append(payload, byte(len(ifp)))
		payload = append(payload, ifp...)
		payload = append(payload, 0x00) // redundancy: no secondary IFPs
		udp := make([]byte, 8, 8+len(payload))
		binary.BigEndian.PutUint16(udp[0:], 6004)
		binary.BigEndian.PutUint16(udp[2:], 6004)
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
		udp = append(udp, payload...)
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(udp)))
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		for sum>>16 != 0 {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		frame := append([]byte{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00}, ip...)
		frame = append(frame, udp...)
		rec := make([]byte, 16)
		us := i * 20000
		le.PutUint32(rec[0:], uint32(1+us/1000000))
		le.PutUint32(rec[4:], uint32(us%1000000))
		le.PutUint32(rec[8:], uint32(len(frame)))
		le.PutUint32(rec[12:], uint32(len(frame)))
		b.Write(rec)
		b.Write(frame)
	}
	return b.Bytes()
}

// TestSippT38ThroughPinholes: an ATA (sipp) calls a trunk (sipp) through
// the box, then switches to T.38 with a re-INVITE. The trunk gets the
// offer rewritten (box's address, its own port, vendor attribute dropped,
// datagram size clamped) and accepts; the kernel then holds exactly one
// pinhole per leg (UDPTL has no RTCP), both sipps' UDPTL crosses the real
// pinholes and the relay in full, and after the BYE the set is empty and
// UDPTL to the old port is dropped by the kernel.
func TestSippT38ThroughPinholes(t *testing.T) {
	if !inFaxLab(t, "TestSippT38ThroughPinholes") {
		return
	}
	l := newFaxLab(t)
	trunk := l.sipp(l.trk, faxTrunk, "uas_t38.xml")
	waitListening(t, l.trk, 5060, trunk)
	passedBefore := l.counter("rtp-pinhole_4")
	ata := l.sipp(l.ata, faxATA, "uac_t38.xml", "-s", "102", netip.AddrPortFrom(faxBox, 5060).String())

	// Audio first (RTP and RTCP each), then T.38: one hole per leg, on
	// its even (RTP) port.
	pa := l.waitFaxPins()
	waitSipp(t, ata)
	waitSipp(t, trunk)
	e := waitEnded(t, l.h)
	if e.rec.Result != cdr.Answered || e.rec.Codec != "T.38" {
		t.Fatalf("CDR %+v", e.rec)
	}
	a, b := e.st.Legs[media.A], e.st.Legs[media.B]
	if a.Received != udptlPackets || b.Received != udptlPackets || a.Sent != udptlPackets || b.Sent != udptlPackets {
		t.Fatalf("UDPTL through the relay: A %+v B %+v, want %d each way", a, b, udptlPackets)
	}
	if a.DroppedSource+b.DroppedSource+a.DroppedMalformed+b.DroppedMalformed+a.DroppedNoPeer+b.DroppedNoPeer != 0 {
		t.Fatalf("relay dropped packets: A %+v B %+v", a, b)
	}
	if got := l.counter("rtp-pinhole_4") - passedBefore; got != 2*udptlPackets {
		t.Fatalf("kernel let %d packets through pinholes, want the %d UDPTL datagrams", got, 2*udptlPackets)
	}
	l.waitPins(nil)
	// The ATA's UDPTL after the call: dropped in the kernel.
	closedBefore := l.counter("rtp-closed")
	if err := netnstest.Run(l.ata, func() error {
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(faxBox, pa)))
		if err != nil {
			return err
		}
		defer conn.Close()
		for range 3 {
			if _, err := conn.Write([]byte{0, 1, 3, 0xc0, 1, 0x80, 0}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for l.counter("rtp-closed")-closedBefore < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("kernel dropped %d of 3 late UDPTL datagrams", l.counter("rtp-closed")-closedBefore)
		}
		time.Sleep(10 * time.Millisecond)
	}
	l.h.noStateLeft(t, false)
}

// TestSippT38RefusedStaysOnAudio: the trunk answers the T.38 re-INVITE
// with 488; the ATA gets 488, nothing on the media changes (RTP and RTCP
// pinholes stay), and the G.711 the ATA then plays is echoed back by the
// trunk through the relay: the fallback fax machines use.
func TestSippT38RefusedStaysOnAudio(t *testing.T) {
	if !inFaxLab(t, "TestSippT38RefusedStaysOnAudio") {
		return
	}
	l := newFaxLab(t)
	trunk := l.sipp(l.trk, faxTrunk, "uas_t38_refuse.xml", "-rtp_echo")
	waitListening(t, l.trk, 5060, trunk)
	ata := l.sipp(l.ata, faxATA, "uac_t38_refused.xml", "-s", "102", netip.AddrPortFrom(faxBox, 5060).String())
	waitSipp(t, ata)
	waitSipp(t, trunk)
	e := waitEnded(t, l.h)
	if e.rec.Result != cdr.Answered || !strings.HasPrefix(e.rec.Codec, "PCMA") {
		t.Fatalf("CDR %+v", e.rec)
	}
	a, b := e.st.Legs[media.A], e.st.Legs[media.B]
	if a.Received < 50 || b.Received < 50 || a.Sent < 50 || b.Sent < 50 {
		t.Fatalf("G.711 did not flow both ways after the refusal: A %+v B %+v", a, b)
	}
	l.waitPins(nil)
	l.h.noStateLeft(t, false)
}
