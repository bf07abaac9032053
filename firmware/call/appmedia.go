package call

// The box's own RTP endpoint of an application call: a plain UDP socket on
// the media address that the relay's B leg exchanges RTP with. The relay
// keeps doing SRTP/DTLS, pinholes and source checks toward the caller;
// this socket only ever accepts packets from the relay's own B-leg port.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/pion/rtp"
)

// frameQueue is how many 20 ms frames (and digits) wait for a slow
// application before the oldest are dropped: 1 s.
const frameQueue = 50

// ptime is the packet interval the box sends and announces.
const ptime = 20 * time.Millisecond

// appFormat is what an application call speaks: one voice codec and,
// when the caller offered it, telephone-event (RFC 4733).
type appFormat struct {
	codec struct {
		name string // rtpmap value, "PCMU/8000"
		pt   uint8
	}
	te     uint8 // telephone-event payload type; 0: none offered
	teRate string
}

// staticNames are the RFC 3551 static payload types the engine knows.
var staticNames = map[string]string{"0": "PCMU/8000", "8": "PCMA/8000", "9": "G722/8000"}

// chooseAppFormat picks the caller's first offered voice format the media
// engine speaks, and telephone-event/8000 if offered.
func chooseAppFormat(r media.Remote) (appFormat, error) {
	var f appFormat
	found := false
	for _, pt := range r.Formats {
		name, ok := r.Rtpmap[pt]
		if !ok {
			name, ok = staticNames[pt]
		}
		if !ok {
			continue
		}
		n, err := strconv.Atoi(pt)
		if err != nil || n < 0 || n > 127 {
			continue
		}
		enc, rate, _ := strings.Cut(name, "/")
		if strings.EqualFold(enc, "telephone-event") {
			if f.te == 0 && (rate == "8000" || strings.HasPrefix(rate, "8000/")) {
				f.te, f.teRate = uint8(n), name
			}
			continue
		}
		if found {
			continue
		}
		if _, err := newVoiceCodec(name); err != nil {
			continue
		}
		f.codec.name, f.codec.pt, found = name, uint8(n), true
	}
	if !found {
		return appFormat{}, errors.New("no codec the box speaks (G.711, G.722) offered")
	}
	return f, nil
}

// keep is the format for a new offer of the caller: the same codec must
// still be there (the application's audio is in its rate).
func (f appFormat) keep(r media.Remote) (appFormat, error) {
	g, err := chooseAppFormat(r)
	if err != nil {
		return f, err
	}
	if !strings.EqualFold(g.codec.name, f.codec.name) {
		return f, fmt.Errorf("codec change from %s to %s", f.codec.name, g.codec.name)
	}
	return g, nil
}

// answerFrom is the media description the box answers offer with: the
// chosen codec and telephone-event, in the caller's payload types.
func (f appFormat) answerFrom(offer media.Remote) media.Remote {
	pt := strconv.Itoa(int(f.codec.pt))
	r := media.Remote{Formats: []string{pt}, Rtpmap: map[string]string{pt: f.codec.name},
		Fmtp: map[string]string{}, Ptime: "20"}
	if f.te != 0 {
		te := strconv.Itoa(int(f.te))
		r.Formats = append(r.Formats, te)
		r.Rtpmap[te] = f.teRate
		r.Fmtp[te] = "0-16"
	}
	switch offer.Direction {
	case "sendonly":
		r.Direction = "recvonly"
	case "recvonly":
		r.Direction = "sendonly"
	case "inactive":
		r.Direction = "inactive"
	default:
		r.Direction = "sendrecv"
	}
	return r
}

