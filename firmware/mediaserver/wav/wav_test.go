package wav

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

type spec struct {
	code, channels, bits uint16
	rate                 uint32
	blockAlign           uint16 // 0: computed
	byteRate             uint32 // 0: computed
	data                 []byte
	pre, post            [][2]string // extra chunks (id, body) before fmt / between fmt and data
	extensible           bool
}

func chunk(id string, body []byte) []byte {
	out := append([]byte(id), binary.LittleEndian.AppendUint32(nil, uint32(len(body)))...)
	out = append(out, body...)
	if len(body)%2 == 1 {
		out = append(out, 0)
	}
	return out
}

func build(s spec) []byte {
	ba := s.blockAlign
	if ba == 0 {
		ba = s.channels * s.bits / 8
	}
	br := s.byteRate
	if br == 0 {
		br = s.rate * uint32(ba)
	}
	code := s.code
	if s.extensible {
		code = formatExtensible
	}
	f := binary.LittleEndian.AppendUint16(nil, code)
	f = binary.LittleEndian.AppendUint16(f, s.channels)
	f = binary.LittleEndian.AppendUint32(f, s.rate)
	f = binary.LittleEndian.AppendUint32(f, br)
	f = binary.LittleEndian.AppendUint16(f, ba)
	f = binary.LittleEndian.AppendUint16(f, s.bits)
	if s.extensible {
		f = binary.LittleEndian.AppendUint16(f, 22)
		f = binary.LittleEndian.AppendUint16(f, s.bits)
		f = binary.LittleEndian.AppendUint32(f, 4) // channel mask
		f = binary.LittleEndian.AppendUint16(f, s.code)
		f = append(f, "\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"...)
	}
	var body []byte
	for _, c := range s.pre {
		body = append(body, chunk(c[0], []byte(c[1]))...)
	}
	body = append(body, chunk("fmt ", f)...)
	for _, c := range s.post {
		body = append(body, chunk(c[0], []byte(c[1]))...)
	}
	body = append(body, chunk("data", s.data)...)
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(body)))...)
	out = append(out, "WAVE"...)
	return append(out, body...)
}

func sine(f float64, rate, n int, amp float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = amp * math.Sin(2*math.Pi*f*float64(i)/float64(rate))
	}
	return out
}

func pcm16(channels int, x []float64) []byte {
	var out []byte
	for _, v := range x {
		for range channels {
			out = binary.LittleEndian.AppendUint16(out, uint16(int16(v)))
		}
	}
	return out
}

func level(x []int16, f float64, rate int) float64 {
	c := 2 * math.Cos(2*math.Pi*f/float64(rate))
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	return 2 * math.Sqrt(s1*s1+s2*s2-c*s1*s2) / float64(len(x))
}

// Accepted formats are converted to mono at the box's rate with the tone
// at its level; a tone above the output band is removed, not aliased.
func TestAccepts(t *testing.T) {
	tone := func(rate int) []float64 { return sine(1000, rate, rate, 8000) }
	var alaw, ulaw, u8 []byte
	for _, v := range tone(8000) {
		alaw = append(alaw, codec.AlawEncodeSample(int16(v)))
		ulaw = append(ulaw, codec.MulawEncodeSample(int16(v)))
	}
	for _, v := range tone(11025) {
		u8 = append(u8, byte(int(v)>>8+128))
	}
	cases := []struct {
		name string
		s    spec
		info Info
	}{
		{"pcm16 mono 8k", spec{code: 1, channels: 1, bits: 16, rate: 8000, data: pcm16(1, tone(8000))}, Info{"pcm", 1, 8000, 16, time.Second}},
		{"pcm16 stereo 44.1k", spec{code: 1, channels: 2, bits: 16, rate: 44100, data: pcm16(2, tone(44100))}, Info{"pcm", 2, 44100, 16, time.Second}},
		{"pcm16 48k extensible", spec{code: 1, channels: 1, bits: 16, rate: 48000, data: pcm16(1, tone(48000)), extensible: true}, Info{"pcm", 1, 48000, 16, time.Second}},
		{"pcm8 11025 with LIST", spec{code: 1, channels: 1, bits: 8, rate: 11025, data: u8, pre: [][2]string{{"JUNK", "odd"}}, post: [][2]string{{"LIST", "INFOtext"}}}, Info{"pcm", 1, 11025, 8, time.Second}},
		{"alaw", spec{code: 6, channels: 1, bits: 8, rate: 8000, data: alaw}, Info{"alaw", 1, 8000, 8, time.Second}},
		{"mulaw", spec{code: 7, channels: 1, bits: 8, rate: 8000, data: ulaw}, Info{"mulaw", 1, 8000, 8, time.Second}},
	}
	for _, c := range cases {
		for _, rate := range []int{8000, 16000} {
			out, info, err := Parse(build(c.s), Options{Rate: rate})
			if err != nil {
				t.Errorf("%s -> %d: %v", c.name, rate, err)
				continue
			}
			if info != c.info {
				t.Errorf("%s: info %+v, want %+v", c.name, info, c.info)
			}
			if len(out) != rate {
				t.Errorf("%s -> %d: %d samples", c.name, rate, len(out))
			}
			if l := level(out[len(out)/4:3*len(out)/4], 1000, rate); math.Abs(l-8000) > 400 {
				t.Errorf("%s -> %d: 1 kHz at %.0f, want 8000", c.name, rate, l)
			}
		}
	}
	high := build(spec{code: 1, channels: 1, bits: 16, rate: 48000, data: pcm16(1, sine(6000, 48000, 24000, 8000))})
	out, _, err := Parse(high, Options{Rate: 8000})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []float64{6000 - 8000 + 8000, 2000} { // 6 kHz would alias to 2 kHz at 8k
		if l := level(out[100:len(out)-100], f, 8000); l > 80 {
			t.Errorf("6 kHz input leaks at %v Hz with level %.0f", f, l)
		}
	}
}

