package media

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/netfw"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Pinholes opens and closes per-call firewall holes. The control-socket
// client of PID 1 (init/control.Client) satisfies it.
type Pinholes interface {
	OpenPinhole(ctx context.Context, p netfw.Pinhole) error
	ClosePinhole(ctx context.Context, p netfw.Pinhole) error
}

// Config sizes a Relay. Addr, Ports and Pinholes are required.
type Config struct {
	// Addr is the box's media address: sockets bind to it and SDP
	// rewritten by the B2BUA must advertise it.
	Addr     netip.Addr
	Ports    *Ports
	Pinholes Pinholes
	// PinholeTimeout is passed to the firewall (0: its default). Holes are
	// closed explicitly at call end; the timeout is the safety net.
	PinholeTimeout time.Duration
	// Certificate is presented in DTLS-SRTP handshakes (NewDTLSCertificate).
	Certificate *tls.Certificate
	// Handshakes limits DTLS handshakes across all calls (nil: a default
	// limiter owned by this relay).
	Handshakes *HandshakeLimiter
	// HandshakeTimeout bounds one DTLS handshake (default 10 s).
	HandshakeTimeout time.Duration
	// Batch is the number of datagrams per recvmmsg/sendmmsg on RTP
	// sockets (default 8; RTCP sockets use 2). Each reader goroutine holds
	// about 3 KiB of buffers per batch slot.
	Batch int
	Log   *slog.Logger
}

// Relay creates calls. It holds no per-call state itself.
type Relay struct {
	cfg Config
}

