package media

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Pinholes opens and closes per-call firewall holes. The control-socket
// client of PID 1 (init/control.Client) satisfies it.
type Pinholes interface {
	OpenPinhole(ctx context.Context, p fwspec.Pinhole) error
	ClosePinhole(ctx context.Context, p fwspec.Pinhole) error
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
	// HandshakeTimeout bounds one DTLS handshake (default 10 s) from its
	// start: as DTLS client when the box's SDP answer has been sent (the
	// B2BUA calls Call.AnswerSent; the box's own offers are answered
	// already), as server when the peer's first record arrives. A server
	// whose peer sends nothing gives up HandshakeTimeout after its answer
	// was sent.
	HandshakeTimeout time.Duration
	// HandshakeWait bounds how long a DTLS association waits for its
	// handshake to start at all, e.g. while the callee rings and the
	// caller's answer is not sent yet (default 5 min). Waiting holds no
	// handshake slot.
	HandshakeWait time.Duration
	// Batch is the number of datagrams per recvmmsg/sendmmsg (default
	// 32). Each loop holds about 3 KiB of buffers per batch slot; calls
	// hold none.
	Batch int
	// Loops is the number of reactor loops (epoll instances, one
	// goroutine each) that serve all calls (default GOMAXPROCS).
	Loops int
	Log   *slog.Logger
}

// Relay creates calls and owns the reactor loops that serve them. The
// loops run only while there are calls.
type Relay struct {
	cfg Config

	mu    sync.Mutex
	loops []*loop
	spare []loopBufs // buffers of stopped loops
	calls int

	// Media totals for metrics, read at scrape time from the legs'
	// own counters: live calls are summed when asked, a closed call's
	// final figures are folded into done (the packet path adds nothing).
	live map[*Call]struct{}
	done Totals
}