// appMedia is the application's side of an application call; it is the
// Leg the application gets.
type appMedia struct {
	c      *call
	format appFormat
	conn   *net.UDPConn
	relay  netip.AddrPort // the relay's B-leg RTP socket: the only accepted source
	rate   int

	ctx    context.Context
	cancel context.CancelFunc
	caller Caller
	frames chan []int16
	dtmf   chan Digit
	wg     sync.WaitGroup
	once   sync.Once

	// sending (Play is serialised by sendMu)
	sendMu sync.Mutex
	// keys is closed when the caller's DTLS-SRTP handshake ends (nil:
	// SDES or plain RTP, keys at once). Play waits for it: the relay
	// drops what it has no keys for, the start of a greeting.
	keys <-chan struct{}
	// muted: the call is being handed over (app_connect.go); writeMu
	// is held around each packet so that muting waits for one in hand.
	muted   atomic.Bool
	writeMu sync.Mutex
	enc     voiceCodec
	seq     uint16
	ts      uint32
	ssrc    uint32
	marker  bool

	inband  *inband // nil: none
	events  events
	dropped atomic.Uint64 // frames and digits an application did not read in time

	infoMu sync.Mutex // orders INFO keys (answerDigit)
}

func newAppMedia(c *call, addr netip.Addr, f appFormat) (*appMedia, error) {
	enc, err := newVoiceCodec(f.codec.name)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
	if err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		conn.Close()
		return nil, err
	}
	ep := &appMedia{c: c, format: f, conn: conn, enc: enc, rate: enc.SampleRate(),
		frames: make(chan []int16, frameQueue), dtmf: make(chan Digit, frameQueue),
		seq:  binary.BigEndian.Uint16(b[0:2]) & 0x7fff, // below 2^15 (SRTP rollover)
		ts:   binary.BigEndian.Uint32(b[2:6]),
		ssrc: binary.BigEndian.Uint32(b[4:8]) | 1, marker: true}
	ep.ctx, ep.cancel = context.WithCancel(c.b.ctx)
	ep.relay = netip.AddrPortFrom(addr, c.m.LocalPort(media.B))
	ep.inband, ep.events = newInband(ep.rate), newEvents()
	return ep, nil
}

// connect points the relay's B leg at the socket. No pinhole is needed:
// the two sockets are on the box's own address (the edgepbxd wiring skips
// such pinholes).
func (ep *appMedia) connect(ctx context.Context) error {
	port := netip.MustParseAddrPort(ep.conn.LocalAddr().String()).Port()
	return ep.c.m.SetPeer(ctx, media.B, media.Peer{Addr: ep.relay.Addr(), RTPPort: port, RTCPPort: port, RTCPMux: true})
}

// start runs the receiver once the call is up.
func (ep *appMedia) start(caller Caller) {
	ep.caller = caller
	ep.wg.Add(1)
	go func() {
		defer ep.wg.Done()
		ep.receive()
	}()
}

func (ep *appMedia) close() {
	ep.once.Do(func() {
		ep.cancel()
		ep.conn.Close()
		ep.wg.Wait()
	})
}

// mute stops the application's audio for good before the relay's B side
// leaves its socket: a packet of it arriving after the switch would be
// taken for the new peer's (symmetric RTP latches the first source).
func (ep *appMedia) mute() {
	ep.writeMu.Lock()
	ep.muted.Store(true)
	ep.writeMu.Unlock()
}

func (ep *appMedia) Caller() Caller         { return ep.caller }
func (ep *appMedia) Rate() int              { return ep.rate }
func (ep *appMedia) Frames() <-chan []int16 { return ep.frames }
func (ep *appMedia) DTMF() <-chan Digit     { return ep.dtmf }

