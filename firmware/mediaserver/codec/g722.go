package codec

import "math"

// G.722 (ITU-T G.722, 64 kbit/s mode): a 24-tap QMF splits 16 kHz audio into
// two 8 kHz sub-bands; the lower band is coded with 6-bit ADPCM, the upper
// with 2-bit ADPCM, and each octet carries one sample pair as
// ihigh<<6 | ilow. Implemented from the block description of the standard
// (blocks 1L-4L, 1H-4H and the QMFs) in its fixed-point arithmetic.
//
// Signal domain: the encoder takes 16-bit PCM; the transmit QMF divides by
// 2^14 with coefficients scaled by 2^13, which puts the sub-band signals in
// the 15-bit range the ADPCM limits to; the receive QMF multiplies back.

// qmfCoeffs are the QMF coefficients h0..h11 of the standard, scaled by
// 2^13; the filter is symmetric (h(23-i) = h(i)).
var qmfCoeffs = [12]int32{3, -11, -11, 53, 12, -156, 32, 362, -210, -805, 951, 3876}

// q6 are the lower-band quantizer decision levels (Table 6/G.722, scaled by
// 1/8 against the output levels below) for intervals 0..29.
var q6 = [31]int32{0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650,
	714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919, 0}

// wl is the lower-band log scale factor multiplier per 4-bit magnitude,
// wh the upper band's per 2-bit magnitude.
var (
	wl = [8]int32{-60, -30, 58, 172, 334, 538, 1198, 3042}
	wh = [3]int32{0, -214, 798}
)

// g722Tables are derived once from the standard's definitions.
type g722Tables struct {
	ilb      [32]int32 // 2048 * 2^(i/32), rounded: the antilog table
	ilp, iln [32]int32 // interval -> 6-bit code, positive / negative
	qm6      [64]int32 // 6-bit code -> reconstruction level (decoder output)
	qm4      [16]int32 // 4-bit code -> level (adaptation, both sides)
	rl42     [16]int32 // 4-bit code -> magnitude index into wl
	qm2      [4]int32
	rh2      [4]int32
	ihn, ihp [3]int32
}

var g722 = func() (t g722Tables) {
	for i := range t.ilb {
		t.ilb[i] = int32(math.Round(2048 * math.Pow(2, float64(i)/32)))
	}
	// Code assignment of the 60-level quantizer: positive interval k
	// (1..30) is 62-k; negative k is 63, 62 for k = 1, 2 and 34-k after.
	for k := 1; k <= 30; k++ {
		t.ilp[k] = int32(62 - k)
		switch k {
		case 1:
			t.iln[k] = 63
		case 2:
			t.iln[k] = 62
		default:
			t.iln[k] = int32(34 - k)
		}
	}
	// Output level of interval k is between decision levels k-1 and k;
	// odd decision levels times 8 are the 5-bit mode's outputs and every
	// fourth the 4-bit mode's. The 6-bit outputs are listed by the standard:
	out6 := [30]int32{136, 432, 728, 1040, 1360, 1688, 2032, 2400, 2776, 3168, 3576, 4008,
		4464, 4944, 5456, 6000, 6576, 7192, 7856, 8576, 9360, 10232, 11192, 12280, 13512,
		14984, 16704, 19008, 21904, 24808}
	for i := range t.qm6 {
		t.qm6[i] = -136 // codes 0..3 are unused; the standard maps them to -136
	}
	for k := 1; k <= 30; k++ {
		t.qm6[t.ilp[k]] = out6[k-1]
		t.qm6[t.iln[k]] = -out6[k-1]
	}
	// 4-bit mode: the top 4 bits of a 6-bit code. Its outputs are the
	// decision levels 4, 8, ..., 28 times 8; codes 0 and 15 are zero.
	for j := 1; j <= 7; j++ {
		lvl := q6[4*j] * 8
		t.qm4[15-j] = lvl // positive codes 14..8
		t.qm4[8-j] = -lvl // negative codes 7..1
		t.rl42[15-j] = int32(j)
		t.rl42[8-j] = int32(j)
	}
	t.qm2 = [4]int32{-7408, -1616, 7408, 1616}
	t.rh2 = [4]int32{2, 1, 2, 1}
	t.ihn = [3]int32{0, 1, 0}
	t.ihp = [3]int32{0, 3, 2}
	return t
}()

func sat16(x int32) int32 {
	if x > 32767 {
		return 32767
	}
	if x < -32768 {
		return -32768
	}
	return x
}

// band is the adaptive state of one sub-band's ADPCM (encoder and decoder
// keep identical copies).
type band struct {
	s, sp, sz int32 // signal estimate, pole and zero predictor outputs
	r         [3]int32
	a         [3]int32 // pole coefficients a1, a2 (index 1, 2)
	b         [7]int32 // zero coefficients b1..b6
	d         [7]int32 // quantized differences d(n)..d(n-6)
	p         [3]int32 // partially reconstructed signals
	nb        int32    // log scale factor
	det       int32    // scale factor
}