// NewRelay checks cfg and fills defaults.
func NewRelay(cfg Config) (*Relay, error) {
	if !cfg.Addr.IsValid() || cfg.Ports == nil || cfg.Pinholes == nil {
		return nil, errors.New("media: relay needs Addr, Ports and Pinholes")
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 32
	}
	if cfg.Loops <= 0 {
		cfg.Loops = runtime.GOMAXPROCS(0)
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.HandshakeWait <= 0 {
		cfg.HandshakeWait = 5 * time.Minute
	}
	if cfg.Handshakes == nil {
		cfg.Handshakes = NewHandshakeLimiter(64, 50, 100)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Relay{cfg: cfg}, nil
}

// acquireLoop starts the loops for the first call and picks the one
// serving the fewest calls.
func (r *Relay) acquireLoop() (*loop, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == 0 {
		for range r.cfg.Loops {
			var bufs loopBufs
			if n := len(r.spare); n > 0 {
				bufs, r.spare = r.spare[n-1], r.spare[:n-1]
			} else {
				bufs = newLoopBufs(r.cfg.Batch)
			}
			lp, err := newLoop(bufs, r.cfg.Addr.Is6())
			if err != nil {
				r.spare = append(r.spare, bufs)
				r.stopLoops()
				return nil, err
			}
			r.loops = append(r.loops, lp)
		}
	}
	best := r.loops[0]
	for _, lp := range r.loops[1:] {
		if lp.calls < best.calls {
			best = lp
		}
	}
	best.calls++
	r.calls++
	return best, nil
}

// releaseLoop stops the loops after the last call.
func (r *Relay) releaseLoop(lp *loop) {
	r.mu.Lock()
	defer r.mu.Unlock()
	lp.calls--
	r.calls--
	if r.calls == 0 {
		r.stopLoops()
	}
}

func (r *Relay) stopLoops() {
	for _, lp := range r.loops {
		r.spare = append(r.spare, lp.stop())
	}
	r.loops = nil
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
	// UDPTL carries T.38 fax (FaxPeer): datagrams are relayed as they
	// are, on the RTP port alone, only to a peer that is UDPTL too. It
	// excludes SDES and DTLS (a T.38 stream is never SRTP).
	UDPTL bool

	// awaitAnswer: a new DTLS association answers the peer's offer; the
	// box's answer is not sent yet (Answer, then AnswerSent).
	awaitAnswer bool
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
	loop *loop // serves all four sockets

	mu       sync.Mutex // serialises SetPeer and Close
	closed   bool
	pinholes map[fwspec.Pinhole]bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	ctx      context.Context

	dtlsFailed atomic.Pointer[func(Side, error)]
	tap        atomic.Pointer[tapHolder] // call recording (tap.go); nil: none

	// withheld sides carry nothing until Release; pending is the last
	// peer SetPeer was given meanwhile (c.mu).
	withheld [2]bool
	pending  [2]*Peer
}

// NewCall binds two port pairs and hands them to a reactor loop; nothing
// is forwarded and no pinhole is open until SetPeer. Always Close the call.
func (r *Relay) NewCall(id string) (*Call, error) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Call{r: r, id: id, pinholes: map[fwspec.Pinhole]bool{}, ctx: ctx, cancel: cancel}
	unbind := func() {
		cancel()
		for _, l := range c.legs {
			if l != nil {
				l.rtp.close()
				l.rtcp.close()
				r.cfg.Ports.Release(l.port)
			}
		}
	}
	for s := range c.legs {
		l, err := r.bindLeg(c, Side(s))
		if err != nil {
			unbind()
			return nil, fmt.Errorf("media: call %s leg %s: %w", id, Side(s), err)
		}
		c.legs[s] = l
	}
	lp, err := r.acquireLoop()
	if err != nil {
		unbind()
		return nil, fmt.Errorf("media: call %s: %w", id, err)
	}
	lp.do(func(lp *loop) {
		err = lp.add(c.legs[0].rtp, c.legs[0].rtcp, c.legs[1].rtp, c.legs[1].rtcp)
	})
	if err != nil {
		unbind()
		r.releaseLoop(lp)
		return nil, fmt.Errorf("media: call %s: %w", id, err)
	}
	c.loop = lp
	r.mu.Lock()
	if r.live == nil {
		r.live = map[*Call]struct{}{}
	}
	r.live[c] = struct{}{}
	r.mu.Unlock()
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
	if p.UDPTL && (p.SDES != nil || p.DTLS != nil) {
		return errors.New("media: UDPTL with SRTP on one leg")
	}
	if p.UDPTL {
		p.RTCPMux = true // one port: no RTCP
	}
	if p.DTLS != nil && c.r.cfg.Certificate == nil {
		return errors.New("media: DTLS-SRTP leg but relay has no certificate")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("media: call closed")
	}
	if c.withheld[s] {
		c.pending[s] = &p
		return nil
	}
	l := c.legs[s]
	st := &legState{mux: p.RTCPMux, udptl: p.UDPTL}
	active := p.Addr.IsValid() && !p.Addr.IsUnspecified() && p.RTPPort != 0
	prev := l.state.Load()
	want := map[fwspec.Pinhole]bool{}
	if active {
		st.addr = p.Addr.Unmap()
		if c.r.cfg.Addr.Is4() && !st.addr.Is4() {
			return fmt.Errorf("media: call %s: IPv6 peer %s on an IPv4 media address", c.id, st.addr)
		}
		rtcp := p.RTCPPort
		if rtcp == 0 {
			rtcp = p.RTPPort + 1
		}
		if p.RTCPMux {
			rtcp = p.RTPPort
		}
		st.rtpDst = netip.AddrPortFrom(st.addr, p.RTPPort)
		st.rtcpDst = netip.AddrPortFrom(st.addr, rtcp)
		want[fwspec.Pinhole{Remote: st.addr, LocalPort: l.port, Timeout: c.r.cfg.PinholeTimeout}] = true
		if !p.RTCPMux {
			want[fwspec.Pinhole{Remote: st.addr, LocalPort: l.port + 1, Timeout: c.r.cfg.PinholeTimeout}] = true
		}
	}
	switch {
	case p.SDES != nil:
		cs, err := sdesCrypto(*p.SDES)
		if err != nil {
			return err
		}
		cs.continueFrom(l.sdes, *p.SDES)
		st.crypto = cs
		st.secure = true
	case p.DTLS != nil:
		st.secure = true
	}
	st.refuse = l.refuseFor(c.r.cfg.Addr, prev, st)
	// Open first so a failure leaves the old state intact.
	var opened []fwspec.Pinhole
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
	// The DTLS association: kept when the re-negotiation allows (RFC 8842
	// §5), else a new handshake. While the leg is on hold (no address) the
	// association is kept for the resume.
	var start *dtlsLeg
	cur := l.assoc
	switch {
	case p.DTLS == nil:
		l.assoc = nil
		if cur != nil {
			cur.close()
			if pr := cur.prev.Load(); pr != nil {
				pr.close()
			}
		}
	case !active:
	case cur != nil && cur.keeps(*p.DTLS, st.rtpDst):
		st.dtls = cur
	default:
		start = newDTLSLeg(l, *p.DTLS, st.rtpDst, p.awaitAnswer)
		if cur != nil {
			// The newest association with keys carries media until the
			// new one has its own, if the peer is the same host (packets
			// from elsewhere are dropped anyway); one without keys yet is
			// dropped.
			prev := cur
			if cur.keys.Load() == nil {
				prev = cur.prev.Load()
				cur.close()
			}
			switch {
			case prev == nil:
			case !prev.closed() && prev.dst.Addr() == st.addr:
				start.prev.Store(prev)
			default:
				prev.close()
			}
		}
		l.assoc = start
		live := l.assocs[:0]
		for _, a := range l.assocs {
			if !a.closed() {
				live = append(live, a)
			}
		}
		l.assocs = append(live, start)
		// Set before the state is published: readers use st.dtls unlocked.
		st.dtls = start
	}
	l.refused = st.refuse
	l.sdes = nil
	if p.SDES != nil {
		l.sdes = &sdesState{keys: *p.SDES, crypto: st.crypto}
	}
	l.state.Store(st)
	if start != nil {
		l.stats.handshakes.Add(1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			start.run(c.ctx)
		}()
	}
	return nil
}

// Withhold makes side carry nothing until Release: SetPeer (also through
// Answer and Answered) only records the peer, so no pinhole opens, no
// packet from it is accepted and none is sent to it. The B2BUA withholds
// a leg whose peer address is not proven yet (a UDP INVITE identified by
// its source address alone may come from a forged source, with an SDP
// address of the forger's choice).
func (c *Call) Withhold(s Side) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.withheld[s] = true
}

