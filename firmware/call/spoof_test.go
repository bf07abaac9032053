package call

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The spoofing lab runs in a network namespace of its own (the whole test
// process, re-executed under unshare, so that every socket the B2BUA, its
// sipgo client and the relay open is in it): the box, with the real
// trunk's network on one veth and an attacker's on another.
var (
	spoofBox      = netip.MustParseAddr("10.9.1.1") // SIP and media address of the box
	spoofTrunk    = netip.MustParseAddr("10.9.1.2") // the IP-authenticated trunk's peer
	spoofAttacker = netip.MustParseAddr("10.9.2.2")
)

const spoofChild = "EDGEPBX_SPOOF_LAB"

// TestSpoofedTrunkInvite: an attacker forges a UDP INVITE with the trunk's
// source address and its own address in the SDP. The DID's phone rings
// and answers (over UDP the box cannot tell before its 200 is
// acknowledged), but the callee's RTP reaches no address of the attacker:
// the caller's leg carries nothing until an ACK echoes the box's To tag,
// which went only to the real trunk. A genuine call from the trunk, which
// ACKs, gets the callee's media.
func TestSpoofedTrunkInvite(t *testing.T) {
	if os.Getenv(spoofChild) == "" {
		netnstest.Require(t, "unshare")
		cmd := exec.Command("unshare", "--net", os.Args[0], "-test.run=^TestSpoofedTrunkInvite$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), spoofChild+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestSpoofedTrunkInvite")) {
			t.Fatalf("lab in its own namespace: %v\n%s", err, out)
		}
		return
	}
	trunkNS, attackerNS := spoofLab(t)

	const did, n = "+4930123456", 50
	h := startHarnessEnv(t, harnessEnv{
		listen: func() (net.PacketConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofBox, 5060)))
		},
		mediaAddr: spoofBox,
		// The edge's rule: a new INVITE from a trunk peer's address is the
		// trunk's (firmware/sipedge Policy.Trunk).
		identify: func(req *sip.Request) Identity {
			if src, err := netip.ParseAddrPort(req.Source()); err == nil && src.Addr() == spoofTrunk {
				return Identity{Trunk: "itsp"}
			}
			return Identity{Extension: req.From().Address.User}
		},
	}, nil, func(_ *Config, p *dialplan.Plan) {
		p.DIDs = []dialplan.DID{{Number: did, Trunk: "itsp", Extension: "102"}}
	})
	callee := newPhoneAt(t, "102", spoofBox.String())
	h.dir.set("102", callee.addr)
	calleeRTP, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofBox, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer calleeRTP.Close()
	answered := make(chan *sipgo.DialogServerSession, 2)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		body := strings.ReplaceAll(sdpBody(calleeRTP.LocalAddr().(*net.UDPAddr).Port, "sendrecv"), "127.0.0.1", spoofBox.String())
		_ = d.Respond(200, "OK", []byte(body), sip.NewHeader("Content-Type", "application/sdp"))
		answered <- d
	})

	// The real trunk: it receives what the box sends to its address.
	var trunkSIP, trunkRTP, atkRTP *net.UDPConn
	var raw int
	if err := netnstest.Run(trunkNS, func() (err error) {
		if trunkSIP, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofTrunk, 5060))); err != nil {
			return err
		}
		trunkRTP, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofTrunk, 41000)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer trunkSIP.Close()
	defer trunkRTP.Close()
	// The attacker: a raw socket to forge sources, and where it wants the
	// callee's media.
	if err := netnstest.Run(attackerNS, func() (err error) {
		if atkRTP, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofAttacker, 40000))); err != nil {
			return err
		}
		raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer atkRTP.Close()
	defer unix.Close(raw)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 1. The forged INVITE: source the trunk's, SDP the attacker's.
	inv := spoofInvite("spoof-1", did, spoofAttacker, 40000)
	if err := sendForged(raw, netip.AddrPortFrom(spoofTrunk, 5060), netip.AddrPortFrom(spoofBox, 5060), inv); err != nil {
		t.Fatal(err)
	}
	d := <-answered // the phone rang and answered
	// The box's 200 went to the real trunk (which never sent the INVITE
	// and ignores it), never to the attacker.
	readSIP(t, trunkSIP, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == 200 && r.CallID().Value() == "spoof-1"
	})
	c := onlyCall(t, h)
	if !c.m.Withheld(media.A) {
		t.Fatal("the forged caller's leg carries media before it proved its source")
	}
	// 2. The callee talks; the relay takes every packet and sends none
	// toward the caller.
	dst := calleeMediaDest(t, callee)
	for i := range n {
		if _, err := calleeRTP.WriteToUDPAddrPort(rtpPacket(uint16(i+1)), dst); err != nil {
			t.Fatal(err)
		}
	}
	st := waitReceived(t, c, n)
	if b := st.Legs[media.B]; b.DroppedNoPeer != n || st.Legs[media.A].Sent != 0 {
		t.Fatalf("callee's RTP: B received %d, dropped for no peer %d; A sent %d", b.Received, b.DroppedNoPeer, st.Legs[media.A].Sent)
	}
	h.pins.mu.Lock()
	leaked := h.pins.remotes[spoofAttacker]
	h.pins.mu.Unlock()
	if leaked {
		t.Fatal("a pinhole was opened to the attacker's address")
	}
	// The attacker's own forged ACK knows the INVITE's branch but not the
	// box's To tag (the 200 went to the trunk): it proves nothing.
	forgedAck := spoofAck("spoof-1", did, "z9hG4bK-spoof-1", "guessed")
	if err := sendForged(raw, netip.AddrPortFrom(spoofTrunk, 5060), netip.AddrPortFrom(spoofBox, 5060), forgedAck); err != nil {
		t.Fatal(err)
	}
	sameBranch := spoofAck("spoof-1", did, "z9hG4bK-spoof-1", "")
	if err := sendForged(raw, netip.AddrPortFrom(spoofTrunk, 5060), netip.AddrPortFrom(spoofBox, 5060), sameBranch); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := calleeRTP.WriteToUDPAddrPort(rtpPacket(uint16(n+i+1)), dst); err != nil {
			t.Fatal(err)
		}
	}
	st = waitReceived(t, c, 2*n)
	if b := st.Legs[media.B]; b.DroppedNoPeer != 2*n || st.Legs[media.A].Sent != 0 || !c.m.Withheld(media.A) {
		t.Fatalf("after forged ACKs: B dropped %d of %d, A sent %d", b.DroppedNoPeer, b.Received, st.Legs[media.A].Sent)
	}
	// Nothing is queued for the attacker either (the relay dropped every
	// packet before sending; this read only confirms it).
	_ = atkRTP.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, from, err := atkRTP.ReadFromUDPAddrPort(make([]byte, 2048)); err == nil {
		t.Fatalf("attacker received media from %v", from)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if rec := waitEnded(t, h).rec; rec.Result != cdr.Answered || rec.Cause != "callee BYE" || rec.Trunk != "itsp" {
		t.Fatalf("spoofed call CDR %+v", rec)
	}

	// 3. The genuine trunk: same INVITE from its own address, ACKed with
	// the box's To tag from the 200 it received: media flows to it.
	inv = spoofInvite("real-1", did, spoofTrunk, 41000)
	if _, err := trunkSIP.WriteToUDPAddrPort(inv, netip.AddrPortFrom(spoofBox, 5060)); err != nil {
		t.Fatal(err)
	}
	d = <-answered
	res := readSIP(t, trunkSIP, func(m sip.Message) bool {
		r, ok := m.(*sip.Response)
		return ok && r.StatusCode == 200 && r.CallID().Value() == "real-1"
	}).(*sip.Response)
	tag, _ := res.To().Params.Get("tag")
	if _, err := trunkSIP.WriteToUDPAddrPort(spoofAck("real-1", did, "z9hG4bK-ack-real-1", tag), netip.AddrPortFrom(spoofBox, 5060)); err != nil {
		t.Fatal(err)
	}
	c = onlyCall(t, h)
	for c.m.Withheld(media.A) {
		time.Sleep(5 * time.Millisecond) // the ACK is on its way
	}
	dst = calleeMediaDest(t, callee)
	if _, err := calleeRTP.WriteToUDPAddrPort(rtpPacket(1), dst); err != nil {
		t.Fatal(err)
	}
	_ = trunkRTP.SetReadDeadline(time.Now().Add(10 * time.Second)) // only stops a broken test from hanging
	if _, from, err := trunkRTP.ReadFromUDPAddrPort(make([]byte, 2048)); err != nil || from.Addr() != spoofBox {
		t.Fatalf("genuine trunk got no media: %v %v", from, err)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, h)
	h.noStateLeft(t, true)

	// 4. A forged call nobody confirms, on a second B2BUA that waits 1 s
	// for ACKs: it hangs up and records the security event.
	events := &eventLog{}
	h2 := startHarnessEnv(t, harnessEnv{
		listen: func() (net.PacketConn, error) {
			return net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(spoofBox, 5062)))
		},
		mediaAddr: spoofBox,
		identify: func(req *sip.Request) Identity {
			return Identity{Trunk: "itsp"} // every source here is the trunk's
		},
	}, nil, func(c *Config, p *dialplan.Plan) {
		p.DIDs = []dialplan.DID{{Number: did, Trunk: "itsp", Extension: "102"}}
		c.Events, c.ackWait = events, time.Second
	})
	h2.dir.set("102", callee.addr)
	if err := sendForged(raw, netip.AddrPortFrom(spoofTrunk, 5060), netip.AddrPortFrom(spoofBox, 5062), spoofInvite("spoof-2", did, spoofAttacker, 40000)); err != nil {
		t.Fatal(err)
	}
	<-answered
	if rec := waitEnded(t, h2).rec; rec.Cause != "no ACK from caller" || rec.Trunk != "itsp" {
		t.Fatalf("unconfirmed call CDR %+v", rec)
	}
	// Recorded before the call ended.
	events.mu.Lock()
	evs := append([]logs.Event(nil), events.ev...)
	events.mu.Unlock()
	if len(evs) != 1 || evs[0].Kind != KindTrunkUnproven || evs[0].Source != netip.AddrPortFrom(spoofTrunk, 5060).String() || evs[0].User != "itsp" {
		t.Fatalf("security events %+v", evs)
	}
	h2.noStateLeft(t, true)
	h2.pins.mu.Lock()
	leaked = h2.pins.remotes[spoofAttacker]
	h2.pins.mu.Unlock()
	if leaked {
		t.Fatal("a pinhole was opened to the attacker's address")
	}
}