// adapt runs block 4 (predictor adaptation and the next estimate) for a
// quantized difference d, given the band's new scale factor already set.
func (b *band) adapt(d int32) {
	// PARREC and RECONS with the estimate that was used for this sample.
	p := sat16(d + b.sz)
	r := sat16(b.s + d)

	// UPPOL2: second pole coefficient.
	sg0 := p >> 15
	sg1 := b.p[1] >> 15
	sg2 := b.p[2] >> 15
	wd1 := sat16(b.a[1] << 2)
	wd2 := wd1
	if sg0 == sg1 {
		wd2 = sat16(-wd1)
	}
	wd2 >>= 7
	wd3 := int32(128)
	if sg0 != sg2 {
		wd3 = -128
	}
	a2 := wd2 + wd3 + (b.a[2]*32512)>>15
	a2 = max(-12288, min(12288, a2))

	// UPPOL1: first pole coefficient, limited by the new a2.
	wd1 = 192
	if sg0 != sg1 {
		wd1 = -192
	}
	a1 := wd1 + (b.a[1]*32640)>>15
	lim := 15360 - a2
	a1 = max(-lim, min(lim, a1))

	// UPZERO: sign-sign update of the six zero coefficients.
	var step int32
	if d != 0 {
		step = 128
	}
	sgd := d >> 15
	for i := 1; i <= 6; i++ {
		w := step
		if sgd != b.d[i]>>15 {
			w = -step
		}
		b.b[i] = w + (b.b[i]*32640)>>15
	}

	// DELAYA: shift the delay lines.
	for i := 6; i > 1; i-- {
		b.d[i] = b.d[i-1]
	}
	b.d[1] = d
	b.p[2], b.p[1] = b.p[1], p
	b.r[2], b.r[1] = b.r[1], r
	b.a[1], b.a[2] = a1, a2

	// FILTEP and FILTEZ: the next estimate.
	wd1 = (b.a[1] * sat16(b.r[1]+b.r[1])) >> 15
	wd2 = (b.a[2] * sat16(b.r[2]+b.r[2])) >> 15
	b.sp = sat16(wd1 + wd2)
	var sz int32
	for i := 6; i >= 1; i-- {
		sz = sat16(sz + (b.b[i]*sat16(b.d[i]+b.d[i]))>>15)
	}
	b.sz = sz
	b.s = sat16(b.sp + b.sz)
}

// scale is blocks 3L/3H SCALEL/SCALEH: det from the log scale factor; shift
// is 8 for the lower band and 10 for the upper.
func scale(nb int32, shift int32) int32 {
	wd1 := (nb >> 6) & 31
	wd2 := shift - (nb >> 11)
	var wd3 int32
	if wd2 < 0 {
		wd3 = g722.ilb[wd1] << -wd2
	} else {
		wd3 = g722.ilb[wd1] >> wd2
	}
	return wd3 << 2
}

func (b *band) updateLow(il4 int32) {
	nb := (b.nb*32512)>>15 + wl[g722.rl42[il4]]
	b.nb = max(0, min(18432, nb))
	b.det = scale(b.nb, 8)
}

func (b *band) updateHigh(ih int32) {
	nb := (b.nb*32512)>>15 + wh[g722.rh2[ih]]
	b.nb = max(0, min(22528, nb))
	b.det = scale(b.nb, 10)
}

// G722Encoder is the encoder state of one leg direction.
type G722Encoder struct {
	x         qmfLine // transmit QMF delay line
	low, high band
}

// G722Decoder is the decoder state of one leg direction.
type G722Decoder struct {
	x         qmfLine // receive QMF delay line
	low, high band
}

func newBands(low, high *band) {
	*low = band{det: 32}
	*high = band{det: 8}
}

// NewG722Encoder returns an encoder in the standard's reset state.
func NewG722Encoder() *G722Encoder {
	e := &G722Encoder{}
	newBands(&e.low, &e.high)
	return e
}

// NewG722Decoder returns a decoder in the standard's reset state.
func NewG722Decoder() *G722Decoder {
	d := &G722Decoder{}
	newBands(&d.low, &d.high)
	return d
}