// NewRelay checks cfg and fills defaults.
func NewRelay(cfg Config) (*Relay, error) {
	if !cfg.Addr.IsValid() || cfg.Ports == nil || cfg.Pinholes == nil {
		return nil, errors.New("media: relay needs Addr, Ports and Pinholes")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 8
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Handshakes == nil {
		cfg.Handshakes = NewHandshakeLimiter(64, 50, 100)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Relay{cfg: cfg}, nil
}

// Side names one leg of a call: A is the caller's, B the callee's.
type Side int

// The two legs.
const (
	A Side = 0
	B Side = 1
)

func (s Side) String() string { return [2]string{"a", "b"}[s&1] }

// SDESKeys are the SDES keys of one leg: Send is the attribute the box put
// in its SDP toward the peer, Recv the one the peer put in its SDP.
type SDESKeys struct {
	Send, Recv sdes.Crypto
}

// DTLSParams configure DTLS-SRTP on one leg.
type DTLSParams struct {
	// Fingerprint is the peer's a=fingerprint; the handshake fails unless
	// the peer's certificate matches it.
	Fingerprint Fingerprint
	// Client makes the box the DTLS client (it answered a=setup:active).
	Client bool
}

// Peer is the far end of one leg as negotiated in SDP.
type Peer struct {
	Addr     netip.Addr // unspecified: on hold, nothing flows
	RTPPort  uint16
	RTCPPort uint16 // 0: RTPPort+1 (or RTPPort with RTCPMux)
	RTCPMux  bool
	SDES     *SDESKeys   // SRTP with SDES keys
	DTLS     *DTLSParams // DTLS-SRTP; exclusive with SDES
}

// PeerFrom turns a parsed SDP into a Peer without crypto; the caller adds
// SDES or DTLS parameters after negotiating them.
func PeerFrom(r Remote) Peer {
	return Peer{Addr: r.Addr, RTPPort: r.RTPPort, RTCPPort: r.RTCPPort, RTCPMux: r.RTCPMux}
}

// Call is the media of one call: two legs with a local port pair each.
type Call struct {
	r    *Relay
	id   string
	legs [2]*leg

	mu       sync.Mutex // serialises SetPeer and Close
	closed   bool
	pinholes map[netfw.Pinhole]bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	ctx      context.Context
}

// NewCall binds two port pairs and starts reading them; nothing is
// forwarded and no pinhole is open until SetPeer. Always Close the call.
func (r *Relay) NewCall(id string) (*Call, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Call{r: r, id: id, pinholes: map[netfw.Pinhole]bool{}, ctx: ctx, cancel: cancel}
	for s := range c.legs {
		l, err := r.bindLeg(c, Side(s))
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("media: call %s leg %s: %w", id, Side(s), err)
		}
		c.legs[s] = l
	}
	for _, l := range c.legs {
		c.wg.Add(2)
		go l.serve(l.rtp, false)
		go l.serve(l.rtcp, true)
	}
	return c, nil
}

// LocalPort is the box's RTP port for side (RTCP is +1); put it in the SDP
// sent to that side's peer.
func (c *Call) LocalPort(s Side) uint16 { return c.legs[s].port }

// ID returns the call's identifier.
func (c *Call) ID() string { return c.id }

// SetPeer configures (or, on re-INVITE, reconfigures) one leg: it opens
// the pinholes for the new peer address before accepting its packets and
// closes the ones no longer needed. On error the leg is unchanged.
func (c *Call) SetPeer(ctx context.Context, s Side, p Peer) error {
	if p.SDES != nil && p.DTLS != nil {
		return errors.New("media: SDES and DTLS on one leg")
	}
	if p.DTLS != nil && c.r.cfg.Certificate == nil {
		return errors.New("media: DTLS-SRTP leg but relay has no certificate")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("media: call closed")
	}
	l := c.legs[s]
	st := &legState{mux: p.RTCPMux}
	active := p.Addr.IsValid() && !p.Addr.IsUnspecified() && p.RTPPort != 0
	want := map[netfw.Pinhole]bool{}
	if active {
		st.addr = p.Addr.Unmap()
		rtcp := p.RTCPPort
		if rtcp == 0 {
			rtcp = p.RTPPort + 1
		}
		if p.RTCPMux {
			rtcp = p.RTPPort
		}
		st.rtpDst = udpAddr(netip.AddrPortFrom(st.addr, p.RTPPort))
		st.rtcpDst = udpAddr(netip.AddrPortFrom(st.addr, rtcp))
		want[netfw.Pinhole{Remote: st.addr, LocalPort: l.port, Timeout: c.r.cfg.PinholeTimeout}] = true
		if !p.RTCPMux {
			want[netfw.Pinhole{Remote: st.addr, LocalPort: l.port + 1, Timeout: c.r.cfg.PinholeTimeout}] = true
		}
	}
	switch {
	case p.SDES != nil:
		cs, err := sdesCrypto(*p.SDES)
		if err != nil {
			return err
		}
		st.crypto = cs
		st.secure = true
	case p.DTLS != nil:
		st.secure = true
	}
	// Open first so a failure leaves the old state intact.
	var opened []netfw.Pinhole
	for ph := range want {
		if c.pinholes[ph] {
			continue
		}
		if err := c.r.cfg.Pinholes.OpenPinhole(ctx, ph); err != nil {
			for _, o := range opened {
				c.closePinhole(o)
			}
			return fmt.Errorf("media: call %s: open pinhole %s:%d: %w", c.id, ph.Remote, ph.LocalPort, err)
		}
		opened = append(opened, ph)
	}
	for _, ph := range opened {
		c.pinholes[ph] = true
	}
	// Close holes of the previous peer of this leg.
	for ph := range c.pinholes {
		if !want[ph] && (ph.LocalPort == l.port || ph.LocalPort == l.port+1) {
			c.closePinhole(ph)
		}
	}
	var d *dtlsLeg
	if p.DTLS != nil && active {
		// Set before the state is published: readers use st.dtls unlocked.
		d = newDTLSLeg(l, st, *p.DTLS)
		st.dtls = d
	}
	old := l.state.Swap(st)
	if old != nil && old.dtls != nil {
		old.dtls.close()
	}
	if d != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			d.run(c.ctx)
		}()
	}
	return nil
}