// Release ends Withhold: the last peer given to SetPeer meanwhile takes
// effect. A DTLS association set up meanwhile starts its handshake only
// now: call AnswerSent again after Release.
func (c *Call) Release(ctx context.Context, s Side) error {
	c.mu.Lock()
	p := c.pending[s]
	c.withheld[s], c.pending[s] = false, nil
	c.mu.Unlock()
	if p == nil {
		return nil
	}
	return c.SetPeer(ctx, s, *p)
}

// Withheld reports whether side waits for Release.
func (c *Call) Withheld(s Side) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.withheld[s]
}

// AnswerSent tells the relay that the box's SDP answer to side's offer
// (Answer) has been sent, in a 18x or 2xx: as DTLS client the box starts
// its handshake only now, since many phones ignore a ClientHello that
// comes before the answer (RFC 5763 §5), and a callee that rings longer
// than the handshake timeout would otherwise leave the leg without keys.
func (c *Call) AnswerSent(s Side) { c.answerSent(s, true) }

// EarlyAnswerSent is AnswerSent for an answer in a provisional response
// (early media): the handshake starts, and if the peer stays silent it is
// tried once more after AnswerSent (phones that do DTLS only after the
// 2xx).
func (c *Call) EarlyAnswerSent(s Side) { c.answerSent(s, false) }

func (c *Call) answerSent(s Side, final bool) {
	c.mu.Lock()
	d := c.legs[s].assoc
	c.mu.Unlock()
	if d != nil {
		d.answerSent(final)
	}
}

// RenewDTLS makes side's next DTLS SetPeer start a new association even
// with the same peer fingerprint, roles and address: for a new dialog
// taking over the leg (INVITE with Replaces, attended transfer), whose
// offer is an initial one (RFC 8842 §5). The current association keeps
// carrying media until then, but is no longer answered or re-used.
func (c *Call) RenewDTLS(s Side) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.legs[s]
	if d := l.assoc; d != nil {
		l.assoc = nil
		d.close()
		if p := d.prev.Load(); p != nil {
			p.close()
		}
	}
}

