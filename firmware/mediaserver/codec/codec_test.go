package codec

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// tone returns n samples of a sine at f Hz, amplitude amp, sampled at rate.
func tone(n int, f, amp, rate float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*f*float64(i)/rate))
	}
	return out
}

// speechLike is a deterministic noise-excited, slowly modulated signal with
// speech's falling spectrum (a few formant-like resonators).
func speechLike(n int, rate float64, seed uint64) []int16 {
	r := rand.New(rand.NewPCG(seed, 1))
	out := make([]int16, n)
	type res struct{ y1, y2, a1, a2 float64 }
	mk := func(f, bw float64) res {
		rr := math.Exp(-math.Pi * bw / rate)
		return res{a1: 2 * rr * math.Cos(2*math.Pi*f/rate), a2: -rr * rr}
	}
	rs := []res{mk(500, 80), mk(1500, 120), mk(2500, 160)}
	for i := range out {
		pulse := 0.0
		if i%int(rate/120) == 0 {
			pulse = 1
		}
		e := pulse*3000 + r.NormFloat64()*300
		y := 0.0
		for k := range rs {
			v := e + rs[k].a1*rs[k].y1 + rs[k].a2*rs[k].y2
			rs[k].y2, rs[k].y1 = rs[k].y1, v
			y += v
		}
		env := 0.5 + 0.5*math.Sin(2*math.Pi*3*float64(i)/rate)
		out[i] = int16(max(-32768, min(32767, y*env*0.05)))
	}
	return out
}

// snrDB compares ref with got shifted by delay samples, skipping warm-up.
func snrDB(ref, got []int16, delay, skip int) float64 {
	var sig, noise float64
	for i := skip; i+delay < len(got) && i < len(ref); i++ {
		d := float64(ref[i]) - float64(got[i+delay])
		sig += float64(ref[i]) * float64(ref[i])
		noise += d * d
	}
	if noise == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(sig/noise)
}

// bestDelay finds the delay (0..maxD) with the best SNR.
func bestDelay(ref, got []int16, maxD, skip int) (int, float64) {
	best, bd := math.Inf(-1), 0
	for d := 0; d <= maxD; d++ {
		if s := snrDB(ref, got, d, skip); s > best {
			best, bd = s, d
		}
	}
	return bd, best
}

