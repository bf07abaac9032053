package callrec

import "errors"

// rtpHeader is what a recording needs of one RTP packet (RFC 3550 §5.1).
type rtpHeader struct {
	pt      uint8
	marker  bool
	seq     uint16
	ts      uint32
	payload []byte // aliases the packet
}

var errRTP = errors.New("callrec: malformed RTP")

// parseRTP reads the fixed header, skips CSRCs and a header extension and
// strips padding. The relay checked the version bits and decrypted the
// packet; the rest is the peer's word and is checked here.
func parseRTP(b []byte) (rtpHeader, error) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return rtpHeader{}, errRTP
	}
	h := rtpHeader{
		pt: b[1] & 0x7f, marker: b[1]&0x80 != 0,
		seq: uint16(b[2])<<8 | uint16(b[3]),
		ts:  uint32(b[4])<<24 | uint32(b[5])<<16 | uint32(b[6])<<8 | uint32(b[7]),
	}
	off := 12 + 4*int(b[0]&0x0f)
	if off > len(b) {
		return rtpHeader{}, errRTP
	}
	if b[0]&0x10 != 0 {
		if off+4 > len(b) {
			return rtpHeader{}, errRTP
		}
		off += 4 + 4*(int(b[off+2])<<8|int(b[off+3]))
		if off > len(b) {
			return rtpHeader{}, errRTP
		}
	}
	end := len(b)
	if b[0]&0x20 != 0 {
		pad := int(b[end-1])
		if pad == 0 || end-pad < off {
			return rtpHeader{}, errRTP
		}
		end -= pad
	}
	h.payload = b[off:end]
	return h, nil
}