// OnDTLSFailure sets f to be called when a leg's current DTLS handshake
// fails (not when a newer negotiation replaced it): the leg then carries
// nothing, and the B2BUA usually ends the call. f runs on the handshake's
// goroutine and must not call Close itself (Close waits for it).
func (c *Call) OnDTLSFailure(f func(Side, error)) { c.dtlsFailed.Store(&f) }

// DTLSRole reports whether side's leg has a DTLS association (running or
// established) and whether the box is its client: a re-offer keeps the role
// with a=setup:active (client) or passive, RFC 8842 §5.
func (c *Call) DTLSRole(s Side) (client, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.legs[s].assoc; d != nil {
		return d.params.Client, true
	}
	return false, false
}

// dtlsRoleFor is the box's role in an answer to a DTLS offer with setup
// and fingerprint fp on side: the role the offer imposes, or for actpass
// the current association's role when it stays with the same peer
// certificate (so hold/resume keeps the association), else active.
func (c *Call) dtlsRoleFor(s Side, setup string, fp Fingerprint) bool {
	switch setup {
	case "active":
		return false
	case "passive":
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if d := c.legs[s].assoc; d != nil && d.params.Fingerprint.Hash == fp.Hash && bytes.Equal(d.params.Fingerprint.Value, fp.Value) {
		return d.params.Client
	}
	return true
}

// closePinhole is called with c.mu held. The call may be ending because its
// context was cancelled, so closing uses a fresh bounded context.
func (c *Call) closePinhole(ph fwspec.Pinhole) {
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
		for _, d := range l.assocs {
			d.close()
		}
	}
	// After this the loop never touches the call again: packets in
	// flight are dropped with the sockets.
	c.loop.do(func(lp *loop) {
		lp.remove(c.legs[0].rtp, c.legs[0].rtcp, c.legs[1].rtp, c.legs[1].rtcp)
	})
	for ph := range c.pinholes {
		c.closePinhole(ph)
	}
	c.mu.Unlock()
	c.wg.Wait()
	c.r.retire(c) // the loop no longer touches the legs: their figures are final
	c.r.releaseLoop(c.loop)
	var errs []error
	for _, l := range c.legs {
		errs = append(errs, c.r.cfg.Ports.Release(l.port))
	}
	return errors.Join(errs...)
}

// Pinholes returns the pinholes currently open for the call.
func (c *Call) Pinholes() []fwspec.Pinhole {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]fwspec.Pinhole, 0, len(c.pinholes))
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

// legState is replaced as a whole on SetPeer; the loop loads it
// atomically once per batch.
type legState struct {
	addr            netip.Addr // the only accepted source address
	rtpDst, rtcpDst netip.AddrPort
	mux             bool
	udptl           bool // T.38: datagrams relayed verbatim (relayUDPTL)
	secure          bool
	crypto          *legCrypto // SDES; nil for DTLS
	dtls            *dtlsLeg   // the DTLS association whose keys the leg uses

	// Latched source ports (symmetric RTP): the first accepted packet fixes
	// the port; later packets from other ports are dropped. 0: not yet.
	latchRTP, latchRTCP atomic.Uint32

	// refuse are sources never accepted even from addr: the box's own
	// sockets the leg left (refuseFor).
	refuse []netip.AddrPort
}

// maxRefused bounds a leg's refused sources (a call hands over a few
// times at most; the oldest are forgotten first).
const maxRefused = 8