// Values fixed by the standard's tables: the extremes and the codes nearest
// zero (µ-law 0xFF/0x7F are ±0, A-law 0xD5/0x55 are ±8).
func TestG711KnownValues(t *testing.T) {
	cases := []struct {
		name string
		got  int16
		want int16
	}{
		{"ulaw 0xFF", MulawDecodeSample(0xFF), 0},
		{"ulaw 0x7F", MulawDecodeSample(0x7F), 0},
		{"ulaw 0x80", MulawDecodeSample(0x80), 32124},
		{"ulaw 0x00", MulawDecodeSample(0x00), -32124},
		{"ulaw 0xFE", MulawDecodeSample(0xFE), 8},
		{"ulaw 0xEF", MulawDecodeSample(0xEF), 132},
		{"alaw 0xD5", AlawDecodeSample(0xD5), 8},
		{"alaw 0x55", AlawDecodeSample(0x55), -8},
		{"alaw 0xAA", AlawDecodeSample(0xAA), 32256},
		{"alaw 0x2A", AlawDecodeSample(0x2A), -32256},
		{"alaw 0xC5", AlawDecodeSample(0xC5), 264},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	enc := []struct {
		name string
		got  byte
		want byte
	}{
		{"ulaw(0)", MulawEncodeSample(0), 0xFF},
		{"ulaw(-1)", MulawEncodeSample(-1), 0x7F},
		{"ulaw(32767)", MulawEncodeSample(32767), 0x80},
		{"ulaw(-32768)", MulawEncodeSample(-32768), 0x00},
		{"alaw(0)", AlawEncodeSample(0), 0xD5},
		{"alaw(-1)", AlawEncodeSample(-1), 0x55},
		{"alaw(32767)", AlawEncodeSample(32767), 0xAA},
		{"alaw(-32768)", AlawEncodeSample(-32768), 0x2A},
	}
	for _, c := range enc {
		if c.got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

// Every code is a fixed point of decode-then-encode (except µ-law's
// negative zero), and encoding picks the nearest reconstruction level.
func TestG711Tables(t *testing.T) {
	for c := range 256 {
		if c == 0x7F {
			continue
		}
		if got := MulawEncodeSample(MulawDecodeSample(byte(c))); got != byte(c) {
			t.Errorf("ulaw %#x -> %d -> %#x", c, MulawDecodeSample(byte(c)), got)
		}
		if got := AlawEncodeSample(AlawDecodeSample(byte(c))); got != byte(c) {
			t.Errorf("alaw %#x -> %d -> %#x", c, AlawDecodeSample(byte(c)), got)
		}
	}
	// Monotonic over the whole input range, and the error never exceeds
	// half a step of the segment (G.711's step grows to 1024/2048 at the top).
	prevU, prevA := int16(math.MinInt16), int16(math.MinInt16)
	for x := math.MinInt16; x <= math.MaxInt16; x++ {
		u := MulawDecodeSample(MulawEncodeSample(int16(x)))
		a := AlawDecodeSample(AlawEncodeSample(int16(x)))
		if u < prevU || a < prevA {
			t.Fatalf("not monotonic at %d", x)
		}
		prevU, prevA = u, a
		if e := abs(int(u) - x); e > 1024+132 {
			t.Fatalf("ulaw error %d at %d", e, x)
		}
		if e := abs(int(a) - x); e > 1024 {
			t.Fatalf("alaw error %d at %d", e, x)
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// G.711's SNR on a full-scale-ish tone is about 38 dB (companding keeps it
// flat over a wide range of levels).
func TestG711ToneSNR(t *testing.T) {
	for _, name := range []string{"PCMU", "PCMA"} {
		c, err := New(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, amp := range []float64{30000, 3000, 300} {
			in := tone(8000, 1004, amp, 8000)
			out := c.Decode(nil, c.Encode(nil, in))
			if s := snrDB(in, out, 0, 0); s < 33 {
				t.Errorf("%s amp %.0f: SNR %.1f dB, want >= 33", name, amp, s)
			}
		}
	}
}

// The QMF pair alone reconstructs the input (delay 23 samples) for tones in
// both sub-bands: checks the filter, its symmetry and the band signs.
func TestQMFReconstruction(t *testing.T) {
	for _, f := range []float64{300, 1000, 3400, 5000, 6500} {
		in := tone(3200, f, 8000, 16000)
		var ta, tr qmfLine
		var out []int16
		for i := 0; i+1 < len(in); i += 2 {
			xl, xh := qmfAnalysis(&ta, in[i], in[i+1])
			a, b := qmfSynthesis(&tr, xl, xh)
			out = append(out, a, b)
		}
		d, s := bestDelay(in, out, 40, 100)
		if s < 35 {
			t.Errorf("%v Hz: QMF SNR %.1f dB at delay %d, want >= 35", f, s, d)
		}
	}
}

func TestG722RoundTrip(t *testing.T) {
	cases := []struct {
		name string
		in   []int16
		min  float64
	}{
		{"1kHz loud", tone(16000, 1000, 16000, 16000), 40},
		{"1kHz quiet", tone(16000, 1000, 1000, 16000), 35},
		{"300Hz", tone(16000, 300, 8000, 16000), 50},
		{"5kHz upper band", tone(16000, 5000, 4000, 16000), 18},
		{"speech-like", speechLike(32000, 16000, 7), 25},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			enc, dec := NewG722(), NewG722()
			pay := enc.Encode(nil, c.in)
			if len(pay) != len(c.in)/2 {
				t.Fatalf("payload %d bytes for %d samples", len(pay), len(c.in))
			}
			out := dec.Decode(nil, pay)
			d, s := bestDelay(c.in, out, 40, 2000)
			t.Logf("SNR %.1f dB at delay %d", s, d)
			if s < c.min {
				t.Errorf("SNR %.1f dB, want >= %.0f", s, c.min)
			}
			if c.name == "speech-like" && d != 22 && d != 23 { // tones are periodic
				t.Errorf("delay %d, want the QMF pair's 22-23 samples", d)
			}
		})
	}
}

// Silence in gives silence out, and the encoder of a long silence settles
// on the codes for the smallest levels.
func TestG722Silence(t *testing.T) {
	enc, dec := NewG722(), NewG722()
	out := dec.Decode(nil, enc.Encode(nil, make([]int16, 3200)))
	for i, v := range out {
		if v < -16 || v > 16 {
			t.Fatalf("sample %d = %d from silence", i, v)
		}
	}
}

func TestLookup(t *testing.T) {
	cases := []struct {
		in   string
		name string
		rate int
		err  bool
	}{
		{"PCMU", "PCMU", 8000, false},
		{"pcma/8000", "PCMA", 8000, false},
		{"G722/8000/1", "G722", 16000, false},
		{"G722/16000", "", 0, true},
		{"PCMU/8000/2", "", 0, true},
		{"opus/48000/2", "", 0, true},
		{"telephone-event/8000", "", 0, true},
		{"", "", 0, true},
	}
	for _, c := range cases {
		got, err := New(c.in)
		if c.err {
			if !errors.Is(err, ErrUnknown) {
				t.Errorf("%q: err %v, want ErrUnknown", c.in, err)
			}
			continue
		}
		if err != nil || got.Name() != c.name || got.SampleRate() != c.rate || got.ClockRate() != 8000 {
			t.Errorf("%q: %v %v", c.in, got, err)
		}
		if got.FrameSamples() != got.SampleRate()/50 {
			t.Errorf("%q: frame %d", c.in, got.FrameSamples())
		}
		byPT, err := ByPayloadType(got.PayloadType())
		if err != nil || byPT.Name() != got.Name() {
			t.Errorf("%q: by payload type %d: %v %v", c.in, got.PayloadType(), byPT, err)
		}
	}
	if _, err := ByPayloadType(18); !errors.Is(err, ErrUnknown) {
		t.Errorf("PT 18: %v", err)
	}
}

// A tone in the telephone band survives 8k -> 16k -> 8k; a tone above
// 4 kHz is removed by the down-sampler instead of aliasing.
func TestResample(t *testing.T) {
	var up Upsampler
	var down Downsampler
	in := tone(8000, 1000, 10000, 8000)
	wide := up.Process(nil, in)
	if len(wide) != 2*len(in) {
		t.Fatalf("upsampled %d samples", len(wide))
	}
	ref16 := tone(16000, 1000, 10000, 16000)
	if d, s := bestDelay(ref16, wide, 60, 200); s < 35 {
		t.Errorf("8k->16k: SNR %.1f dB at delay %d", s, d)
	}
	back := down.Process(nil, wide)
	if len(back) != len(in) {
		t.Fatalf("downsampled %d samples", len(back))
	}
	if d, s := bestDelay(in, back, 60, 200); s < 35 || d%8 != 23%8 { // a 1 kHz tone repeats every 8 samples
		t.Errorf("8k->16k->8k: SNR %.1f dB at delay %d", s, d)
	}
	var down2 Downsampler
	hi := down2.Process(nil, tone(16000, 6000, 10000, 16000))
	var e float64
	for _, v := range hi[200:] {
		e += float64(v) * float64(v)
	}
	if rms := math.Sqrt(e / float64(len(hi)-200)); rms > 100 {
		t.Errorf("6 kHz tone leaks through the down-sampler at RMS %.0f", rms)
	}
}

func BenchmarkCodec(b *testing.B) {
	for _, name := range Names() {
		c, _ := New(name)
		pcm := speechLike(c.FrameSamples(), float64(c.SampleRate()), 1)
		pay := c.Encode(nil, pcm)
		b.Run(name+"/encode", func(b *testing.B) {
			var dst []byte
			for range b.N {
				dst = c.Encode(dst[:0], pcm)
			}
		})
		b.Run(name+"/decode", func(b *testing.B) {
			var dst []int16
			for range b.N {
				dst = c.Decode(dst[:0], pay)
			}
		})
	}
	in := speechLike(160, 8000, 1)
	b.Run("upsample-20ms", func(b *testing.B) {
		var u Upsampler
		var dst []int16
		for range b.N {
			dst = u.Process(dst[:0], in)
		}
	})
	wide := speechLike(320, 16000, 1)
	b.Run("downsample-20ms", func(b *testing.B) {
		var d Downsampler
		var dst []int16
		for range b.N {
			dst = d.Process(dst[:0], wide)
		}
	})
}
