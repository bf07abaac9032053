package baresiptest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"
)

// PCM is mono 16-bit PCM.
type PCM struct {
	Rate    int
	Samples []int16
}

// ReadWAV reads a mono 16-bit PCM RIFF/WAVE file.
func ReadWAV(path string) (PCM, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return PCM{}, err
	}
	if len(raw) < 12 || string(raw[:4]) != "RIFF" || string(raw[8:12]) != "WAVE" {
		return PCM{}, fmt.Errorf("%s: not a WAV file", path)
	}
	var w PCM
	fmtSeen := false
	for p := 12; p+8 <= len(raw); {
		id, size := string(raw[p:p+4]), int(binary.LittleEndian.Uint32(raw[p+4:]))
		body := raw[p+8:]
		if size > len(body) || size < 0 {
			size = len(body) // a header never completed
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if len(body) < 16 {
				return PCM{}, fmt.Errorf("%s: short fmt chunk", path)
			}
			format, ch := binary.LittleEndian.Uint16(body), binary.LittleEndian.Uint16(body[2:])
			bits := binary.LittleEndian.Uint16(body[14:])
			if format != 1 || ch != 1 || bits != 16 {
				return PCM{}, fmt.Errorf("%s: format %d, %d channels, %d bits: want mono 16-bit PCM", path, format, ch, bits)
			}
			w.Rate = int(binary.LittleEndian.Uint32(body[4:]))
			fmtSeen = true
		case "data":
			if !fmtSeen {
				return PCM{}, fmt.Errorf("%s: data before fmt", path)
			}
			w.Samples = make([]int16, size/2)
			for i := range w.Samples {
				w.Samples[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return w, nil
		}
		p += 8 + size + size%2
	}
	return PCM{}, errors.New(path + ": no data chunk")
}

// goertzel is the power of x at freq Hz, normalised so that a pure sine
// at freq gives its share 1 of the block's energy: 2|X(f)|² / (N·Σx²).
func goertzel(x []float64, freq float64, rate int) float64 {
	w := 2 * math.Pi * freq / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2, energy float64
	for _, v := range x {
		s1, s2 = v+c*s1-s2, s1
		energy += v * v
	}
	if energy == 0 {
		return 0
	}
	power := s1*s1 + s2*s2 - c*s1*s2
	return 2 * power / (float64(len(x)) * energy)
}

func rms(x []float64) float64 {
	var e float64
	for _, v := range x {
		e += v * v
	}
	return math.Sqrt(e / float64(len(x)))
}

// steady is the audio after the first half second (jitter buffer fill,
// call set-up), in 100 ms blocks, trailing partial block dropped.
func steady(w PCM) [][]float64 {
	block := w.Rate / 10
	var out [][]float64
	for i := w.Rate / 2; i+block <= len(w.Samples); i += block {
		b := make([]float64, block)
		for j := range b {
			b[j] = float64(w.Samples[i+j])
		}
		out = append(out, b)
	}
	return out
}

// ToneBlocks counts the 100 ms blocks of got, one side's decoded audio,
// that are the other side's sent tone: the strongest frequency in a 10 Hz
// scan of the voice band is tone Hz, it holds at least 90 % of the
// block's energy (a corrupted, undecrypted or missing frame is noise or
// silence) and the block is about as loud as what was sent.
func ToneBlocks(got, sent PCM, tone float64) (good, total int, sentRMS float64, bad []string, err error) {
	if got.Rate != 8000 || sent.Rate != 8000 {
		return 0, 0, 0, nil, fmt.Errorf("rates %d/%d, want 8000 (PCMU)", got.Rate, sent.Rate)
	}
	blocks, ref := steady(got), steady(sent)
	if len(blocks) < 10 || len(ref) < 10 {
		return 0, 0, 0, nil, fmt.Errorf("%d/%d blocks of audio", len(blocks), len(ref))
	}
	for _, b := range ref {
		sentRMS += rms(b) / float64(len(ref))
	}
	for i, b := range blocks {
		best, bestF := 0.0, 0.0
		for f := 100.0; f < 3900; f += 10 {
			if p := goertzel(b, f, got.Rate); p > best {
				best, bestF = p, f
			}
		}
		share, level := goertzel(b, tone, got.Rate), rms(b)
		if math.Abs(bestF-tone) <= 10 && share >= 0.9 && level >= 0.7*sentRMS && level <= 1.3*sentRMS {
			good++
		} else if len(bad) < 5 {
			bad = append(bad, fmt.Sprintf("block %d: peak %.0f Hz, %.0f Hz share %.2f, rms %.0f", i, bestF, tone, share, level))
		}
	}
	return good, len(blocks), sentRMS, bad, nil
}

// CheckTone requires nearly all of got's blocks to be the sent tone
// (ToneBlocks), and the sent audio not to be silent.
func CheckTone(tb testing.TB, what string, got, sent PCM, tone float64) {
	tb.Helper()
	good, total, sentRMS, bad, err := ToneBlocks(got, sent, tone)
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
	tb.Logf("%s: %d of %d blocks a clean %.0f Hz tone (sent rms %.0f)", what, good, total, tone, sentRMS)
	if sentRMS < 1000 {
		tb.Fatalf("%s: sent audio rms %.0f: the sine source is silent", what, sentRMS)
	}
	if good < total*9/10 {
		tb.Fatalf("%s: only %d of %d blocks carry the %.0f Hz tone: %s", what, good, total, tone, strings.Join(bad, "; "))
	}
}

// Blocks cuts w into 100 ms blocks from its very start (a trailing
// partial block dropped), for checks that classify audio over time.
func Blocks(w PCM) [][]float64 {
	block := w.Rate / 10
	var out [][]float64
	for i := 0; block > 0 && i+block <= len(w.Samples); i += block {
		b := make([]float64, block)
		for j := range b {
			b[j] = float64(w.Samples[i+j])
		}
		out = append(out, b)
	}
	return out
}

// Share is the part of block's energy at freq Hz (Goertzel): 1 for a pure
// sine at freq.
func Share(block []float64, freq float64, rate int) float64 { return goertzel(block, freq, rate) }

// RMS is block's root mean square level.
func RMS(block []float64) float64 { return rms(block) }
