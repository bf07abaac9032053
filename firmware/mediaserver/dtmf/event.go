// Package dtmf carries DTMF digits in the three ways phones and trunks
// send them: RFC 4733 telephone-event RTP payloads (the default), SIP INFO
// bodies (application/dtmf-relay and application/dtmf), and in-band tones,
// which a Goertzel detector finds as a fallback for peers that send neither.
//
// Every parser here takes untrusted input: lengths are checked, values are
// bounded, and a bad input is an error that changes no state.
package dtmf

import (
	"errors"
	"fmt"
)

// Event codes 0-15 of RFC 4733 section 3.2 are the DTMF digits.
const (
	CodeStar  uint8 = 10
	CodeHash  uint8 = 11
	CodeFlash uint8 = 16 // hook flash; not a digit
	maxDigit  uint8 = 15
)

// EventSize is the length of one telephone-event payload.
const EventSize = 4

// MaxVolume is the quietest volume field (-63 dBm0).
const MaxVolume = 63

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("dtmf: malformed")

// Event is one RFC 4733 telephone-event payload (section 2.3).
type Event struct {
	Code     uint8  // event code; 0-15 are DTMF digits
	End      bool   // E bit: the last packets of the event
	Volume   uint8  // power level in -dBm0, 0..63
	Duration uint16 // in RTP timestamp units since the event's timestamp
}

// ParseEvent decodes a telephone-event payload. It must be exactly 4 bytes
// (RFC 2198 redundancy is not negotiated by the box); the reserved bit is
// ignored as the RFC requires.
func ParseEvent(p []byte) (Event, error) {
	if len(p) != EventSize {
		return Event{}, fmt.Errorf("%w: telephone-event payload of %d bytes, want %d", ErrMalformed, len(p), EventSize)
	}
	return Event{
		Code:     p[0],
		End:      p[1]&0x80 != 0,
		Volume:   p[1] & 0x3f,
		Duration: uint16(p[2])<<8 | uint16(p[3]),
	}, nil
}

// Append appends the 4-byte payload of e to dst.
func (e Event) Append(dst []byte) []byte {
	b1 := e.Volume & 0x3f
	if e.End {
		b1 |= 0x80
	}
	return append(dst, e.Code, b1, byte(e.Duration>>8), byte(e.Duration))
}

// Digit returns the character of a DTMF event code ('0'-'9', '*', '#',
// 'A'-'D'), and false for other events.
func Digit(code uint8) (rune, bool) {
	switch {
	case code <= 9:
		return rune('0' + code), true
	case code == CodeStar:
		return '*', true
	case code == CodeHash:
		return '#', true
	case code <= maxDigit:
		return rune('A' + code - 12), true
	}
	return 0, false
}

// Code returns the event code of a DTMF character (lower-case a-d accepted).
func Code(digit rune) (uint8, bool) {
	switch {
	case digit >= '0' && digit <= '9':
		return uint8(digit - '0'), true
	case digit == '*':
		return CodeStar, true
	case digit == '#':
		return CodeHash, true
	case digit >= 'A' && digit <= 'D':
		return uint8(digit-'A') + 12, true
	case digit >= 'a' && digit <= 'd':
		return uint8(digit-'a') + 12, true
	}
	return 0, false
}
