package media

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
)

// ErrHandshakeRate is returned when DTLS handshakes arrive faster than the
// limiter allows.
var ErrHandshakeRate = errors.New("media: DTLS handshake rate exceeded")

// HandshakeLimiter bounds DTLS handshakes across all calls: at most max run
// at once (a stalled one holds a slot only until its timeout) and at most
// perSecond start each second, after a burst of burst.
type HandshakeLimiter struct {
	slots chan struct{}
	rate  float64
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// NewHandshakeLimiter makes a limiter; share one per relay process.
func NewHandshakeLimiter(max int, perSecond float64, burst int) *HandshakeLimiter {
	return &HandshakeLimiter{slots: make(chan struct{}, max), rate: perSecond, burst: float64(burst), tokens: float64(burst)}
}

// Acquire takes a rate token (refusing at once when there is none: a flood
// must not queue) and waits for a concurrency slot until ctx ends.
func (h *HandshakeLimiter) Acquire(ctx context.Context) (release func(), err error) {
	h.mu.Lock()
	now := time.Now()
	if !h.last.IsZero() {
		h.tokens = min(h.burst, h.tokens+now.Sub(h.last).Seconds()*h.rate)
	}
	h.last = now
	if h.tokens < 1 {
		h.mu.Unlock()
		return nil, ErrHandshakeRate
	}
	h.tokens--
	h.mu.Unlock()
	select {
	case h.slots <- struct{}{}:
		return func() { <-h.slots }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("media: waiting for a DTLS handshake slot: %w", ctx.Err())
	}
}

// srtpProfiles are offered/accepted in DTLS use_srtp, preferred first.
var srtpProfiles = []dtls.SRTPProtectionProfile{
	dtls.SRTP_AEAD_AES_128_GCM,
	dtls.SRTP_AES128_CM_HMAC_SHA1_80,
	dtls.SRTP_AEAD_AES_256_GCM,
}

func srtpProfile(p dtls.SRTPProtectionProfile) (srtp.ProtectionProfile, error) {
	switch p {
	case dtls.SRTP_AEAD_AES_128_GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case dtls.SRTP_AEAD_AES_256_GCM:
		return srtp.ProtectionProfileAeadAes256Gcm, nil
	}
	return 0, fmt.Errorf("media: DTLS negotiated unexpected SRTP profile %#x", uint16(p))
}

// DTLSConfig is the pion/dtls configuration the relay uses for a leg whose
// peer must present a certificate matching fp. Exported for tests and for
// the B2BUA's own checks; the relay builds it itself.
func DTLSConfig(cert tls.Certificate, fp Fingerprint) *dtls.Config {
	return &dtls.Config{
		Certificates:           []tls.Certificate{cert},
		SRTPProtectionProfiles: srtpProfiles,
		ExtendedMasterSecret:   dtls.RequireExtendedMasterSecret,
		// Peers use self-signed certificates; the SDP fingerprint, carried
		// over the authenticated signalling path, is what we trust.
		InsecureSkipVerify: true,
		ClientAuth:         dtls.RequireAnyClientCert,
		VerifyConnection: func(s *dtls.State) error {
			if len(s.PeerCertificates) == 0 || !fp.Matches(s.PeerCertificates[0]) {
				return errors.New("media: DTLS peer certificate does not match the SDP fingerprint")
			}
			return nil
		},
	}
}

// dtlsLeg is one DTLS association of a leg (RFC 5764): its handshake and,
// once done, its SRTP keys. The reactor loop hands it DTLS records (RFC
// 7983 demux); SRTP never goes through the dtls.Conn. An association
// outlives SetPeer while the peer's fingerprint, the roles and the
// transport stay (RFC 8842 §5: a re-offer keeps it); only a change starts
// a new one.
type dtlsLeg struct {
	l      *leg
	params DTLSParams
	dst    netip.AddrPort // the peer's RTP address from the SDP that started it

	// keys are set once the handshake succeeded. prev is the association
	// this one replaces: its keys carry media until this one has its own
	// (the peer keeps sending with the old keys until its handshake ends);
	// it is closed and cleared when this handshake ends.
	keys    atomic.Pointer[legCrypto]
	prev    atomic.Pointer[dtlsLeg]
	failed  atomic.Bool // the handshake failed: no keys at all, not even prev's
	newSeen atomic.Bool // a packet decrypted with keys: prev's are not tried any more

	in   chan []byte
	peer atomic.Pointer[net.UDPAddr] // where the last DTLS record came from
	// sent is closed once the box's SDP answer reached the wire (at once
	// when the box made the offer); first when the peer's first record
	// is queued in in. Together they say when the handshake may start.
	sent      chan struct{}
	sentOnce  sync.Once
	final     chan struct{} // the answer went in a 2xx, not only a 18x
	finalOnce sync.Once
	first     chan struct{}
	firstSeen atomic.Bool
	closing   chan struct{}
	once      sync.Once

	dlMu     sync.Mutex
	deadline time.Time
	dlNotify chan struct{}

	done chan struct{}
	err  error // set before done is closed
}

func newDTLSLeg(l *leg, p DTLSParams, dst netip.AddrPort, awaitAnswer bool) *dtlsLeg {
	d := &dtlsLeg{l: l, params: p, dst: dst, in: make(chan []byte, 32), closing: make(chan struct{}), dlNotify: make(chan struct{}), done: make(chan struct{}),
		sent: make(chan struct{}), final: make(chan struct{}), first: make(chan struct{})}
	if !awaitAnswer {
		d.answerSent(true)
	}
	return d
}

// answerSent closes final before sent: whoever sees sent closed knows
// whether that answer was final.
func (d *dtlsLeg) answerSent(final bool) {
	if final {
		d.finalOnce.Do(func() { close(d.final) })
	}
	d.sentOnce.Do(func() { close(d.sent) })
}

// sendKeys are the keys for packets the box sends: this association's,
// or while it handshakes the one it replaces.
func (d *dtlsLeg) sendKeys() *legCrypto {
	if k := d.keys.Load(); k != nil {
		return k
	}
	if d.failed.Load() {
		return nil
	}
	if p := d.prev.Load(); p != nil {
		return p.keys.Load()
	}
	return nil
}

// oldKeys are the replaced association's keys while packets sent with them
// may still arrive after this one has its own: nil once a packet
// decrypted with the new keys or the handshake failed.
func (d *dtlsLeg) oldKeys() *legCrypto {
	if d.newSeen.Load() || d.failed.Load() || d.keys.Load() == nil {
		return nil
	}
	if p := d.prev.Load(); p != nil {
		return p.keys.Load()
	}
	return nil
}

// keeps reports whether a re-negotiation with p towards dst can keep this
// association: same peer fingerprint, same roles, same transport (the
// SDP's address, or the one the peer's DTLS records actually come from),
// and a handshake that has not failed.
func (d *dtlsLeg) keeps(p DTLSParams, dst netip.AddrPort) bool {
	if d.params.Client != p.Client || d.params.Fingerprint.Hash != p.Fingerprint.Hash ||
		!bytes.Equal(d.params.Fingerprint.Value, p.Fingerprint.Value) {
		return false
	}
	select {
	case <-d.closing:
		return false
	case <-d.done:
		if d.err != nil {
			return false
		}
	default:
	}
	if dst == d.dst {
		return true
	}
	a := d.peer.Load()
	return a != nil && a.AddrPort() == dst
}

// deliver is called by the reactor loop; it never blocks.
func (d *dtlsLeg) deliver(pkt []byte, from netip.AddrPort) {
	if p := d.peer.Load(); p == nil || p.AddrPort() != from {
		d.peer.Store(net.UDPAddrFromAddrPort(from))
	}
	select {
	case d.in <- append([]byte(nil), pkt...):
		if d.firstSeen.CompareAndSwap(false, true) {
			close(d.first)
		}
	default:
		d.l.stats.droppedMalformed.Add(1)
	}
}

func (d *dtlsLeg) close() { d.once.Do(func() { close(d.closing) }) }

func (d *dtlsLeg) closed() bool {
	select {
	case <-d.closing:
		return true
	default:
		return false
	}
}

func (d *dtlsLeg) run(ctx context.Context) {
	conn, err := d.start(ctx)
	superseded := d.closed()
	if err != nil {
		d.close() // ends pion's reader, blocked in ReadFrom
	}
	if err != nil && !superseded {
		d.failed.Store(true)
		d.l.stats.handshakeFailures.Add(1)
		d.l.call.r.cfg.Log.Warn("media: DTLS-SRTP handshake failed", "call", d.l.call.id, "leg", d.l.side, "err", err)
	}
	d.err = err
	close(d.done)
	if !superseded {
		// Done either way: the old association carries nothing any more
		// once this one has keys (old packets still in flight are
		// decrypted with the keys kept in oldKeys) or failed.
		if p := d.prev.Load(); p != nil {
			p.close()
		}
		if err != nil {
			d.prev.Store(nil)
			if f := d.l.call.dtlsFailed.Load(); f != nil {
				(*f)(d.l.side, err)
			}
		}
	}
	if conn == nil {
		return
	}
	// Keep reading so alerts and retransmitted final flights are answered
	// until the association ends; application data is not used.
	// Counted in the call's WaitGroup like run itself (which holds a
	// count now, so adding is safe): Close returns after pion's Close.
	wg := &d.l.call.wg
	wg.Add(1)
	go func() {
		defer wg.Done()
		<-d.closing
		conn.Close()
	}()
	buf := make([]byte, 1500)
	for {
		if _, err := conn.Read(buf); err != nil {
			return
		}
	}
}

// awaitStart waits until the handshake may start (RFC 5763 §5 roles): as
// client once the box's answer was sent, as server once the peer's first
// record (its ClientHello) came. Until then nothing is sent and no
// handshake slot is held; a peer that never starts is given up on. early
// reports that the answer that started it was a provisional one.
func (d *dtlsLeg) awaitStart(ctx context.Context) (early bool, err error) {
	cfg := d.l.call.r.cfg
	overall := time.NewTimer(cfg.HandshakeWait)
	defer overall.Stop()
	sent, first := d.sent, d.first
	if d.params.Client {
		first = nil // the peer, DTLS server, speaks only after the ClientHello
	}
	var idle <-chan time.Time
	for {
		select {
		case <-sent:
			early = !isClosed(d.final)
			if d.params.Client {
				return early, nil
			}
			sent = nil
			t := time.NewTimer(cfg.HandshakeTimeout)
			defer t.Stop()
			idle = t.C
		case <-first:
			return early, nil
		case <-idle:
			return early, fmt.Errorf("media: no DTLS ClientHello within %s of the answer", cfg.HandshakeTimeout)
		case <-overall.C:
			return early, fmt.Errorf("media: DTLS handshake did not start within %s", cfg.HandshakeWait)
		case <-d.closing:
			return early, net.ErrClosed
		case <-ctx.Done():
			return early, ctx.Err()
		}
	}
}

// start runs the handshake once it may start. One started on an early
// answer (18x) that never heard from the peer is tried once more when the
// final answer is sent: many phones do DTLS only after the 2xx, and the
// callee may ring for longer than the handshake timeout.
func (d *dtlsLeg) start(ctx context.Context) (*dtls.Conn, error) {
	early, err := d.awaitStart(ctx)
	var conn *dtls.Conn
	if err == nil {
		conn, err = d.handshake(ctx)
	}
	if err == nil || !early || d.firstSeen.Load() || d.closed() || ctx.Err() != nil {
		return conn, err
	}
	cfg := d.l.call.r.cfg
	cfg.Log.Debug("media: DTLS peer silent after the early answer; retrying after the final one", "call", d.l.call.id, "leg", d.l.side, "err", err)
	wait := time.NewTimer(cfg.HandshakeWait)
	defer wait.Stop()
	select {
	case <-d.final:
	case <-wait.C:
		return nil, fmt.Errorf("media: no final answer within %s after %w", cfg.HandshakeWait, err)
	case <-d.closing:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if _, err := d.awaitStart(ctx); err != nil {
		return nil, err
	}
	return d.handshake(ctx)
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (d *dtlsLeg) handshake(ctx context.Context) (*dtls.Conn, error) {
	cfg := d.l.call.r.cfg
	// The timeout counts from the start, also while waiting for a slot:
	// a stalled handshake holds its slot only until then.
	ctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	release, err := cfg.Handshakes.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	wg := &d.l.call.wg // see run
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-d.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := d.connect(ctx)
	if err != nil && conn != nil {
		conn.Close()
		conn = nil
	}
	return conn, err
}

func (d *dtlsLeg) connect(ctx context.Context) (*dtls.Conn, error) {
	cfg := d.l.call.r.cfg
	var err error
	dc := DTLSConfig(*cfg.Certificate, d.params.Fingerprint)
	var conn *dtls.Conn
	a := &dtlsAttempt{dtlsLeg: d, stop: make(chan struct{})}
	if d.params.Client {
		conn, err = dtls.Client(a, net.UDPAddrFromAddrPort(d.dst), dc)
	} else {
		conn, err = dtls.Server(a, net.UDPAddrFromAddrPort(d.dst), dc)
	}
	if err != nil {
		return nil, fmt.Errorf("dtls: %w", err)
	}
	if err := conn.HandshakeContext(ctx); err != nil {
		return conn, fmt.Errorf("dtls handshake: %w", err)
	}
	sp, ok := conn.SelectedSRTPProtectionProfile()
	if !ok {
		return conn, errors.New("dtls: no SRTP profile negotiated")
	}
	profile, err := srtpProfile(sp)
	if err != nil {
		return conn, err
	}
	state, ok := conn.ConnectionState()
	if !ok {
		return conn, errors.New("dtls: no connection state")
	}
	sc := srtp.Config{Profile: profile}
	if err := sc.ExtractSessionKeysFromDTLS(&state, d.params.Client); err != nil {
		return conn, fmt.Errorf("dtls: export SRTP keys: %w", err)
	}
	k := sc.Keys
	lc, err := newLegCrypto(profile, k.LocalMasterKey, k.LocalMasterSalt, k.RemoteMasterKey, k.RemoteMasterSalt)
	if err != nil {
		return conn, err
	}
	d.keys.Store(lc)
	return conn, nil
}

// dtlsAttempt is the net.PacketConn that pion/dtls reads and writes in one
// handshake attempt. pion closes it when the attempt fails: that ends the
// attempt's reader (so it cannot take a later attempt's records) without
// ending the association; whether the association was replaced (closed by
// SetPeer or Close) must still be told apart from that.
type dtlsAttempt struct {
	*dtlsLeg
	stop chan struct{}
	once sync.Once
}

func (a *dtlsAttempt) Close() error {
	a.once.Do(func() { close(a.stop) })
	return nil
}

func (a *dtlsAttempt) ReadFrom(p []byte) (int, net.Addr, error) { return a.readFrom(p, a.stop) }

func (d *dtlsLeg) readFrom(p []byte, stopped <-chan struct{}) (int, net.Addr, error) {
	for {
		d.dlMu.Lock()
		dl, notify := d.deadline, d.dlNotify
		d.dlMu.Unlock()
		var timer <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			wait := time.Until(dl)
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(wait)
			timer = t.C
		}
		stop := func() {
			if t != nil {
				t.Stop()
			}
		}
		select {
		case b := <-d.in:
			stop()
			return copy(p, b), d.peer.Load(), nil
		case <-d.closing:
			stop()
			return 0, nil, net.ErrClosed
		case <-stopped:
			stop()
			return 0, nil, net.ErrClosed
		case <-timer:
			return 0, nil, os.ErrDeadlineExceeded
		case <-notify:
			stop()
		}
	}
}

func (d *dtlsLeg) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-d.closing:
		return 0, net.ErrClosed
	default:
	}
	dst := d.dst
	if a := d.peer.Load(); a != nil {
		dst = a.AddrPort()
	} else if st := d.l.state.Load(); st != nil && st.dtls == d {
		dst = st.dst(false) // latched by SRTP before any DTLS record came
	}
	return d.l.rtp.writeTo(p, dst)
}

func (d *dtlsLeg) LocalAddr() net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(d.l.call.r.cfg.Addr, d.l.port))
}

func (d *dtlsLeg) SetDeadline(t time.Time) error { return d.SetReadDeadline(t) }

func (d *dtlsLeg) SetReadDeadline(t time.Time) error {
	d.dlMu.Lock()
	d.deadline = t
	close(d.dlNotify)
	d.dlNotify = make(chan struct{})
	d.dlMu.Unlock()
	return nil
}

func (d *dtlsLeg) SetWriteDeadline(time.Time) error { return nil }
