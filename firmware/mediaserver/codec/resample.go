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

// Upsampler doubles the rate of an 8 kHz stream.
type Upsampler struct {
	hist [halfTaps]int32 // zero-stuffed input, newest last
}

// Process appends 2*len(in) samples at 16 kHz to dst.
func (u *Upsampler) Process(dst []int16, in []int16) []int16 {
	for _, s := range in {
		for phase := range 2 {
			copy(u.hist[:], u.hist[1:])
			if phase == 0 {
				u.hist[halfTaps-1] = int32(s) * 2 // gain 2 restores the stuffed zeros' loss
			} else {
				u.hist[halfTaps-1] = 0
			}
			var acc int64
			for k, c := range halfband {
				if c != 0 {
					acc += int64(c) * int64(u.hist[k])
				}
			}
			dst = append(dst, int16(sat16(int32(acc>>15))))
		}
	}
	return dst
}

// Downsampler halves the rate of a 16 kHz stream.
type Downsampler struct {
	hist [halfTaps]int32
	// skip is set between the two samples of a pair. Output is taken on
	// the first of each pair so that 8k -> 16k -> 8k is delayed by a whole
	// number of samples (23).
	skip bool
}

// Process appends the 8 kHz samples of in to dst: one per input pair,
// continuing across calls (an odd-length call carries its phase over).
func (d *Downsampler) Process(dst []int16, in []int16) []int16 {
	for _, s := range in {
		copy(d.hist[:], d.hist[1:])
		d.hist[halfTaps-1] = int32(s)
		d.skip = !d.skip
		if !d.skip {
			continue
		}
		var acc int64
		for k, c := range halfband {
			if c != 0 {
				acc += int64(c) * int64(d.hist[k])
			}
		}
		dst = append(dst, int16(sat16(int32(acc>>15))))
	}
	return dst
}
