package call

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
)

// dtlsEnd is a phone's media socket doing DTLS-SRTP (RFC 5764): DTLS
// records go to the current handshake's pion/dtls conn, everything else
// to media (RFC 7983 demux).
type dtlsEnd struct {
	conn   *net.UDPConn
	to     *net.UDPAddr // the box's media address for this phone
	inbox  atomic.Pointer[chan []byte]
	media  chan []byte
	closed chan struct{}
	cert   tls.Certificate
	fp     media.Fingerprint
	seq    uint16 // next RTP sequence number this phone sends
}

func newDTLSEnd(t testing.TB) *dtlsEnd {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cert, fp, err := media.NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	e := &dtlsEnd{conn: c, media: make(chan []byte, 256), closed: make(chan struct{}), cert: cert, fp: fp, seq: 100}
	in := make(chan []byte, 64)
	e.inbox.Store(&in)
	go func() {
		defer close(e.closed)
		for {
			b := make([]byte, 2048)
			n, err := c.Read(b)
			if err != nil {
				return
			}
			ch := e.media
			if n > 0 && b[0] >= 20 && b[0] <= 63 {
				ch = *e.inbox.Load()
			}
			select {
			case ch <- b[:n]:
			default: // a slow test drops media, as a phone would
			}
		}
	}()
	t.Cleanup(func() { _ = c.Close() })
	return e
}

func (e *dtlsEnd) port() int { return e.conn.LocalAddr().(*net.UDPAddr).Port }

// sdp is the phone's offer or answer: DTLS-SRTP with its fingerprint.
func (e *dtlsEnd) sdp(setup string) string { return e.sdpWith(setup, "sendrecv", e.fp) }

func (e *dtlsEnd) sdpWith(setup, dir string, fp media.Fingerprint) string {
	return "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=%s\r\n", e.port(), dir) +
		"a=fingerprint:" + fp.String() + "\r\na=setup:" + setup + "\r\n"
}

// dtlsSession is the net.PacketConn of one handshake: a new handshake
// gets a new inbox, so an earlier association's conn reads nothing more.
type dtlsSession struct {
	e  *dtlsEnd
	in chan []byte

	// Read deadlines, which pion uses to stop its reader when a
	// handshake gives up: without them a failed handshake hangs.
	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed when the deadline changes
}

func (s *dtlsSession) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		s.mu.Lock()
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		dl, wake := s.deadline, s.wake
		s.mu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
		select {
		case x := <-s.in:
			return copy(b, x), s.e.to, nil
		case <-s.e.closed:
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case <-wake:
		}
	}
}
func (s *dtlsSession) WriteTo(b []byte, _ net.Addr) (int, error) { return s.e.conn.WriteTo(b, s.e.to) }
func (s *dtlsSession) Close() error                              { return nil }
func (s *dtlsSession) LocalAddr() net.Addr                       { return s.e.conn.LocalAddr() }
func (s *dtlsSession) SetDeadline(t time.Time) error             { return s.SetReadDeadline(t) }
func (s *dtlsSession) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	if s.wake != nil {
		close(s.wake)
	}
	s.wake = make(chan struct{})
	s.mu.Unlock()
	return nil
}
func (s *dtlsSession) SetWriteDeadline(time.Time) error { return nil }

// handshake runs DTLS against the box (client or server role), checking
// the box's fingerprint from its SDP, and returns SRTP contexts.
func (e *dtlsEnd) handshake(ctx context.Context, box media.Fingerprint, client bool) (enc, dec *srtp.Context, err error) {
	return e.handshakeAs(ctx, e.cert, box, client)
}

// renew gives the next handshake a fresh inbox (a new association while
// the old conn still exists). Call it before the SDP that triggers it, so
// the box's first flight lands there.
func (e *dtlsEnd) renew() {
	in := make(chan []byte, 64)
	e.inbox.Store(&in)
}

func (e *dtlsEnd) handshakeAs(ctx context.Context, cert tls.Certificate, box media.Fingerprint, client bool) (enc, dec *srtp.Context, err error) {
	sess := &dtlsSession{e: e, in: *e.inbox.Load()}
	cfg := media.DTLSConfig(cert, box)
	var conn *dtls.Conn
	if client {
		conn, err = dtls.Client(sess, e.to, cfg)
	} else {
		conn, err = dtls.Server(sess, e.to, cfg)
	}
	if err != nil {
		return nil, nil, err
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, nil, fmt.Errorf("handshake: %w", err)
	}
	state, _ := conn.ConnectionState()
	sp, _ := conn.SelectedSRTPProtectionProfile()
	var prof srtp.ProtectionProfile
	switch sp {
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		prof = srtp.ProtectionProfileAes128CmHmacSha1_80
	case dtls.SRTP_AES128_CM_HMAC_SHA1_32:
		prof = srtp.ProtectionProfileAes128CmHmacSha1_32
	case dtls.SRTP_AEAD_AES_128_GCM:
		prof = srtp.ProtectionProfileAeadAes128Gcm
	case dtls.SRTP_AEAD_AES_256_GCM:
		prof = srtp.ProtectionProfileAeadAes256Gcm
	default:
		return nil, nil, fmt.Errorf("SRTP profile %v", sp)
	}
	sc := srtp.Config{Profile: prof}
	if err := sc.ExtractSessionKeysFromDTLS(&state, client); err != nil {
		return nil, nil, err
	}
	if enc, err = srtp.CreateContext(sc.Keys.LocalMasterKey, sc.Keys.LocalMasterSalt, prof); err != nil {
		return nil, nil, err
	}
	dec, err = srtp.CreateContext(sc.Keys.RemoteMasterKey, sc.Keys.RemoteMasterSalt, prof, srtp.SRTPReplayProtection(64))
	return enc, dec, err
}

