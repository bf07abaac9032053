package media

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// Injection: the box plays its own audio to one leg (music on hold to a
// held party, the recording announcement to both). The relay keeps the
// leg's sockets, keys and latching; the injection only adds packets on
// the leg's own RTP socket, in the leg's codec, with the box's own SSRC,
// a sequence that stays continuous across injections (the same SRTP keys
// may outlive one: a DTLS association survives hold/resume, and a
// replayed sequence would be refused by the phone) and a timestamp that
// goes on from the last one the phone got.
// While an injection plays, nothing the other leg's peer sends reaches
// this leg.

// Payloads is what an injection plays: one 20 ms RTP payload per call to
// Next, appended to dst, in the codec of the payload type given to
// Inject (prompts.Player satisfies it). false: nothing more to play. Next
// runs on the injection's goroutine only.
type Payloads interface {
	Next(dst []byte) ([]byte, bool)
}

// InjectPtime is the packet interval of injected audio.
const InjectPtime = 20 * time.Millisecond

// maxInjectPayload bounds what Payloads may return (60 ms of G.711/G.722).
const maxInjectPayload = 480

// Injection is the box's audio playing to one leg.
type Injection struct {
	l    *leg
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// injector is a leg's own RTP stream (Call.mu guards start; the fields
// are used by one injection goroutine at a time).
type injector struct {
	ssrc uint32
	seq  uint16
	ts   uint32
	last time.Time // when the previous injection ended (zero: none yet)
}

// ErrInjectClosed is returned by Inject on a closed call.
var ErrInjectClosed = errors.New("media: inject on a closed call")

// Inject starts playing src to side's peer in payload type pt at the RTP
// clock rate clock (8000 for G.711 and G.722). An injection already
// playing to side stops first. The injection ends when src has nothing
// more, on Stop, or when the call closes; until then the other side's
// packets are not forwarded to side. It never blocks the relay: one
// goroutine and one timer per injection, non-blocking sends, a packet
// that cannot go out (no peer address yet, DTLS keys pending, socket
// buffer full) is skipped and counted.
func (c *Call) Inject(s Side, pt uint8, clock int, src Payloads) (*Injection, error) {
	if pt > 127 || clock <= 0 || clock > 48000 || src == nil {
		return nil, fmt.Errorf("media: inject: payload type %d, clock %d", pt, clock)
	}
	l := c.legs[s&1]
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrInjectClosed
	}
	if old := l.injecting.Load(); old != nil {
		old.Stop() // its goroutine takes no lock of the call
	}
	if l.inj == nil {
		var b [10]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("media: inject: %w", err)
		}
		l.inj = &injector{ssrc: binary.BigEndian.Uint32(b[0:4]) | 1,
			seq: binary.BigEndian.Uint16(b[4:6]) & 0x7fff, // far from the SRTP rollover
			ts:  binary.BigEndian.Uint32(b[6:10])}
	}
	step := uint32(clock) * uint32(InjectPtime/time.Millisecond) / 1000
	switch fwd := l.fwdTS.Swap(0); {
	case fwd != 0:
		// The relay sent the peer another stream since: go on from its
		// last timestamp. Phones track one timestamp across SSRC changes
		// and drop a stream that seems to jump back (baresip: "rtp
		// timestamp wraps backwards").
		l.inj.ts = uint32(fwd) + step
	case !l.inj.last.IsZero():
		// The timestamp follows the wall clock across the pause.
		gap := time.Since(l.inj.last)
		l.inj.ts += uint32(gap.Milliseconds()) * uint32(clock) / 1000
	}
	in := &Injection{l: l, stop: make(chan struct{}), done: make(chan struct{})}
	l.injecting.Store(in)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		in.run(c, l.inj, pt, step, src)
	}()
	return in, nil
}

// Stop ends the injection and returns once its last packet is sent: from
// then on the leg carries the other leg's packets again. Idempotent.
func (in *Injection) Stop() {
	in.once.Do(func() { close(in.stop) })
	<-in.done
}

// Done is closed when the injection has ended (src finished, Stop, or the
// call closed).
func (in *Injection) Done() <-chan struct{} { return in.done }

func (in *Injection) run(c *Call, inj *injector, pt uint8, step uint32, src Payloads) {
	l := in.l
	defer func() {
		inj.last = time.Now()
		l.injecting.CompareAndSwap(in, nil)
		close(in.done)
	}()
	buf := make([]byte, 12+maxInjectPayload)
	out := make([]byte, 12+maxInjectPayload+64)
	var hdr rtp.Header
	t := time.NewTicker(InjectPtime)
	defer t.Stop()
	marker := true
	for {
		payload, ok := src.Next(buf[12:12])
		if !ok {
			return
		}
		if len(payload) <= maxInjectPayload {
			n := copy(buf[12:], payload) // a source may ignore dst
			if l.sendInjected(&hdr, buf[:12+n], out, pt, marker, inj) {
				marker = false
			}
		} else {
			l.stats.injectErrors.Add(1)
		}
		inj.seq++
		inj.ts += step
		select {
		case <-t.C:
		case <-in.stop:
			return
		case <-c.ctx.Done():
			return
		}
	}
}

// sendInjected sends one packet whose payload is already at pkt[12:];
// false when it could not go out.
func (l *leg) sendInjected(hdr *rtp.Header, pkt, out []byte, pt uint8, marker bool, inj *injector) bool {
	st := l.state.Load()
	if st == nil || st.udptl || !st.rtpDst.IsValid() {
		l.stats.injectErrors.Add(1)
		return false
	}
	*hdr = rtp.Header{Version: 2, Marker: marker, PayloadType: pt, SequenceNumber: inj.seq, Timestamp: inj.ts, SSRC: inj.ssrc}
	if _, err := hdr.MarshalTo(pkt[:12]); err != nil {
		l.stats.injectErrors.Add(1)
		return false
	}
	b := pkt
	if st.secure {
		keys := st.keys()
		if keys == nil { // DTLS not finished
			l.stats.injectErrors.Add(1)
			return false
		}
		var err error
		if b, err = keys.outRTP.encryptRTP(out[:0], pkt, hdr); err != nil {
			l.stats.injectErrors.Add(1)
			return false
		}
	}
	if _, err := l.rtp.writeTo(b, st.dst(false)); err != nil {
		l.stats.injectErrors.Add(1)
		return false
	}
	l.stats.injected.Add(1)
	return true
}

// Heard reports whether side's peer has sent the relay a valid packet:
// its phone has taken the SDP and keys, so it can play what it gets.
func (c *Call) Heard(s Side) bool { return c.legs[s&1].stats.received.Load() > 0 }

// Injecting reports whether an injection plays to side now.
func (c *Call) Injecting(s Side) bool { return c.legs[s&1].injecting.Load() != nil }

// injectingTo is the packet path's check: the other leg's packets are
// not forwarded to l while the box plays to it.
func (l *leg) injectingTo() bool { return l.injecting.Load() != nil }