// closePinhole is called with c.mu held. The call may be ending because its
// context was cancelled, so closing uses a fresh bounded context.
func (c *Call) closePinhole(ph netfw.Pinhole) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.r.cfg.Pinholes.ClosePinhole(ctx, ph); err != nil {
		// The firewall timeout removes it eventually; say so loudly.
		c.r.cfg.Log.Warn("media: close pinhole", "call", c.id, "remote", ph.Remote, "port", ph.LocalPort, "err", err)
	}
	delete(c.pinholes, ph)
}

// Close stops the relay of this call, closes its pinholes and releases its
// ports. It is safe to call more than once.
func (c *Call) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cancel()
	for _, l := range c.legs {
		if l == nil {
			continue
		}
		if st := l.state.Load(); st != nil && st.dtls != nil {
			st.dtls.close()
		}
		l.rtp.conn.Close()
		l.rtcp.conn.Close()
	}
	for ph := range c.pinholes {
		c.closePinhole(ph)
	}
	c.mu.Unlock()
	c.wg.Wait()
	var errs []error
	for _, l := range c.legs {
		if l != nil {
			errs = append(errs, c.r.cfg.Ports.Release(l.port))
		}
	}
	return errors.Join(errs...)
}

// Pinholes returns the pinholes currently open for the call.
func (c *Call) Pinholes() []netfw.Pinhole {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]netfw.Pinhole, 0, len(c.pinholes))
	for ph := range c.pinholes {
		out = append(out, ph)
	}
	return out
}

// Secured reports whether side's leg carries SRTP with keys in place (SDES
// at once, DTLS once its handshake finished).
func (c *Call) Secured(s Side) bool {
	st := c.legs[s].state.Load()
	return st != nil && st.secure && st.keys() != nil
}

// DTLSDone returns a channel closed when side's DTLS handshake ends, and
// the handshake's error once it is closed (nil channel: no DTLS on side).
func (c *Call) DTLSDone(s Side) (<-chan struct{}, func() error) {
	st := c.legs[s].state.Load()
	if st == nil || st.dtls == nil {
		return nil, func() error { return nil }
	}
	return st.dtls.done, func() error { return st.dtls.err }
}

// legState is replaced as a whole on SetPeer; readers load it atomically.
type legState struct {
	addr            netip.Addr // the only accepted source address
	rtpDst, rtcpDst *net.UDPAddr
	mux             bool
	secure          bool
	crypto          *legCrypto // nil while DTLS is pending; never nil for SDES
	dtls            *dtlsLeg

	// Latched source ports (symmetric RTP): the first accepted packet fixes
	// the port; later packets from other ports are dropped.
	latchRTP, latchRTCP atomic.Pointer[net.UDPAddr]
	cryptoDTLS          atomic.Pointer[legCrypto]
}

func (st *legState) keys() *legCrypto {
	if st.crypto != nil {
		return st.crypto
	}
	return st.cryptoDTLS.Load()
}

// dst returns where packets to this leg's peer go.
func (st *legState) dst(rtcp bool) *net.UDPAddr {
	if rtcp && !st.mux {
		if a := st.latchRTCP.Load(); a != nil {
			return a
		}
		return st.rtcpDst
	}
	if a := st.latchRTP.Load(); a != nil {
		return a
	}
	if rtcp {
		return st.rtcpDst
	}
	return st.rtpDst
}

func udpAddr(ap netip.AddrPort) *net.UDPAddr { return net.UDPAddrFromAddrPort(ap) }

// batchConn is the recvmmsg/sendmmsg API common to ipv4 and ipv6.
type batchConn interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

type socket struct {
	conn *net.UDPConn
	pc   batchConn
}

type leg struct {
	call  *Call
	side  Side
	port  uint16
	rtp   *socket
	rtcp  *socket
	state atomic.Pointer[legState]
	stats legStats
}

func (l *leg) other() *leg { return l.call.legs[1-l.side] }

