package media

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/pion/dtls/v3"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// recordingPinholes is a real implementation of the interface for unit
// tests: it keeps the set of open holes and the order of calls.
type recordingPinholes struct {
	mu     sync.Mutex
	open   map[netfw.Pinhole]bool
	events []string
	fail   bool
}

func newRecordingPinholes() *recordingPinholes {
	return &recordingPinholes{open: map[netfw.Pinhole]bool{}}
}

func (r *recordingPinholes) OpenPinhole(_ context.Context, p netfw.Pinhole) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail {
		return fmt.Errorf("firewall refused")
	}
	if r.open[p] {
		return fmt.Errorf("pinhole %v opened twice", p)
	}
	r.open[p] = true
	r.events = append(r.events, fmt.Sprintf("open %s:%d", p.Remote, p.LocalPort))
	return nil
}

func (r *recordingPinholes) ClosePinhole(_ context.Context, p netfw.Pinhole) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.open[p] {
		return fmt.Errorf("pinhole %v closed but not open", p)
	}
	delete(r.open, p)
	r.events = append(r.events, fmt.Sprintf("close %s:%d", p.Remote, p.LocalPort))
	return nil
}

func (r *recordingPinholes) snapshot() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for p := range r.open {
		out = append(out, fmt.Sprintf("%s:%d", p.Remote, p.LocalPort))
	}
	slices.Sort(out)
	return out
}

type testRelay struct {
	*Relay
	ph   *recordingPinholes
	cert tls.Certificate
	fp   Fingerprint
}

var localhost = netip.MustParseAddr("127.0.0.1")

func newTestRelay(t testing.TB) *testRelay { return newTestRelayRange(t, 41000, 41999) }

func newTestRelayRange(t testing.TB, lo, hi uint16) *testRelay {
	t.Helper()
	ports, err := NewPorts(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	cert, fp, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	ph := newRecordingPinholes()
	r, err := NewRelay(Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports, Pinholes: ph, Certificate: &cert, HandshakeTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &testRelay{Relay: r, ph: ph, cert: cert, fp: fp}
}

// phone is a UDP endpoint on loopback playing one side of a call.
type phone struct {
	t    testing.TB
	conn *net.UDPConn
}

func newPhone(t testing.TB, ip string) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &phone{t: t, conn: c}
}

func (p *phone) addr() netip.AddrPort { return p.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// peer describes this phone as SDP would, with RTCP multiplexed so one
// socket sees everything.
func (p *phone) peer() Peer {
	return Peer{Addr: p.addr().Addr(), RTPPort: p.addr().Port(), RTCPMux: true}
}

func (p *phone) send(to uint16, b []byte) {
	p.t.Helper()
	if _, err := p.conn.WriteToUDP(b, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(to)}); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads the next datagram. The deadline only stops a broken test from
// hanging; no assertion depends on timing.
func (p *phone) recv() ([]byte, netip.AddrPort) {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 2048)
	n, from, err := p.conn.ReadFromUDPAddrPort(b)
	if err != nil {
		p.t.Fatalf("recv: %v", err)
	}
	return b[:n], from
}

func rtpPacket(t testing.TB, seq uint16, payload []byte) []byte {
	t.Helper()
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: seq, Timestamp: uint32(seq) * 160, SSRC: 0x1234}, Payload: payload}
	b, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func payload(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 160) }

func TestRelayPlainRTPAndStrictSource(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	stranger := newPhone(t, "127.0.0.2")
	call, err := r.NewCall("plain")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	pa, pb := call.LocalPort(A), call.LocalPort(B)
	for i := range 50 {
		want := rtpPacket(t, uint16(1000+i), payload(i))
		a.send(pa, want)
		got, from := b.recv()
		if !bytes.Equal(got, want) || from.Port() != pb {
			t.Fatalf("packet %d: got %d bytes from %v, want intact from port %d", i, len(got), from, pb)
		}
	}
	// Reverse direction, including RTCP on the muxed port.
	rr, _ := (&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 0x1234, FractionLost: 26, Jitter: 80}}}).Marshal()
	b.send(pb, rr)
	if got, _ := a.recv(); !bytes.Equal(got, rr) {
		t.Fatal("RTCP not relayed intact")
	}
	// A third address, and the right address from another port once the
	// source is latched, are both dropped; the marker sent after them
	// must be the next packet B sees.
	stranger.send(pa, rtpPacket(t, 2000, payload(99)))
	other := newPhone(t, "127.0.0.1")
	other.send(pa, rtpPacket(t, 2001, payload(98)))
	marker := rtpPacket(t, 2002, payload(7))
	a.send(pa, marker)
	if got, _ := b.recv(); !bytes.Equal(got, marker) {
		t.Fatalf("got a packet from a wrong source (payload byte %d)", got[12])
	}
	st := call.Stats()
	if st.Legs[A].DroppedSource != 2 || st.Legs[A].Received != 51 {
		t.Fatalf("leg A stats %+v", st.Legs[A])
	}
	if st.Legs[B].Reports != 1 || st.Legs[B].MOS == 0 {
		t.Fatalf("leg B quality not taken from RTCP: %+v", st.Legs[B])
	}
}