// receive reads what the relay forwards from the caller.
func (ep *appMedia) receive() {
	dec, err := newVoiceCodec(ep.format.codec.name)
	if err != nil {
		return
	}
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	frame := ep.rate * int(ptime/time.Millisecond) / 1000
	for {
		n, from, err := ep.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if from.Addr().Unmap() != ep.relay.Addr() || from.Port() != ep.relay.Port() {
			continue
		}
		if err := pkt.Unmarshal(buf[:n]); err != nil {
			continue
		}
		switch pkt.PayloadType {
		case ep.format.codec.pt:
			// At most 60 ms per packet is accepted (3 frames).
			if len(pkt.Payload) == 0 || len(pkt.Payload) > 3*frame {
				continue
			}
			pcm := dec.Decode(make([]int16, 0, 3*frame), pkt.Payload)
			ep.inband.feed(pcm, func(k byte) { ep.digit(Digit{Key: k, Via: "inband"}) })
			for len(pcm) > 0 {
				m := min(frame, len(pcm))
				ep.frame(pcm[:m])
				pcm = pcm[m:]
			}
		case ep.format.te:
			if ep.format.te == 0 {
				continue
			}
			if ep.inband != nil {
				ep.inband.off = true // the same keys may also be audible
			}
			if k, ok := ep.events.packet(pkt.Timestamp, pkt.Payload); ok {
				ep.digit(Digit{Key: k, Via: "rfc4733"})
			}
		}
	}
}

func (ep *appMedia) frame(pcm []int16) {
	for {
		select {
		case ep.frames <- pcm:
			return
		default:
		}
		select { // full: drop the oldest, the application lags
		case <-ep.frames:
			ep.dropped.Add(1)
		default:
		}
	}
}

// digit delivers a key; a full queue drops it (the application is not
// listening for keys).
// answerDigit sends an INFO's 200 (answer) and then queues its key, both
// under infoMu. The 200 leaves first because the key may end the
// application, whose BYE must not overtake it; the lock keeps the keys in
// the order they were sent, since a phone sends its next INFO as soon as
// that 200 arrives and the next INFO's handler could otherwise queue its
// key ahead of this one ("…4 6 5 #" seen under load).
func (ep *appMedia) answerDigit(answer func(), d Digit) {
	ep.infoMu.Lock()
	defer ep.infoMu.Unlock()
	answer()
	ep.digit(d)
}

func (ep *appMedia) digit(d Digit) {
	select {
	case ep.dtmf <- d:
	default:
		ep.dropped.Add(1)
	}
}

// Play sends pcm in 20 ms packets paced by a ticker. A partial last
// frame is padded with silence.
func (ep *appMedia) Play(ctx context.Context, pcm []int16) error {
	ep.sendMu.Lock()
	defer ep.sendMu.Unlock()
	frame := ep.rate * int(ptime/time.Millisecond) / 1000
	step := uint32(ep.enc.ClockRate() * int(ptime/time.Millisecond) / 1000)
	t := time.NewTicker(ptime)
	defer t.Stop()
	pad := make([]int16, frame)
	payload := make([]byte, 0, frame)
	out := make([]byte, 0, 12+frame)
	if ep.keys != nil {
		select { // bounded: the relay's handshake timeout closes it too
		case <-ep.keys:
			ep.keys = nil
		case <-ctx.Done():
			return ctx.Err()
		case <-ep.ctx.Done():
			return ep.ctx.Err()
		}
	}
	for off := 0; off < len(pcm); off += frame {
		chunk := pcm[off:min(off+frame, len(pcm))]
		if len(chunk) < frame {
			copy(pad, chunk)
			clear(pad[len(chunk):])
			chunk = pad
		}
		payload = ep.enc.Encode(payload[:0], chunk)
		h := rtp.Header{Version: 2, Marker: ep.marker, PayloadType: ep.format.codec.pt,
			SequenceNumber: ep.seq, Timestamp: ep.ts, SSRC: ep.ssrc}
		ep.marker = false
		ep.seq++
		ep.ts += step
		n, err := h.MarshalTo(out[:cap(out)])
		if err != nil {
			return err
		}
		pkt := append(out[:n], payload...)
		ep.writeMu.Lock()
		if ep.muted.Load() {
			ep.writeMu.Unlock()
			return ErrHandedOver
		}
		_, err = ep.conn.WriteToUDPAddrPort(pkt, ep.relay)
		ep.writeMu.Unlock()
		if err != nil {
			return fmt.Errorf("send: %w", err)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			ep.marker = true
			return ctx.Err()
		case <-ep.ctx.Done():
			return ep.ctx.Err()
		}
	}
	ep.marker = true // the next Play starts a new talkspurt
	return nil
}
