package codec

import "math/bits"

// G.711 (ITU-T G.711, 1988). The tables below are computed at package
// initialisation from the segment/mantissa rules of the standard, not copied:
// µ-law works on 14-bit magnitudes with a bias of 33, A-law on 13-bit values
// with the sign taken as a ones' complement (the G.191 convention, which makes
// -1 encode like 0). Encoding a 16-bit sample uses its top 14 (µ) or 13 (A)
// bits; decoding gives the segment's mid-point scaled back to 16 bits.

var (
	ulawDecodeTable [256]int16
	alawDecodeTable [256]int16
	// Encode tables indexed by the sample's top 14 (µ) / 13 (A) bits as an
	// unsigned offset; 16 KiB + 8 KiB, built once, read-only afterwards.
	ulawEncodeTable [1 << 14]byte
	alawEncodeTable [1 << 13]byte
)

func init() {
	for c := range 256 {
		ulawDecodeTable[c] = ulawDecode(byte(c))
		alawDecodeTable[c] = alawDecode(byte(c))
	}
	for i := range 1 << 14 {
		ulawEncodeTable[i] = ulawEncode(int16((i - 1<<13) << 2))
	}
	for i := range 1 << 13 {
		alawEncodeTable[i] = alawEncode(int16((i - 1<<12) << 3))
	}
}

// ulawEncode is the rule: the magnitude in 14 bits plus the bias 33, clipped
// at 8191; the segment is the position of its top bit above bit 5; four
// mantissa bits follow it; the whole byte is inverted for transmission.
func ulawEncode(x int16) byte {
	var sign byte
	m := int32(x) >> 2 // 14-bit signed
	if m < 0 {
		sign = 0x80
		m = ^m // ones' complement: -1 -> 0, like the bias rule of G.711
	}
	m += 33
	if m > 0x1fff {
		m = 0x1fff
	}
	seg := bits.Len32(uint32(m >> 6)) // 0..7
	mant := (m >> (seg + 1)) & 0x0f
	return ^(sign | byte(seg)<<4 | byte(mant))
}

func ulawDecode(c byte) int16 {
	c = ^c
	seg := int32(c>>4) & 7
	mant := int32(c) & 0x0f
	// Segment mid-point in the 14-bit domain, times 4 for 16 bits.
	t := ((mant<<3)+0x84)<<seg - 0x84
	if c&0x80 != 0 {
		return int16(-t)
	}
	return int16(t)
}

// alawEncode: 12-bit magnitude (ones' complement for negatives); segment 0
// and 1 have the same step, each later segment doubles it; even bits are
// inverted for transmission (XOR 0x55), positive values carry the sign bit.
func alawEncode(x int16) byte {
	var sign byte = 0x80
	m := int32(x)
	if m < 0 {
		sign = 0
		m = ^m
	}
	v := m >> 4 // 0..2047: 11 bits, segment 0 steps by one unit here
	var code int32
	if v < 16 {
		code = v
	} else {
		seg := int32(bits.Len32(uint32(v))) - 4 // 16..31 -> 1, 32..63 -> 2, ...
		code = seg<<4 | (v>>(seg-1))&0x0f
	}
	return (sign | byte(code)) ^ 0x55
}

func alawDecode(c byte) int16 {
	c ^= 0x55
	seg := int32(c>>4) & 7
	mant := int32(c) & 0x0f
	var t int32
	if seg == 0 {
		t = mant<<4 + 8
	} else {
		t = ((mant+16)<<4 + 8) << (seg - 1)
	}
	if c&0x80 == 0 {
		return int16(-t)
	}
	return int16(t)
}

// MulawEncodeSample and friends expose the per-sample mapping for callers
// that mix or detect on single samples.
func MulawEncodeSample(x int16) byte { return ulawEncodeTable[(int32(x)>>2)+1<<13] }

// MulawDecodeSample returns the 16-bit linear value of a µ-law byte.
func MulawDecodeSample(c byte) int16 { return ulawDecodeTable[c] }

// AlawEncodeSample returns the A-law byte of a 16-bit linear sample.
func AlawEncodeSample(x int16) byte { return alawEncodeTable[(int32(x)>>3)+1<<12] }

// AlawDecodeSample returns the 16-bit linear value of an A-law byte.
func AlawDecodeSample(c byte) int16 { return alawDecodeTable[c] }

type g711 struct {
	name string
	pt   uint8
	enc  *[256]int16
	alaw bool
}

func (g *g711) Name() string       { return g.name }
func (g *g711) PayloadType() uint8 { return g.pt }
func (g *g711) ClockRate() int     { return 8000 }
func (g *g711) SampleRate() int    { return 8000 }
func (g *g711) FrameSamples() int  { return 160 }

func (g *g711) Encode(dst []byte, pcm []int16) []byte {
	if g.alaw {
		for _, s := range pcm {
			dst = append(dst, AlawEncodeSample(s))
		}
		return dst
	}
	for _, s := range pcm {
		dst = append(dst, MulawEncodeSample(s))
	}
	return dst
}

func (g *g711) Decode(dst []int16, payload []byte) []int16 {
	for _, c := range payload {
		dst = append(dst, g.enc[c])
	}
	return dst
}