func (r *Relay) bindLeg(c *Call, s Side) (*leg, error) {
	var lastErr error
	for range 8 {
		port, err := r.cfg.Ports.Allocate()
		if err != nil {
			return nil, err
		}
		rtp, err := r.listen(port)
		if err != nil {
			lastErr = err
			r.cfg.Ports.Release(port)
			continue
		}
		rtcp, err := r.listen(port + 1)
		if err != nil {
			lastErr = err
			rtp.conn.Close()
			r.cfg.Ports.Release(port)
			continue
		}
		return &leg{call: c, side: s, port: port, rtp: rtp, rtcp: rtcp}, nil
	}
	return nil, fmt.Errorf("bind RTP ports: %w", lastErr)
}

func (r *Relay) listen(port uint16) (*socket, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.cfg.Addr, port)))
	if err != nil {
		return nil, err
	}
	// A burst of a few hundred packets must not overflow between batches.
	_ = conn.SetReadBuffer(1 << 20)
	_ = conn.SetWriteBuffer(1 << 20)
	s := &socket{conn: conn}
	if r.cfg.Addr.Is4() {
		s.pc = ipv4.NewPacketConn(conn)
	} else {
		s.pc = ipv6.NewPacketConn(conn)
	}
	return s, nil
}

// maxPacket bounds a media datagram; anything that fills the buffer is
// treated as truncated and dropped.
const maxPacket = 1500

// batch is one reader goroutine's buffers, reused for every recvmmsg.
type batch struct {
	in        []ipv4.Message
	out       [2][]ipv4.Message // per destination socket: RTP, RTCP
	outN      [2]int
	outBufs   [][]byte // allocated on first use: plain↔plain never needs them
	scratch   []byte
	nextOut   int
	lastError time.Time
}

func newBatch(n int) *batch {
	b := &batch{in: make([]ipv4.Message, n), outBufs: make([][]byte, n), scratch: make([]byte, maxPacket+64)}
	for i := range b.in {
		b.in[i].Buffers = [][]byte{make([]byte, maxPacket+1)}
	}
	for k := range b.out {
		b.out[k] = make([]ipv4.Message, n)
		for i := range b.out[k] {
			b.out[k][i].Buffers = make([][]byte, 1)
		}
	}
	return b
}

// serve reads one socket of leg l until it is closed and forwards to the
// other leg. rtcpSock is true for the odd (RTCP) port.
func (l *leg) serve(s *socket, rtcpSock bool) {
	defer l.call.wg.Done()
	n := l.call.r.cfg.Batch
	if rtcpSock {
		n = 2 // RTCP is a few packets per second
	}
	b := newBatch(n)
	w := newWorker()
	for {
		n, err := s.pc.ReadBatch(b.in, 0)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient (e.g. ICMP-induced ECONNREFUSED): keep serving.
			l.stats.readErrors.Add(1)
			continue
		}
		st := l.state.Load()
		o := l.other()
		ost := o.state.Load()
		b.outN = [2]int{}
		b.nextOut = 0
		for i := range n {
			m := &b.in[i]
			l.handle(w, b, st, ost, m.Buffers[0][:m.N], m.Addr, rtcpSock)
		}
		if b.outN[0] > 0 {
			o.write(o.rtp, b.out[0][:b.outN[0]])
		}
		if b.outN[1] > 0 {
			sock := o.rtcp
			if ost != nil && ost.mux {
				sock = o.rtp
			}
			o.write(sock, b.out[1][:b.outN[1]])
		}
	}
}

func (l *leg) write(s *socket, ms []ipv4.Message) {
	for len(ms) > 0 {
		n, err := s.pc.WriteBatch(ms, 0)
		if err != nil {
			l.stats.writeErrors.Add(uint64(len(ms)))
			return
		}
		l.stats.sent.Add(uint64(n))
		ms = ms[n:]
	}
}

// RFC 7983 demultiplexing on the first byte.
func classify(b []byte) (kind int) {
	if len(b) == 0 {
		return kindOther
	}
	switch c := b[0]; {
	case c <= 3:
		return kindSTUN
	case c >= 20 && c <= 63:
		return kindDTLS
	case c >= 128 && c <= 191:
		return kindRTP
	}
	return kindOther
}

