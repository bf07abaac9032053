// Package wav reads WAV files that admins upload (prompts, music on hold)
// and writes the box's own. The reader is strict and bounded: it accepts
// RIFF/WAVE with PCM 8/16-bit, A-law or µ-law, mono or stereo, 8-48 kHz,
// converts it to the box's mono 8 or 16 kHz, and refuses anything else
// with a reason an admin can act on.
package wav

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

// Limits of an upload.
const (
	DefaultMaxBytes = 32 << 20 // 32 MiB: about 3 minutes of 48 kHz stereo
	DefaultMaxAudio = 10 * time.Minute
	maxChunks       = 64
	MinRate         = 8000
	MaxRate         = 48000
)

// Format codes of the fmt chunk.
const (
	formatPCM        = 1
	formatALaw       = 6
	formatMuLaw      = 7
	formatExtensible = 0xfffe
)

// ErrRefused wraps every reason an upload is not accepted.
var ErrRefused = errors.New("wav: refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Info describes the file as uploaded.
type Info struct {
	Format        string // "pcm", "alaw", "mulaw"
	Channels      int
	SampleRate    int
	BitsPerSample int
	Duration      time.Duration
}

// Options bound a parse.
type Options struct {
	MaxBytes int64         // file size cap; DefaultMaxBytes when 0
	MaxAudio time.Duration // audio length cap; DefaultMaxAudio when 0
	Rate     int           // output rate, 8000 or 16000
}

// Read parses a WAV file from r (reading at most MaxBytes+1 bytes) and
// returns its audio as mono PCM at opts.Rate.
func Read(r io.Reader, opts Options) ([]int16, Info, error) {
	maxBytes := opts.MaxBytes
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, Info{}, fmt.Errorf("wav: read: %w", err)
	}
	if int64(len(data)) > maxBytes {
		return nil, Info{}, refuse("file larger than %d bytes", maxBytes)
	}
	return Parse(data, opts)
}

type format struct {
	code, channels   uint16
	rate, byteRate   uint32
	blockAlign, bits uint16
}

// Parse is Read on a byte slice.
func Parse(data []byte, opts Options) ([]int16, Info, error) {
	if opts.Rate != 8000 && opts.Rate != 16000 {
		return nil, Info{}, fmt.Errorf("wav: output rate %d: only 8000 or 16000", opts.Rate)
	}
	maxAudio := opts.MaxAudio
	if maxAudio <= 0 {
		maxAudio = DefaultMaxAudio
	}
	if opts.MaxBytes > 0 && int64(len(data)) > opts.MaxBytes {
		return nil, Info{}, refuse("file larger than %d bytes", opts.MaxBytes)
	}
	if len(data) < 12 || string(data[0:4]) != "RIFF" || string(data[8:12]) != "WAVE" {
		return nil, Info{}, refuse("not a RIFF/WAVE file")
	}
	riffSize := binary.LittleEndian.Uint32(data[4:8])
	if uint64(riffSize) < 4 || uint64(riffSize)+8 > uint64(len(data)) {
		return nil, Info{}, refuse("RIFF size %d does not match the file's %d bytes", riffSize, len(data))
	}
	body := data[12 : 8+riffSize] // trailing bytes after the RIFF chunk are ignored
	var f *format
	var pcm []byte
	for n := 0; len(body) > 0; n++ {
		if n >= maxChunks {
			return nil, Info{}, refuse("more than %d chunks", maxChunks)
		}
		if len(body) < 8 {
			return nil, Info{}, refuse("truncated chunk header")
		}
		id, size := string(body[0:4]), binary.LittleEndian.Uint32(body[4:8])
		if uint64(size) > uint64(len(body)-8) {
			return nil, Info{}, refuse("chunk %q of %d bytes runs past the end of the file", printable(id), size)
		}
		chunk := body[8 : 8+size]
		next := 8 + uint64(size) + uint64(size&1) // chunks are padded to even sizes
		body = body[min(next, uint64(len(body))):]
		switch id {
		case "fmt ":
			if f != nil {
				return nil, Info{}, refuse("two fmt chunks")
			}
			var err error
			if f, err = parseFmt(chunk); err != nil {
				return nil, Info{}, err
			}
		case "data":
			if f == nil {
				return nil, Info{}, refuse("data chunk before the fmt chunk")
			}
			if pcm != nil {
				return nil, Info{}, refuse("two data chunks")
			}
			pcm = chunk
		}
	}
	if f == nil {
		return nil, Info{}, refuse("no fmt chunk")
	}
	if pcm == nil {
		return nil, Info{}, refuse("no data chunk")
	}
	if len(pcm)%int(f.blockAlign) != 0 {
		pcm = pcm[:len(pcm)-len(pcm)%int(f.blockAlign)] // a partial last frame
	}
	frames := len(pcm) / int(f.blockAlign)
	if frames == 0 {
		return nil, Info{}, refuse("no audio in the data chunk")
	}
	info := Info{
		Channels: int(f.channels), SampleRate: int(f.rate), BitsPerSample: int(f.bits),
		Duration: time.Duration(frames) * time.Second / time.Duration(f.rate),
	}
	switch f.code {
	case formatPCM:
		info.Format = "pcm"
	case formatALaw:
		info.Format = "alaw"
	case formatMuLaw:
		info.Format = "mulaw"
	}
	if info.Duration > maxAudio {
		return nil, Info{}, refuse("%v of audio, limit %v", info.Duration.Round(time.Second), maxAudio)
	}
	mono := toMono(pcm, f, frames)
	return resample(mono, int(f.rate), opts.Rate), info, nil
}

