// Package codec turns RTP payloads into 16-bit linear PCM and back for the
// codecs the box's own media applications speak: G.711 µ-law (PCMU) and
// A-law (PCMA), and G.722 (64 kbit/s). Everything else is passed through
// between phones by the relay and never reaches this package.
//
// A Codec value holds the state of one direction of one leg (G.722 is
// adaptive): create one per leg and direction with New or ByPayloadType,
// and do not share it between goroutines.
package codec

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Codec encodes and decodes one direction of one RTP leg.
type Codec interface {
	// Name is the SDP rtpmap encoding name: "PCMU", "PCMA" or "G722".
	Name() string
	// PayloadType is the static RTP payload type of RFC 3551 (0, 8, 9).
	PayloadType() uint8
	// ClockRate is the RTP timestamp rate: 8000 for all three (G.722's
	// RTP clock is 8000 although it samples at 16 kHz, RFC 3551 4.5.2).
	ClockRate() int
	// SampleRate is the PCM rate Encode takes and Decode returns.
	SampleRate() int
	// FrameSamples is the PCM samples in one 20 ms packet.
	FrameSamples() int
	// Encode appends the payload for pcm to dst and returns it. For G.722
	// len(pcm) must be even (it codes sample pairs); an odd last sample is
	// dropped.
	Encode(dst []byte, pcm []int16) []byte
	// Decode appends the PCM of payload to dst and returns it. Any byte
	// string is a valid payload: decoding never fails.
	Decode(dst []int16, payload []byte) []int16
}

// ErrUnknown is returned for a codec name or payload type this package
// does not implement.
var ErrUnknown = errors.New("codec: not implemented by the media engine")

// Static payload types (RFC 3551).
const (
	PayloadPCMU uint8 = 0
	PayloadPCMA uint8 = 8
	PayloadG722 uint8 = 9
)

// Names lists the rtpmap names New accepts, in the engine's preference
// order (wideband first).
func Names() []string { return []string{"G722", "PCMU", "PCMA"} }

// New returns a fresh codec for an SDP rtpmap encoding, given as the name
// alone ("PCMU") or the rtpmap value ("PCMU/8000", "G722/8000/1"); names are
// case-insensitive. The clock rate, when given, must be 8000 and the channel
// count 1.
func New(rtpmap string) (Codec, error) {
	if len(rtpmap) > 64 {
		return nil, fmt.Errorf("%w: rtpmap longer than 64 bytes", ErrUnknown)
	}
	parts := strings.Split(rtpmap, "/")
	if len(parts) > 3 {
		return nil, fmt.Errorf("%w: %q", ErrUnknown, rtpmap)
	}
	if len(parts) >= 2 {
		if r, err := strconv.Atoi(parts[1]); err != nil || r != 8000 {
			return nil, fmt.Errorf("%w: %q: clock rate must be 8000", ErrUnknown, rtpmap)
		}
	}
	if len(parts) == 3 && parts[2] != "1" {
		return nil, fmt.Errorf("%w: %q: only mono", ErrUnknown, rtpmap)
	}
	switch strings.ToUpper(strings.TrimSpace(parts[0])) {
	case "PCMU":
		return &g711{name: "PCMU", pt: PayloadPCMU, enc: &ulawDecodeTable}, nil
	case "PCMA":
		return &g711{name: "PCMA", pt: PayloadPCMA, enc: &alawDecodeTable, alaw: true}, nil
	case "G722":
		return NewG722(), nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknown, rtpmap)
}

// ByPayloadType returns a fresh codec for a static payload type.
func ByPayloadType(pt uint8) (Codec, error) {
	switch pt {
	case PayloadPCMU:
		return New("PCMU")
	case PayloadPCMA:
		return New("PCMA")
	case PayloadG722:
		return New("G722")
	}
	return nil, fmt.Errorf("%w: payload type %d", ErrUnknown, pt)
}