func TestRefuses(t *testing.T) {
	good := spec{code: 1, channels: 1, bits: 16, rate: 8000, data: make([]byte, 1600)}
	mod := func(f func(*spec)) []byte { s := good; f(&s); return build(s) }
	long := build(spec{code: 1, channels: 1, bits: 8, rate: 8000, data: make([]byte, 8000*11)})
	many := good
	for range maxChunks {
		many.post = append(many.post, [2]string{"JUNK", ""})
	}
	overrun := build(good)
	binary.LittleEndian.PutUint32(overrun[40:], 1<<20) // data size past the end
	cases := []struct {
		name string
		in   []byte
		opt  Options
		why  string
	}{
		{"empty", nil, Options{}, "not a RIFF"},
		{"mp3", []byte("ID3\x03\x00\x00\x00\x00\x00\x00\x00\x00"), Options{}, "not a RIFF"},
		{"float", mod(func(s *spec) { s.code = 3; s.bits = 32 }), Options{}, "floating-point"},
		{"24-bit", mod(func(s *spec) { s.bits = 24; s.data = make([]byte, 1602) }), Options{}, "24-bit"},
		{"adpcm", mod(func(s *spec) { s.code = 2; s.bits = 4 }), Options{}, "audio format"},
		{"6 channels", mod(func(s *spec) { s.channels = 6 }), Options{}, "6 channels"},
		{"96 kHz", mod(func(s *spec) { s.rate = 96000 }), Options{}, "96000 Hz"},
		{"4 kHz", mod(func(s *spec) { s.rate = 4000 }), Options{}, "4000 Hz"},
		{"block align", mod(func(s *spec) { s.blockAlign = 4 }), Options{}, "block align"},
		{"byte rate", mod(func(s *spec) { s.byteRate = 1 }), Options{}, "byte rate"},
		{"alaw 16-bit", mod(func(s *spec) { s.code = 6 }), Options{}, "G.711"},
		{"no data", mod(func(s *spec) { s.data = nil }), Options{}, "no audio"},
		{"chunk overrun", overrun, Options{}, "runs past"},
		{"riff size", append(build(good)[:100], 0), Options{}, "RIFF size"},
		{"too many chunks", build(many), Options{}, "chunks"},
		{"too big", build(good), Options{MaxBytes: 100}, "larger than"},
		{"too long", long, Options{MaxAudio: 10 * time.Second}, "limit"},
		{"two fmt", mod(func(s *spec) { s.post = [][2]string{{"fmt ", strings.Repeat("x", 16)}} }), Options{}, "two fmt"},
	}
	for _, c := range cases {
		if c.opt.Rate == 0 {
			c.opt.Rate = 8000
		}
		_, _, err := Parse(c.in, c.opt)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%s: %v, want a refusal mentioning %q", c.name, err, c.why)
		}
	}
	if _, _, err := Parse(build(good), Options{Rate: 44100}); err == nil {
		t.Error("output rate 44100 accepted")
	}
	// Read applies the size cap without reading the whole stream.
	if _, _, err := Read(bytes.NewReader(make([]byte, 1000)), Options{Rate: 8000, MaxBytes: 10}); !errors.Is(err, ErrRefused) {
		t.Errorf("Read over the cap: %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	in := []int16{0, 1, -1, 32767, -32768, 1234}
	for _, rate := range []int{8000, 16000} {
		out, info, err := Parse(Encode(rate, in), Options{Rate: rate})
		if err != nil || !slices.Equal(out, in) || info.SampleRate != rate || info.Channels != 1 {
			t.Errorf("%d: %v %+v %v", rate, out, info, err)
		}
	}
}