func parseFmt(c []byte) (*format, error) {
	if len(c) < 16 {
		return nil, refuse("fmt chunk of %d bytes, need 16", len(c))
	}
	f := &format{
		code:       binary.LittleEndian.Uint16(c[0:2]),
		channels:   binary.LittleEndian.Uint16(c[2:4]),
		rate:       binary.LittleEndian.Uint32(c[4:8]),
		byteRate:   binary.LittleEndian.Uint32(c[8:12]),
		blockAlign: binary.LittleEndian.Uint16(c[12:14]),
		bits:       binary.LittleEndian.Uint16(c[14:16]),
	}
	if f.code == formatExtensible {
		// WAVE_FORMAT_EXTENSIBLE: the real format is the first two bytes
		// of the sub-format GUID (the rest is the fixed KSDATAFORMAT tail).
		if len(c) < 40 || binary.LittleEndian.Uint16(c[16:18]) < 22 {
			return nil, refuse("WAVE_FORMAT_EXTENSIBLE fmt chunk too short")
		}
		if valid := binary.LittleEndian.Uint16(c[18:20]); valid != 0 && valid != f.bits {
			return nil, refuse("%d valid bits in %d-bit containers", valid, f.bits)
		}
		const tail = "\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
		if string(c[26:40]) != tail {
			return nil, refuse("unknown WAVE_FORMAT_EXTENSIBLE sub-format")
		}
		f.code = binary.LittleEndian.Uint16(c[24:26])
	}
	switch f.code {
	case formatPCM:
		if f.bits != 8 && f.bits != 16 {
			return nil, refuse("%d-bit PCM: only 8 or 16-bit (convert with any audio editor)", f.bits)
		}
	case formatALaw, formatMuLaw:
		if f.bits != 8 {
			return nil, refuse("G.711 with %d bits per sample", f.bits)
		}
	case 3:
		return nil, refuse("floating-point samples: save as 16-bit PCM")
	default:
		return nil, refuse("audio format %#x: only PCM, A-law or µ-law (MP3, ADPCM and others are not accepted)", f.code)
	}
	if f.channels != 1 && f.channels != 2 {
		return nil, refuse("%d channels: only mono or stereo", f.channels)
	}
	if f.rate < MinRate || f.rate > MaxRate {
		return nil, refuse("sample rate %d Hz: only %d-%d Hz", f.rate, MinRate, MaxRate)
	}
	if want := f.channels * f.bits / 8; f.blockAlign != want {
		return nil, refuse("block align %d, want %d for %d channels of %d bits", f.blockAlign, want, f.channels, f.bits)
	}
	if want := f.rate * uint32(f.blockAlign); f.byteRate != want {
		return nil, refuse("byte rate %d, want %d", f.byteRate, want)
	}
	return f, nil
}