func TestRelayPinholesFollowCallLifetime(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.3")
	call, err := r.NewCall("ph")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.ph.snapshot(); len(got) != 0 {
		t.Fatalf("pinholes before SetPeer: %v", got)
	}
	ctx := context.Background()
	pa, pb := call.LocalPort(A), call.LocalPort(B)
	peerA := a.peer()
	peerA.RTCPMux = false
	if err := call.SetPeer(ctx, A, peerA); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	want := []string{fmt.Sprintf("127.0.0.1:%d", pa), fmt.Sprintf("127.0.0.1:%d", pa+1), fmt.Sprintf("127.0.0.3:%d", pb)}
	slices.Sort(want)
	if got := r.ph.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("open pinholes %v, want %v", got, want)
	}
	// Re-INVITE moves B to another address: its old hole closes.
	b2 := newPhone(t, "127.0.0.4")
	if err := call.SetPeer(ctx, B, b2.peer()); err != nil {
		t.Fatal(err)
	}
	want = []string{fmt.Sprintf("127.0.0.1:%d", pa), fmt.Sprintf("127.0.0.1:%d", pa+1), fmt.Sprintf("127.0.0.4:%d", pb)}
	slices.Sort(want)
	if got := r.ph.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("after re-INVITE %v, want %v", got, want)
	}
	// A firewall failure leaves the leg as it was.
	r.ph.fail = true
	if err := call.SetPeer(ctx, B, newPhone(t, "127.0.0.5").peer()); err == nil {
		t.Fatal("SetPeer succeeded without its pinhole")
	}
	r.ph.fail = false
	if got := r.ph.snapshot(); !slices.Equal(got, want) {
		t.Fatalf("after failed SetPeer %v, want %v", got, want)
	}
	if err := call.Close(); err != nil {
		t.Fatal(err)
	}
	if got := r.ph.snapshot(); len(got) != 0 {
		t.Fatalf("pinholes left after Close: %v", got)
	}
	if r.Relay.cfg.Ports.InUse() != 0 {
		t.Fatal("ports not released")
	}
	if err := call.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if n := len(r.ph.events); n != 8 {
		t.Fatalf("%d pinhole calls, want 8 (4 opens, 4 closes): %v", n, r.ph.events)
	}
}

// srtpPhone encrypts/decrypts like a phone using pion's contexts directly.
func srtpPair(t testing.TB, send, recv sdes.Crypto) (enc, dec *srtp.Context) {
	t.Helper()
	ps, _ := send.Suite.Profile()
	pr, _ := recv.Suite.Profile()
	enc, err := srtp.CreateContext(send.Key, send.Salt, ps)
	if err != nil {
		t.Fatal(err)
	}
	dec, err = srtp.CreateContext(recv.Key, recv.Salt, pr, srtp.SRTPReplayProtection(64))
	if err != nil {
		t.Fatal(err)
	}
	return enc, dec
}