const (
	kindOther = iota
	kindSTUN
	kindDTLS
	kindRTP
)

// isRTCP tells RTCP from RTP on a muxed port (RFC 5761 §4: PT 192–223).
func isRTCP(b []byte) bool { return len(b) > 1 && b[1] >= 192 && b[1] <= 223 }

// outBuf returns the next output buffer of the batch.
func (b *batch) outBuf() []byte {
	if b.outBufs[b.nextOut] == nil {
		b.outBufs[b.nextOut] = make([]byte, maxPacket+64)
	}
	return b.outBufs[b.nextOut][:0]
}

func (l *leg) handle(w *worker, b *batch, st, ost *legState, pkt []byte, from net.Addr, rtcpSock bool) {
	ua, ok := from.(*net.UDPAddr)
	if !ok || st == nil || st.addr != ua.AddrPort().Addr().Unmap() {
		l.stats.droppedSource.Add(1)
		return
	}
	if len(pkt) > maxPacket {
		l.stats.droppedMalformed.Add(1)
		return
	}
	switch classify(pkt) {
	case kindDTLS:
		if st.dtls != nil && !rtcpSock {
			st.dtls.deliver(pkt, ua)
			return
		}
		l.stats.droppedMalformed.Add(1)
		return
	case kindRTP:
	default:
		// STUN (no ICE here) and anything else.
		l.stats.droppedMalformed.Add(1)
		return
	}
	rtcp := rtcpSock || (st.mux && isRTCP(pkt))
	if rtcpSock && st.mux {
		l.stats.droppedMalformed.Add(1)
		return
	}
	latch := &st.latchRTP
	if rtcpSock {
		latch = &st.latchRTCP
	}
	if a := latch.Load(); a != nil && a.Port != ua.Port {
		l.stats.droppedSource.Add(1)
		return
	}
	plain := pkt
	if st.secure {
		keys := st.keys()
		if keys == nil { // DTLS not finished yet
			l.stats.droppedCrypto.Add(1)
			return
		}
		var err error
		if rtcp {
			plain, err = keys.inRTCP.decryptRTCP(b.scratch[:0], pkt)
		} else {
			plain, err = keys.inRTP.decryptRTP(b.scratch[:0], pkt, &w.hdr)
		}
		if err != nil {
			// Bad tag, replay, or garbage: never forwarded, never latched.
			l.stats.droppedCrypto.Add(1)
			return
		}
	} else if (!rtcp && len(pkt) < 12) || len(pkt) < 8 {
		l.stats.droppedMalformed.Add(1)
		return
	}
	if latch.Load() == nil {
		latch.CompareAndSwap(nil, ua)
	}
	l.stats.received.Add(1)
	l.stats.bytes.Add(uint64(len(pkt)))
	if rtcp {
		l.stats.noteRTCP(plain)
	}
	if ost == nil || ost.rtpDst == nil {
		l.stats.droppedNoPeer.Add(1)
		return
	}
	out := plain
	if ost.secure {
		keys := ost.keys()
		if keys == nil {
			l.stats.droppedNoPeer.Add(1)
			return
		}
		buf := b.outBuf()
		var err error
		if rtcp {
			out, err = keys.outRTCP.encryptRTCP(buf, plain)
		} else {
			out, err = keys.outRTP.encryptRTP(buf, plain, &w.hdr)
		}
		if err != nil {
			l.stats.droppedMalformed.Add(1)
			return
		}
	} else if !st.secure {
		// Plain to plain: forward the received bytes; they stay valid
		// until the batch is written.
		out = pkt
	} else {
		// Decrypted into scratch, which the next packet reuses: copy.
		out = append(b.outBuf(), plain...)
	}
	b.nextOut++
	k := 0
	if rtcp {
		k = 1
	}
	m := &b.out[k][b.outN[k]]
	m.Buffers[0] = out
	m.Addr = ost.dst(rtcp)
	b.outN[k]++
}