func printable(s string) string {
	for _, r := range []byte(s) {
		if r < 0x20 || r > 0x7e {
			return fmt.Sprintf("%x", s)
		}
	}
	return s
}

// toMono decodes the frames and averages the channels.
func toMono(pcm []byte, f *format, frames int) []float64 {
	out := make([]float64, frames)
	bps := int(f.bits / 8)
	ch := int(f.channels)
	for i := range frames {
		var sum float64
		for c := range ch {
			off := (i*ch + c) * bps
			var v int16
			switch {
			case f.code == formatALaw:
				v = codec.AlawDecodeSample(pcm[off])
			case f.code == formatMuLaw:
				v = codec.MulawDecodeSample(pcm[off])
			case bps == 1:
				v = int16(int(pcm[off])-128) << 8 // 8-bit WAV PCM is unsigned
			default:
				v = int16(binary.LittleEndian.Uint16(pcm[off:]))
			}
			sum += float64(v)
		}
		out[i] = sum / float64(ch)
	}
	return out
}

// resample converts between any two rates with a Kaiser-windowed sinc
// (16 zero crossings each side, cut-off just below the lower Nyquist
// frequency). Uploads are converted once, so clarity wins over speed.
func resample(in []float64, from, to int) []int16 {
	n := int(int64(len(in)) * int64(to) / int64(from))
	out := make([]int16, n)
	if from == to {
		for i := range out {
			out[i] = clip(in[i])
		}
		return out
	}
	const zeros = 16
	const beta = 8.0
	const perZero = 512 // kernel table resolution per zero crossing
	ratio := float64(to) / float64(from)
	cut := 0.95 * math.Min(1, ratio) // relative to the input Nyquist
	half := float64(zeros) / cut     // filter half-width in input samples
	// The kernel as a function of |x|/half, tabulated once per call.
	table := make([]float64, zeros*perZero+2)
	i0b := besselI0(beta)
	for i := range table {
		w := float64(i) / float64(zeros*perZero)
		x := w * half
		arg := math.Pi * x * cut
		s := cut
		if arg != 0 {
			s = cut * math.Sin(arg) / arg
		}
		table[i] = s * besselI0(beta*math.Sqrt(math.Max(0, 1-w*w))) / i0b
	}
	scale := float64(zeros*perZero) / half
	for j := range out {
		t := float64(j) / ratio // position in input samples
		lo := int(math.Ceil(t - half))
		hi := int(math.Floor(t + half))
		var acc float64
		for k := max(lo, 0); k <= hi && k < len(in); k++ {
			p := math.Abs(float64(k)-t) * scale
			idx := int(p)
			if idx >= len(table)-1 {
				continue
			}
			fr := p - float64(idx)
			acc += in[k] * (table[idx] + fr*(table[idx+1]-table[idx]))
		}
		out[j] = clip(acc)
	}
	return out
}

func besselI0(x float64) float64 {
	s, term := 1.0, 1.0
	for k := 1; k < 40; k++ {
		term *= (x / 2) / float64(k)
		s += term * term
		if term*term < 1e-12*s {
			break
		}
	}
	return s
}

func clip(v float64) int16 {
	return int16(max(-32768, min(32767, math.Round(v))))
}

// Encode returns a mono 16-bit PCM WAV file of samples at rate.
func Encode(rate int, samples []int16) []byte {
	n := 2 * len(samples)
	out := make([]byte, 0, 44+n)
	out = append(out, "RIFF"...)
	out = binary.LittleEndian.AppendUint32(out, uint32(36+n))
	out = append(out, "WAVEfmt "...)
	out = binary.LittleEndian.AppendUint32(out, 16)
	out = binary.LittleEndian.AppendUint16(out, formatPCM)
	out = binary.LittleEndian.AppendUint16(out, 1)
	out = binary.LittleEndian.AppendUint32(out, uint32(rate))
	out = binary.LittleEndian.AppendUint32(out, uint32(rate*2))
	out = binary.LittleEndian.AppendUint16(out, 2)
	out = binary.LittleEndian.AppendUint16(out, 16)
	out = append(out, "data"...)
	out = binary.LittleEndian.AppendUint32(out, uint32(n))
	for _, s := range samples {
		out = binary.LittleEndian.AppendUint16(out, uint16(s))
	}
	return out
}