// EncodePair codes two consecutive 16 kHz samples into one octet.
func (e *G722Encoder) EncodePair(s0, s1 int16) byte {
	xl, xh := qmfAnalysis(&e.x, s0, s1)

	// Lower band: blocks 1L (SUBTRA, QUANTL), 2L (INVQAL), 3L, 4L.
	el := sat16(xl - e.low.s)
	wd := el
	if el < 0 {
		wd = -(el + 1) // the standard's magnitude: ones' complement
	}
	// The first interval whose upper decision level exceeds wd (the
	// levels grow with the index, so a binary search finds it).
	lo, hi := 1, 30
	for lo < hi {
		m := (lo + hi) / 2
		if wd < (q6[m]*e.low.det)>>12 {
			hi = m
		} else {
			lo = m + 1
		}
	}
	mi := lo
	var ilow int32
	if el < 0 {
		ilow = g722.iln[mi]
	} else {
		ilow = g722.ilp[mi]
	}
	il4 := ilow >> 2
	dlow := (e.low.det * g722.qm4[il4]) >> 15
	e.low.updateLow(il4)
	e.low.adapt(dlow)

	// Upper band: blocks 1H..4H.
	eh := sat16(xh - e.high.s)
	wd = eh
	if eh < 0 {
		wd = -(eh + 1)
	}
	mih := int32(1)
	if wd >= (564*e.high.det)>>12 {
		mih = 2
	}
	var ihigh int32
	if eh < 0 {
		ihigh = g722.ihn[mih]
	} else {
		ihigh = g722.ihp[mih]
	}
	dhigh := (e.high.det * g722.qm2[ihigh]) >> 15
	e.high.updateHigh(ihigh)
	e.high.adapt(dhigh)

	return byte(ihigh<<6 | ilow)
}

// qmf is the full 24-tap filter h0..h23.
var qmf = func() (h [24]int32) {
	for i := range h {
		if i < 12 {
			h[i] = qmfCoeffs[i]
		} else {
			h[i] = qmfCoeffs[23-i]
		}
	}
	return h
}()

// qmfLine is a QMF delay line: 24 samples, kept twice in a row so the
// newest 24 are always one contiguous slice (no shifting per sample).
type qmfLine struct {
	x   [48]int32
	pos int // x[pos:pos+24] is the line, newest first
}

func (l *qmfLine) push2(older, newer int32) []int32 {
	l.pos -= 2
	if l.pos < 0 {
		copy(l.x[24+2:], l.x[0:22]) // re-home: keep the 22 newest after the gap
		l.pos = 24
	}
	l.x[l.pos+1] = older
	l.x[l.pos] = newer
	return l.x[l.pos : l.pos+24 : l.pos+24]
}

// qmfAnalysis is the transmit QMF: two 16 kHz samples in (s0 older), one
// sample of each 8 kHz sub-band out.
func qmfAnalysis(l *qmfLine, s0, s1 int16) (xl, xh int32) {
	x := l.push2(int32(s0), int32(s1))
	var xa, xb int32
	for i := 0; i < 24; i += 2 {
		xa += x[i] * qmf[i]
		xb += x[i+1] * qmf[i+1]
	}
	return sat16((xa + xb) >> 14), sat16((xa - xb) >> 14)
}

// qmfSynthesis is the receive QMF: one sample of each sub-band in, two
// 16 kHz samples out (the first is the older).
func qmfSynthesis(l *qmfLine, rl, rh int32) (int16, int16) {
	x := l.push2(rl-rh, rl+rh)
	var x1, x2 int32
	for i := 0; i < 24; i += 2 {
		x1 += x[i+1] * qmf[i]
		x2 += x[i] * qmf[i+1]
	}
	return int16(sat16(x1 >> 11)), int16(sat16(x2 >> 11))
}

// DecodePair decodes one octet into two 16 kHz samples.
func (d *G722Decoder) DecodePair(c byte) (int16, int16) {
	ilow := int32(c & 0x3f)
	ihigh := int32(c>>6) & 3

	// Lower band, 64 kbit/s mode: output from the 6-bit level, adaptation
	// from the 4-bit one (as the encoder sees).
	dl6 := (d.low.det * g722.qm6[ilow]) >> 15
	rl := max(-16384, min(16383, d.low.s+dl6))
	il4 := ilow >> 2
	dl4 := (d.low.det * g722.qm4[il4]) >> 15
	d.low.updateLow(il4)
	d.low.adapt(dl4)

	dh := (d.high.det * g722.qm2[ihigh]) >> 15
	rh := max(-16384, min(16383, d.high.s+dh))
	d.high.updateHigh(ihigh)
	d.high.adapt(dh)

	return qmfSynthesis(&d.x, rl, rh)
}

// g722Codec pairs an encoder and a decoder behind the Codec interface.
type g722Codec struct {
	enc *G722Encoder
	dec *G722Decoder
}

// NewG722 returns a G.722 codec with fresh encoder and decoder state.
func NewG722() Codec { return &g722Codec{enc: NewG722Encoder(), dec: NewG722Decoder()} }

func (g *g722Codec) Name() string       { return "G722" }
func (g *g722Codec) PayloadType() uint8 { return PayloadG722 }
func (g *g722Codec) ClockRate() int     { return 8000 }
func (g *g722Codec) SampleRate() int    { return 16000 }
func (g *g722Codec) FrameSamples() int  { return 320 }

func (g *g722Codec) Encode(dst []byte, pcm []int16) []byte {
	for i := 0; i+1 < len(pcm); i += 2 {
		dst = append(dst, g.enc.EncodePair(pcm[i], pcm[i+1]))
	}
	return dst
}

func (g *g722Codec) Decode(dst []int16, payload []byte) []int16 {
	for _, c := range payload {
		a, b := g.dec.DecodePair(c)
		dst = append(dst, a, b)
	}
	return dst
}
