package codec

import "math"

// Resampling between the box's two PCM rates, 8 kHz (G.711) and 16 kHz
// (G.722), so legs of either kind can be mixed or recorded together. Both
// directions use one half-band low-pass FIR (Kaiser-windowed sinc, cut-off
// at 4 kHz), designed at start in floating point and run in Q15 fixed point.
// Each stream keeps its own history: one Upsampler/Downsampler per leg.

const halfTaps = 47 // odd; every other coefficient except the centre is zero

var halfband = func() (h [halfTaps]int32) {
	const beta = 6.0
	mid := halfTaps / 2
	i0 := func(x float64) float64 { // modified Bessel function I0, series
		s, term := 1.0, 1.0
		for k := 1; k < 30; k++ {
			term *= (x / 2) / float64(k)
			s += term * term
		}
		return s
	}
	var sum float64
	f := make([]float64, halfTaps)
	for n := range f {
		m := float64(n - mid)
		sinc := 0.5
		if m != 0 {
			sinc = math.Sin(math.Pi*m/2) / (math.Pi * m)
		}
		r := m / float64(mid)
		f[n] = sinc * i0(beta*math.Sqrt(1-r*r)) / i0(beta)
		sum += f[n]
	}
	for n := range f {
		h[n] = int32(math.Round(f[n] / sum * 32768)) // unity DC gain
	}
	return h
}()

// The half-band filter is zero at every even distance from its centre
// except the centre itself, so each output needs only the 24 even taps
// and the centre: the structure below computes exactly the zero-stuffed
// convolution without the zeros.
const mid = halfTaps / 2 // 23; the centre tap is 0.5 (16384)

var evenTaps = func() (e [24]int64) {
	for k := range e {
		e[k] = int64(halfband[2*k])
	}
	return e
}()

// ring is the history of a stream, newest at pos.
type ring struct {
	x   [64]int32
	pos uint8
}

func (r *ring) push(s int16) {
	r.pos++
	r.x[r.pos&63] = int32(s)
}

// at returns the sample d steps before the newest.
func (r *ring) at(d int) int64 { return int64(r.x[(int(r.pos)-d)&63]) }

// Upsampler doubles the rate of an 8 kHz stream.
type Upsampler struct{ h ring }

// Process appends 2*len(in) samples at 16 kHz to dst.
func (u *Upsampler) Process(dst []int16, in []int16) []int16 {
	for _, s := range in {
		u.h.push(s)
		// Even output: the stuffed stream's samples (2x) under the even taps.
		var acc int64
		for k, c := range evenTaps {
			acc += c * u.h.at(k)
		}
		a := sat16(int32((2 * acc) >> 15))
		// Odd output: only the centre tap meets a sample.
		b := sat16(int32((2 * int64(halfband[mid]) * u.h.at(mid/2)) >> 15))
		dst = append(dst, int16(a), int16(b))
	}
	return dst
}

// Downsampler halves the rate of a 16 kHz stream.
type Downsampler struct {
	h ring
	// skip is set between the two samples of a pair. Output is taken on
	// the first of each pair so that 8k -> 16k -> 8k is delayed by a whole
	// number of samples (23).
	skip bool
}

// Process appends the 8 kHz samples of in to dst: one per input pair,
// continuing across calls (an odd-length call carries its phase over).
func (d *Downsampler) Process(dst []int16, in []int16) []int16 {
	for _, s := range in {
		d.h.push(s)
		d.skip = !d.skip
		if !d.skip {
			continue
		}
		acc := int64(halfband[mid]) * d.h.at(mid)
		for k, c := range evenTaps {
			acc += c * d.h.at(2*k)
		}
		dst = append(dst, int16(sat16(int32(acc>>15))))
	}
	return dst
}