// refuseFor is the refused sources of st, which replaces prev on a leg of
// a relay on box: when the leg leaves a peer on the box's own address (a
// media application's socket, handed over to a phone or trunk), a packet
// of that socket still queued, or sent late, must not be taken for the
// new peer's first packet: if the new peer shares the box's address it
// would pass the address check and latch the leg to the application for
// good. The new peer's own endpoints are never refused (an application
// taking the leg back on a reused port). Call.mu held.
func (l *leg) refuseFor(box netip.Addr, prev, st *legState) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, maxRefused)
	add := func(ap netip.AddrPort) {
		if !ap.IsValid() || ap == st.rtpDst || ap == st.rtcpDst || slices.Contains(out, ap) {
			return
		}
		if len(out) == maxRefused {
			out = append(out[:0], out[1:]...)
		}
		out = append(out, ap)
	}
	for _, ap := range l.refused {
		add(ap)
	}
	if prev != nil && prev.addr == box.Unmap() && (prev.rtpDst != st.rtpDst || prev.addr != st.addr) {
		add(prev.rtpDst)
		add(prev.rtcpDst)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// refused reports whether from is one of st's refused sources.
func (st *legState) refused(from netip.AddrPort) bool {
	for _, ap := range st.refuse {
		if ap == from {
			return true
		}
	}
	return false
}

// keys are the leg's SRTP keys (nil while DTLS is pending).
func (st *legState) keys() *legCrypto {
	if st.crypto != nil {
		return st.crypto
	}
	if st.dtls != nil {
		return st.dtls.sendKeys()
	}
	return nil
}

// dst returns where packets to this leg's peer go.
func (st *legState) dst(rtcp bool) netip.AddrPort {
	if rtcp && !st.mux {
		if p := st.latchRTCP.Load(); p != 0 {
			return netip.AddrPortFrom(st.addr, uint16(p))
		}
		return st.rtcpDst
	}
	if p := st.latchRTP.Load(); p != 0 {
		return netip.AddrPortFrom(st.addr, uint16(p))
	}
	if rtcp {
		return st.rtcpDst
	}
	return st.rtpDst
}

type leg struct {
	call   *Call
	side   Side
	port   uint16
	rtp    *socket
	rtcp   *socket
	state  atomic.Pointer[legState]
	stats  legStats
	assoc  *dtlsLeg   // current DTLS association (Call.mu); may outlive state
	assocs []*dtlsLeg // every association not yet closed (Call.mu): Close ends them

	injecting atomic.Pointer[Injection] // the box's own audio plays to this leg (inject.go)
	inj       *injector                 // its RTP stream, made by the first Inject (Call.mu)
	refused   []netip.AddrPort          // sources the leg never accepts again (Call.mu; refuseFor)
	sdes      *sdesState                // the leg's SDES keys and contexts (Call.mu); nil: none
	// fwdTS is the RTP timestamp of the last packet relayed to this leg,
	// with bit 32 set; an injection takes (and clears) it.
	fwdTS atomic.Uint64
}

func (l *leg) other() *leg { return l.call.legs[1-l.side] }

func (r *Relay) bindLeg(c *Call, s Side) (*leg, error) {
	var lastErr error
	for range 8 {
		port, err := r.cfg.Ports.Allocate()
		if err != nil {
			return nil, err
		}
		rtp, err := listenUDP(r.cfg.Addr, port)
		if err != nil {
			lastErr = err
			r.cfg.Ports.Release(port)
			continue
		}
		rtcp, err := listenUDP(r.cfg.Addr, port+1)
		if err != nil {
			lastErr = err
			rtp.close()
			r.cfg.Ports.Release(port)
			continue
		}
		l := &leg{call: c, side: s, port: port, rtp: rtp, rtcp: rtcp}
		rtp.leg, rtcp.leg, rtcp.rtcp = l, l, true
		return l, nil
	}
	return nil, fmt.Errorf("bind RTP ports: %w", lastErr)
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

// handle checks one datagram that arrived on leg l (slot is its index in
// the received batch) and queues what goes to the other leg in w.tx. pkt
// stays valid until the batch is flushed.
func (l *leg) handle(w *worker, slot int, st, ost *legState, pkt []byte, from netip.AddrPort, rtcpSock bool) {
	if st == nil || from.Addr() != st.addr || from.Port() == 0 || (st.refuse != nil && st.refused(from)) {
		l.stats.droppedSource.Add(1)
		return
	}
	if len(pkt) > maxPacket {
		l.stats.droppedMalformed.Add(1)
		return
	}
	if st.udptl {
		l.relayUDPTL(w, st, ost, pkt, from, rtcpSock)
		return
	}
	switch classify(pkt) {
	case kindDTLS:
		if st.dtls != nil && !rtcpSock {
			st.dtls.deliver(pkt, from)
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
	if p := latch.Load(); p != 0 && uint16(p) != from.Port() {
		l.stats.droppedSource.Add(1)
		return
	}
	// While the box plays to the other leg nothing of this one reaches it.
	forward := ost != nil && ost.rtpDst.IsValid() && !ost.udptl && !l.other().injectingTo()
	plain := pkt
	if st.secure {
		keys := st.keys()
		if keys == nil { // DTLS not finished yet
			l.stats.droppedCrypto.Add(1)
			return
		}
		// Decrypt straight into the output slot when it goes out plain.
		dst := w.scratch[:0]
		if forward && !ost.secure {
			dst = w.outBuf(slot)
		}
		var err error
		if rtcp {
			plain, err = keys.inRTCP.decryptRTCP(dst, pkt)
		} else {
			plain, err = keys.inRTP.decryptRTP(dst, pkt, &w.hdr)
		}
		if err != nil && st.dtls != nil {
			// Sent with the replaced association's keys before the peer
			// switched: still valid until the first packet under the new.
			if old := st.dtls.oldKeys(); old != nil && old != keys {
				if rtcp {
					plain, err = old.inRTCP.decryptRTCP(dst, pkt)
				} else {
					plain, err = old.inRTP.decryptRTP(dst, pkt, &w.hdr)
				}
			}
		} else if err == nil && st.dtls != nil && !st.dtls.newSeen.Load() && keys == st.dtls.keys.Load() {
			st.dtls.newSeen.Store(true)
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
	if latch.Load() == 0 {
		latch.Store(uint32(from.Port()))
	}
	w.rx.received++
	w.rx.bytes += uint64(len(pkt))
	if rtcp {
		l.stats.noteRTCP(plain)
	} else {
		l.call.tapRTP(l.side, plain)
	}
	if !forward {
		l.stats.droppedNoPeer.Add(1)
		return
	}
	out := plain // plain to plain: the received bytes; decrypted: already in the slot
	if ost.secure {
		keys := ost.keys()
		if keys == nil {
			l.stats.droppedNoPeer.Add(1)
			return
		}
		var err error
		if rtcp {
			out, err = keys.outRTCP.encryptRTCP(w.outBuf(slot), plain)
		} else {
			out, err = keys.outRTP.encryptRTP(w.outBuf(slot), plain, &w.hdr)
		}
		if err != nil {
			l.stats.droppedMalformed.Add(1)
			return
		}
	}
	k := 0
	if rtcp {
		k = 1
	} else {
		// The timestamp the other peer last got: an injection continues
		// from it (inject.go).
		l.other().fwdTS.Store(uint64(binary.BigEndian.Uint32(plain[4:8])) | 1<<32)
	}
	w.tx[k].pkts = append(w.tx[k].pkts, txPkt{b: out, dst: ost.dst(rtcp)})
}

// minUDPTL is the shortest UDPTL packet: a sequence number and a primary
// IFP of at least one byte with its length (T.38 §9.1).
const minUDPTL = 4

// relayUDPTL is handle for a T.38 leg: the source checks and latching of
// RTP, then the datagram goes out unchanged to the other leg if that one
// is on T.38 too (while the other leg still carries audio nothing mixes).
func (l *leg) relayUDPTL(w *worker, st, ost *legState, pkt []byte, from netip.AddrPort, rtcpSock bool) {
	if rtcpSock || len(pkt) < minUDPTL {
		l.stats.droppedMalformed.Add(1)
		return
	}
	if p := st.latchRTP.Load(); p != 0 && uint16(p) != from.Port() {
		l.stats.droppedSource.Add(1)
		return
	}
	if st.latchRTP.Load() == 0 {
		st.latchRTP.Store(uint32(from.Port()))
	}
	w.rx.received++
	w.rx.bytes += uint64(len(pkt))
	if ost == nil || !ost.udptl || !ost.rtpDst.IsValid() {
		l.stats.droppedNoPeer.Add(1)
		return
	}
	w.tx[0].pkts = append(w.tx[0].pkts, txPkt{b: pkt, dst: ost.dst(false)})
}