// rtp is the next RTP packet of from (its sequence numbers keep rising
// across the test, so the box's replay window never refuses one).
func (e *dtlsEnd) rtp(mark string) []byte {
	plain := make([]byte, 12+160)
	plain[0], plain[1] = 0x80, 0
	plain[2], plain[3] = byte(e.seq>>8), byte(e.seq)
	plain[11] = 7
	copy(plain[12:], mark)
	e.seq++
	return plain
}

// sendUntil encrypts and sends RTP to the box until the other end
// decrypts one packet carrying the same payload.
func sendUntil(ctx context.Context, t *testing.T, from *dtlsEnd, enc *srtp.Context, to *dtlsEnd, dec *srtp.Context, mark string) {
	t.Helper()
	for ctx.Err() == nil {
		plain := from.rtp(mark)
		ct, err := enc.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := from.conn.WriteTo(ct, from.to); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-to.media:
			p, err := dec.DecryptRTP(nil, got, nil)
			if err == nil && bytes.Equal(p[12:], plain[12:]) {
				return
			}
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	t.Fatalf("%s: no SRTP packet decrypted intact", mark)
}

// TestDTLSBothLegs: a DTLS-SRTP caller reaches a DTLS-SRTP callee. The
// callee is offered DTLS-SRTP (not SDES) with the relay's fingerprint and
// a=setup:actpass; it takes the client role. Both phones handshake with
// the relay (fingerprints checked both ways) and SRTP flows both ways,
// decrypted intact.
func TestDTLSBothLegs(t *testing.T) {
	h := startHarness(t)
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	ea, eb := newDTLSEnd(t), newDTLSEnd(t)
	offers := make(chan media.Remote, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil || rem.Fingerprint == nil {
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		offers <- rem
		_ = d.Respond(200, "OK", []byte(eb.sdp("active")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hp, pn, _ := net.SplitHostPort(h.addr)
	var port int
	fmt.Sscan(pn, &port)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: hp, Port: port},
		[]byte(ea.sdp("actpass")), from, sip.NewHeader("Content-Type", "application/sdp"))
	d = connect(ctx, t, d, err)
	var offer media.Remote
	select {
	case offer = <-offers:
	default:
		t.Fatal("callee got no DTLS-SRTP offer")
	}
	if offer.Proto != media.ProtoDTLS || offer.Setup != "actpass" || len(offer.Crypto) != 0 {
		t.Fatalf("callee offered %s setup %q with %d a=crypto", offer.Proto, offer.Setup, len(offer.Crypto))
	}
	_, ans, err := media.ParseSDP(d.InviteResponse.Body())
	if err != nil || ans.Fingerprint == nil || ans.Proto != media.ProtoDTLS {
		t.Fatalf("caller's answer %+v %v", ans, err)
	}
	if ans.Fingerprint.String() != offer.Fingerprint.String() {
		t.Fatal("the relay shows different fingerprints on its two legs")
	}
	ea.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(ans.Addr, ans.RTPPort))
	eb.to = net.UDPAddrFromAddrPort(netip.AddrPortFrom(offer.Addr, offer.RTPPort))
	type keys struct {
		enc, dec *srtp.Context
		err      error
	}
	ka, kb := make(chan keys, 1), make(chan keys, 1)
	go func() { // the box answered the caller a=setup:active: the caller is the server
		var k keys
		k.enc, k.dec, k.err = ea.handshake(ctx, *ans.Fingerprint, ans.Setup != "active")
		ka <- k
	}()
	go func() {
		var k keys
		k.enc, k.dec, k.err = eb.handshake(ctx, *offer.Fingerprint, true)
		kb <- k
	}()
	a, b := <-ka, <-kb
	if a.err != nil || b.err != nil {
		t.Fatalf("handshakes: caller %v, callee %v", a.err, b.err)
	}
	sendUntil(ctx, t, ea, a.enc, eb, b.dec, "caller-to-callee")
	sendUntil(ctx, t, eb, b.enc, ea, a.dec, "callee-to-caller")
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	rec := waitEnded(t, h).rec
	if !rec.SRTPCaller || !rec.SRTPCallee {
		t.Fatalf("CDR SRTP caller/callee = %v/%v", rec.SRTPCaller, rec.SRTPCallee)
	}
	h.noStateLeft(t, false)
}