func TestRelaySDESToRTP(t *testing.T) {
	for _, suite := range sdes.Suites() {
		t.Run(string(suite), func(t *testing.T) {
			r := newTestRelay(t)
			a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
			call, err := r.NewCall("sdes")
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			// The phone offers a key; the box answers with its own.
			offer, _ := sdes.New(1, suite)
			keys, ok, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
			if err != nil || !ok {
				t.Fatal("no SDES answer", err)
			}
			pa := a.peer()
			pa.SDES = &keys
			ctx := context.Background()
			if err := call.SetPeer(ctx, A, pa); err != nil {
				t.Fatal(err)
			}
			if err := call.SetPeer(ctx, B, b.peer()); err != nil {
				t.Fatal(err)
			}
			if !call.Secured(A) || call.Secured(B) {
				t.Fatal("Secured() wrong")
			}
			enc, dec := srtpPair(t, offer, keys.Send)
			var sent [][]byte
			for i := range 20 {
				plain := rtpPacket(t, uint16(100+i), payload(i))
				ct, err := enc.EncryptRTP(nil, plain, nil)
				if err != nil {
					t.Fatal(err)
				}
				sent = append(sent, ct)
				a.send(call.LocalPort(A), ct)
				if got, _ := b.recv(); !bytes.Equal(got, plain) {
					t.Fatalf("packet %d not decrypted intact", i)
				}
			}
			// A replayed packet and a forged one are dropped; the marker
			// after them is what B gets next.
			a.send(call.LocalPort(A), sent[5])
			forged := slices.Clone(sent[19])
			forged[len(forged)-1] ^= 1
			a.send(call.LocalPort(A), forged)
			plain := rtpPacket(t, 200, payload(77))
			ct, _ := enc.EncryptRTP(nil, plain, nil)
			a.send(call.LocalPort(A), ct)
			if got, _ := b.recv(); !bytes.Equal(got, plain) {
				t.Fatal("replayed or forged packet was forwarded")
			}
			if d := call.Stats().Legs[A].DroppedCrypto; d != 2 {
				t.Fatalf("DroppedCrypto = %d, want 2", d)
			}
			// Plain RTP from B reaches A encrypted with the box's key.
			for i := range 5 {
				plain := rtpPacket(t, uint16(300+i), payload(i))
				b.send(call.LocalPort(B), plain)
				got, _ := a.recv()
				dp, err := dec.DecryptRTP(nil, got, nil)
				if err != nil || !bytes.Equal(dp, plain) {
					t.Fatalf("B→A packet %d: %v", i, err)
				}
			}
			// SRTCP from B's side is protected too.
			rr, _ := (&rtcp.ReceiverReport{SSRC: 5}).Marshal()
			b.send(call.LocalPort(B), rr)
			got, _ := a.recv()
			if bytes.Equal(got, rr) {
				t.Fatal("RTCP sent to the SRTP leg in clear")
			}
			if dp, err := dec.DecryptRTCP(nil, got, nil); err != nil || !bytes.Equal(dp, rr) {
				t.Fatalf("SRTCP: %v", err)
			}
		})
	}
}

// dtlsPhone demultiplexes one UDP socket like a WebRTC endpoint: DTLS to
// pion/dtls, the rest to a channel.
type dtlsPhone struct {
	*phone
	dtlsIn chan []byte
	media  chan []byte
	closed chan struct{}
	to     *net.UDPAddr
}

func newDTLSPhone(t testing.TB, relayPort uint16) *dtlsPhone {
	p := &dtlsPhone{phone: newPhone(t, "127.0.0.1"), dtlsIn: make(chan []byte, 64), media: make(chan []byte, 64), closed: make(chan struct{}),
		to: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(relayPort)}}
	go func() {
		defer close(p.closed)
		for {
			b := make([]byte, 2048)
			n, err := p.conn.Read(b)
			if err != nil {
				return
			}
			if classify(b[:n]) == kindDTLS {
				p.dtlsIn <- b[:n]
			} else {
				p.media <- b[:n]
			}
		}
	}()
	return p
}

func (p *dtlsPhone) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case x := <-p.dtlsIn:
		return copy(b, x), p.to, nil
	case <-p.closed:
		return 0, nil, net.ErrClosed
	}
}
func (p *dtlsPhone) WriteTo(b []byte, _ net.Addr) (int, error) { return p.conn.WriteTo(b, p.to) }
func (p *dtlsPhone) Close() error                              { return nil }
func (p *dtlsPhone) LocalAddr() net.Addr                       { return p.conn.LocalAddr() }
func (p *dtlsPhone) SetDeadline(time.Time) error               { return nil }
func (p *dtlsPhone) SetReadDeadline(time.Time) error           { return nil }
func (p *dtlsPhone) SetWriteDeadline(time.Time) error          { return nil }

func (p *dtlsPhone) recvMedia() []byte {
	select {
	case b := <-p.media:
		return b
	case <-time.After(10 * time.Second):
		p.t.Fatal("no media")
		return nil
	}
}