// spoofLab builds the topology in the test's own (unshared) namespace.
func spoofLab(t *testing.T) (trunkNS, attackerNS netns.NsHandle) {
	t.Helper()
	here, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer here.Close()
	netnstest.LinkUp(t, here, "lo")
	links := []struct{ boxIf, box, host, gw string }{
		{"tr0", "10.9.1.1/24", "10.9.1.2/24", "10.9.1.1"},
		{"at0", "10.9.2.1/24", "10.9.2.2/24", "10.9.2.1"},
	}
	var nss []netns.NsHandle
	for _, ln := range links {
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
	// No reverse-path filter on the box: a forged source must arrive, as
	// it does across the Internet, for the test to show what the box does
	// with it.
	for _, f := range []string{"all", "default", "at0"} {
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+f+"/rp_filter", []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return nss[0], nss[1]
}

func spoofInvite(callID, did string, media netip.Addr, port int) []byte {
	body := fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\nm=audio %[2]d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", media, port)
	return fmt.Appendf(nil, "INVITE sip:%[1]s@%[2]s:5060 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[3]s:5060;branch=z9hG4bK-%[4]s\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:+4915112345678@%[3]s>;tag=t-%[4]s\r\nTo: <sip:%[1]s@%[2]s>\r\n"+
		"Call-ID: %[4]s\r\nCSeq: 1 INVITE\r\nContact: <sip:+4915112345678@%[3]s:5060>\r\n"+
		"Content-Type: application/sdp\r\nContent-Length: %[5]d\r\n\r\n%[6]s",
		did, spoofBox, spoofTrunk, callID, len(body), body)
}

// spoofAck is an ACK to the box's 2xx with the given branch and To tag.
func spoofAck(callID, did, branch, toTag string) []byte {
	to := fmt.Sprintf("<sip:%s@%s>", did, spoofBox)
	if toTag != "" {
		to += ";tag=" + toTag
	}
	return fmt.Appendf(nil, "ACK sip:%[1]s@%[2]s:5060 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %[3]s:5060;branch=%[4]s\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:+4915112345678@%[3]s>;tag=t-%[5]s\r\nTo: %[6]s\r\n"+
		"Call-ID: %[5]s\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
		did, spoofBox, spoofTrunk, branch, callID, to)
}

// sendForged sends payload as one UDP datagram from src, whatever address
// the sending namespace has (IP_HDRINCL: the kernel fills in the IP
// checksum and total length; the UDP checksum is optional over IPv4).
func sendForged(fd int, src, dst netip.AddrPort, payload []byte) error {
	pkt := make([]byte, 28+len(payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = unix.IPPROTO_UDP
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	binary.BigEndian.PutUint16(pkt[20:], src.Port())
	binary.BigEndian.PutUint16(pkt[22:], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
}

// readSIP reads c until a message matches.
func readSIP(t *testing.T, c *net.UDPConn, match func(sip.Message) bool) sip.Message {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second)) // only stops a broken test from hanging
	buf := make([]byte, 65535)
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("waiting for SIP on %v: %v", c.LocalAddr(), err)
		}
		m, err := sip.ParseMessage(bytes.Clone(buf[:n]))
		if err == nil && match(m) {
			return m
		}
	}
}

// onlyCall is the B2BUA's one call in progress.
func onlyCall(t *testing.T, h *harness) *call {
	t.Helper()
	for {
		cs := h.b.liveCalls()
		if len(cs) == 1 && cs[0].m != nil {
			return cs[0]
		}
		if len(cs) > 1 {
			t.Fatalf("%d calls", len(cs))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// calleeMediaDest is the box's media address in the last INVITE the callee got.
func calleeMediaDest(t *testing.T, p *phone) netip.AddrPort {
	t.Helper()
	p.mu.Lock()
	inv := p.invites[len(p.invites)-1]
	p.mu.Unlock()
	_, rem, err := media.ParseSDP(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(rem.Addr, rem.RTPPort)
}

// waitReceived waits until the relay took n packets from the callee.
func waitReceived(t *testing.T, c *call, n uint64) media.Stats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := c.m.Stats()
		if st.Legs[media.B].Received >= n {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay took %d of %d packets from the callee", st.Legs[media.B].Received, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func rtpPacket(seq uint16) []byte {
	p := make([]byte, 12+160)
	p[0] = 0x80
	binary.BigEndian.PutUint16(p[2:], seq)
	binary.BigEndian.PutUint32(p[4:], uint32(seq)*160)
	binary.BigEndian.PutUint32(p[8:], 0x5151)
	return p
}

// ackTx is the part of an INVITE server transaction waitAck reads: sipgo
// passes it every ACK that matches the INVITE's Via branch and sent-by.
type ackTx struct {
	sip.ServerTransaction
	acks chan *sip.Request
}

func (a ackTx) Acks() <-chan *sip.Request { return a.acks }

// TestForgedAckProvesNothing: an ACK that sipgo matched to the INVITE
// transaction by its branch (known to whoever forged the INVITE) confirms
// the 2xx only with the box's To tag. Deterministic: the second ACK can be
// taken only if the first did not end the wait.
func TestForgedAckProvesNothing(t *testing.T) {
	b := &B2BUA{g: newGroup(), cfg: Config{ackWait: transactionTimeout}}
	b.ctx, b.stop = context.WithCancel(context.Background())
	defer b.stop()
	c := &call{b: b}
	c.legs[media.A] = &leg{side: media.A, localTag: newTag()}
	c.acks[media.A] = make(chan uint32, 1)
	tx := ackTx{acks: make(chan *sip.Request)}
	ack := func(tag string) *sip.Request {
		req := sip.NewRequest(sip.ACK, sip.Uri{Scheme: "sip", Host: "10.9.1.1"})
		to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "10.9.1.1"}}
		if tag != "" {
			to.Params.Add("tag", tag)
		}
		req.AppendHeader(to)
		return req
	}
	done := make(chan bool, 1)
	go func() { done <- c.waitAck(media.A, 1, tx, func() {}, true) }()
	for _, forged := range []string{"", "guessed", strings.ToLower(c.legs[media.A].localTag)} {
		select {
		case tx.acks <- ack(forged):
		case <-done:
			t.Fatalf("an ACK with To tag %q confirmed the 2xx", forged)
		}
	}
	select {
	case tx.acks <- ack(c.legs[media.A].localTag):
	case <-done:
		t.Fatal("a forged ACK confirmed the 2xx")
	}
	if !<-done {
		t.Fatal("the genuine ACK did not confirm the 2xx")
	}
}
