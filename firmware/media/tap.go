package media

import "strconv"

// Tap receives a copy of the plaintext RTP a call relays, for call
// recording (firmware/callrec). The relay terminates SRTP per leg, so what
// it hands over is already decrypted; RTCP is not tapped.
type Tap interface {
	// Packet is called on the relay's reactor loop with the RTP packet
	// that arrived from side's peer (header and payload, decrypted). It
	// must not block and must not keep pkt after returning: copy what
	// is needed and return.
	Packet(from Side, pkt []byte)
}

type tapHolder struct{ t Tap }

// SetTap starts (t non-nil) or stops (nil) tapping the call's RTP. After
// SetTap(nil) returns, the loop may still deliver the packets of the
// batch it is handling; the tap must tolerate that.
func (c *Call) SetTap(t Tap) {
	if t == nil {
		c.tap.Store(nil)
		return
	}
	c.tap.Store(&tapHolder{t: t})
}

// tapRTP hands a forwarded or received RTP packet to the call's tap.
func (c *Call) tapRTP(from Side, plain []byte) {
	if h := c.tap.Load(); h != nil {
		h.t.Packet(from, plain)
	}
}

// PayloadNames maps the payload types of the peer's audio formats to
// their rtpmap (static types by RFC 3551); numbers that are not payload
// types are left out.
func (r Remote) PayloadNames() map[uint8]string {
	out := make(map[uint8]string, len(r.Formats))
	for _, f := range r.Formats {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 127 {
			continue
		}
		out[uint8(n)] = r.formatName(f)
	}
	return out
}