// handshake runs a pion/dtls client against the relay, checking the
// relay's fingerprint as a browser would.
func (p *dtlsPhone) handshake(cert tls.Certificate, relayFP Fingerprint) (*dtls.Conn, error) {
	cfg := DTLSConfig(cert, relayFP)
	conn, err := dtls.Client(p, p.to, cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return conn, nil
}

func TestRelayDTLSToSDES(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("dtls")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	a := newDTLSPhone(t, call.LocalPort(A))
	b := newPhone(t, "127.0.0.1")
	acert, afp, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: afp} // the box is the DTLS server
	if err := call.SetPeer(ctx, A, pa); err != nil {
		t.Fatal(err)
	}
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, _, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	if err != nil {
		t.Fatal(err)
	}
	pb := b.peer()
	pb.SDES = &keys
	if err := call.SetPeer(ctx, B, pb); err != nil {
		t.Fatal(err)
	}
	conn, err := a.handshake(acert, r.fp)
	if err != nil {
		t.Fatal("client handshake:", err)
	}
	defer conn.Close()
	done, herr := call.DTLSDone(A)
	<-done
	if herr() != nil || !call.Secured(A) {
		t.Fatalf("relay side: %v", herr())
	}
	state, _ := conn.ConnectionState()
	sp, _ := conn.SelectedSRTPProtectionProfile()
	prof, err := srtpProfile(sp)
	if err != nil {
		t.Fatal(err)
	}
	sc := srtp.Config{Profile: prof}
	if err := sc.ExtractSessionKeysFromDTLS(&state, true); err != nil {
		t.Fatal(err)
	}
	aEnc, _ := srtp.CreateContext(sc.Keys.LocalMasterKey, sc.Keys.LocalMasterSalt, prof)
	aDec, _ := srtp.CreateContext(sc.Keys.RemoteMasterKey, sc.Keys.RemoteMasterSalt, prof, srtp.SRTPReplayProtection(64))
	bEnc, bDec := srtpPair(t, offer, keys.Send)
	for i := range 10 {
		plain := rtpPacket(t, uint16(10+i), payload(i))
		ct, _ := aEnc.EncryptRTP(nil, plain, nil)
		a.send(call.LocalPort(A), ct)
		got, _ := b.recv()
		if dp, err := bDec.DecryptRTP(nil, got, nil); err != nil || !bytes.Equal(dp, plain) {
			t.Fatalf("DTLS→SDES packet %d: %v", i, err)
		}
		plain = rtpPacket(t, uint16(500+i), payload(i+1))
		ct, _ = bEnc.EncryptRTP(nil, plain, nil)
		b.send(call.LocalPort(B), ct)
		if dp, err := aDec.DecryptRTP(nil, a.recvMedia(), nil); err != nil || !bytes.Equal(dp, plain) {
			t.Fatalf("SDES→DTLS packet %d: %v", i, err)
		}
	}
}

func TestRelayDTLSWrongFingerprint(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("dtls-bad")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	a := newDTLSPhone(t, call.LocalPort(A))
	acert, _, _ := NewDTLSCertificate()
	_, otherFP, _ := NewDTLSCertificate() // what a forged SDP would carry
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: otherFP}
	if err := call.SetPeer(context.Background(), A, pa); err != nil {
		t.Fatal(err)
	}
	if _, err := a.handshake(acert, r.fp); err == nil {
		t.Fatal("client completed a handshake the relay must refuse")
	}
	done, herr := call.DTLSDone(A)
	<-done
	if herr() == nil || call.Secured(A) {
		t.Fatal("relay accepted a certificate that does not match the SDP fingerprint")
	}
}

func TestHandshakeLimiter(t *testing.T) {
	h := NewHandshakeLimiter(1, 0.1, 3)
	rel, err := h.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The only slot is held (a stalled handshake): the next waits only as
	// long as its own context allows, and frees nothing else.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Acquire(ctx); err == nil {
		t.Fatal("acquired a second slot")
	}
	rel()
	rel2, err := h.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	rel2()
	if _, err := h.Acquire(context.Background()); err != ErrHandshakeRate {
		t.Fatalf("fourth handshake in the same instant: %v, want rate error", err)
	}
}

// A peer that never answers the box's ClientHello stalls only its own
// handshake: another call's handshake, started afterwards, completes.
func TestRelayStalledHandshakeDoesNotBlockOthers(t *testing.T) {
	r := newTestRelay(t)
	r.cfg.Handshakes = NewHandshakeLimiter(2, 50, 10)
	stalled, err := r.NewCall("stalled")
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	silent := newPhone(t, "127.0.0.1") // receives ClientHellos, never answers
	_, anyFP, _ := NewDTLSCertificate()
	ps := silent.peer()
	ps.DTLS = &DTLSParams{Fingerprint: anyFP, Client: true}
	if err := stalled.SetPeer(context.Background(), A, ps); err != nil {
		t.Fatal(err)
	}
	if b, _ := silent.recv(); classify(b) != kindDTLS {
		t.Fatal("box did not start the handshake as client")
	}

	call, err := r.NewCall("ok")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	a := newDTLSPhone(t, call.LocalPort(A))
	acert, afp, _ := NewDTLSCertificate()
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: afp}
	if err := call.SetPeer(context.Background(), A, pa); err != nil {
		t.Fatal(err)
	}
	conn, err := a.handshake(acert, r.fp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	done, herr := call.DTLSDone(A)
	<-done
	if herr() != nil {
		t.Fatal(herr())
	}
	select {
	case <-func() <-chan struct{} { d, _ := stalled.DTLSDone(A); return d }():
		t.Fatal("stalled handshake finished")
	default:
	}
	// Closing the call ends the stalled handshake and frees its slot.
	stalled.Close()
	d, serr := stalled.DTLSDone(A)
	<-d
	if serr() == nil {
		t.Fatal("stalled handshake reported success")
	}
}

// The box as DTLS client (it answered a=setup:active) against a pion/dtls
// server phone, then SRTP from the phone to a plain RTP leg.
func TestRelayDTLSClientRole(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("dtls-client")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	a := newDTLSPhone(t, call.LocalPort(A))
	b := newPhone(t, "127.0.0.1")
	acert, afp, _ := NewDTLSCertificate()
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: afp, Client: true}
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, pa); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	srv, err := dtls.Server(a, a.to, DTLSConfig(acert, r.fp))
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := srv.HandshakeContext(hctx); err != nil {
		t.Fatal(err)
	}
	done, herr := call.DTLSDone(A)
	<-done
	if herr() != nil {
		t.Fatal(herr())
	}
	state, _ := srv.ConnectionState()
	sp, _ := srv.SelectedSRTPProtectionProfile()
	prof, _ := srtpProfile(sp)
	sc := srtp.Config{Profile: prof}
	if err := sc.ExtractSessionKeysFromDTLS(&state, false); err != nil {
		t.Fatal(err)
	}
	enc, _ := srtp.CreateContext(sc.Keys.LocalMasterKey, sc.Keys.LocalMasterSalt, prof)
	plain := rtpPacket(t, 4242, payload(3))
	ct, _ := enc.EncryptRTP(nil, plain, nil)
	a.send(call.LocalPort(A), ct)
	if got, _ := b.recv(); !bytes.Equal(got, plain) {
		t.Fatal("SRTP from the DTLS server phone not decrypted")
	}
}

// TestRelayTotalsSurviveCallClose: the relay's totals are the legs' own
// counters, summed at read time; a closed call's figures stay in them and
// are not counted twice.
func TestRelayTotalsSurviveCallClose(t *testing.T) {
	r := newTestRelay(t)
	ctx := context.Background()
	var calls []*Call
	for i := range 2 {
		a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		c, err := r.NewCall(fmt.Sprintf("totals-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetPeer(ctx, A, a.peer()); err != nil {
			t.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, b.peer()); err != nil {
			t.Fatal(err)
		}
		for j := range 10 * (i + 1) {
			a.send(c.LocalPort(A), rtpPacket(t, uint16(100+j), payload(j)))
			b.recv()
		}
		rr, _ := (&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 0x1234, FractionLost: 64}}}).Marshal()
		b.send(c.LocalPort(B), rr)
		a.recv()
		calls = append(calls, c)
	}
	want := Totals{Calls: 2, Received: 32, Sent: 32, Reports: 2, LossSum: 0.5}
	check := func(when string, want Totals) {
		t.Helper()
		got := r.Totals()
		got.Bytes = 0 // RTP sizes are the test's, not the relay's
		if want.Calls > 0 {
			// The loop counts a packet sent after the syscall returns, which
			// may be after the phone read it; final once the call is closed.
			got.Sent = want.Sent
		}
		if got != want {
			t.Fatalf("%s: totals %+v, want %+v", when, got, want)
		}
	}
	check("two live calls", want)
	calls[0].Close()
	want.Calls = 1
	check("one call closed", want)
	calls[0].Close() // a second Close adds nothing
	calls[1].Close()
	want.Calls = 0
	check("all closed", want)
}
