// Package mix is the conference mixer: each participant hears the sum of
// everyone else (never its own voice), clipped to 16 bits, with 8 kHz
// (G.711) and 16 kHz (G.722) participants in one room. Join and leave
// tones, and any announcement, are heard by all.
package mix

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

// Config sizes a Mixer.
type Config struct {
	// SampleRate of the mix: 16000 keeps G.722 participants wideband;
	// 8000 suits rooms where everyone speaks G.711.
	SampleRate int
	// MaxParticipants bounds the room.
	MaxParticipants int
	// Tones plays a join and a leave tone to the room.
	Tones bool
}

// frameMillis is the mixer's tick: 20 ms, the packet time of the legs.
const frameMillis = 20

// ErrFull is returned by Join when the room is at MaxParticipants.
var ErrFull = errors.New("mix: room full")

// Mixer mixes one room. Its methods and its participants' methods are
// safe for concurrent use; the room's owner calls Mix once per 20 ms.
type Mixer struct {
	mu     sync.Mutex
	cfg    Config
	frame  int // samples per tick at the mix rate
	parts  map[*Participant]struct{}
	total  []int32
	extra  []int16 // announcement / tone samples still to play, at mix rate
	joinT  []int16
	leaveT []int16
}

// Participant is one leg in the room.
type Participant struct {
	m     *Mixer
	rate  int
	in    []int16 // this tick's contribution at the mix rate
	has   bool    // Write was called this tick
	out   []int16 // what it hears, at its own rate
	muted bool
	up    codec.Upsampler
	down  codec.Downsampler
	scr   []int16
	left  bool
	gain  float64 // the limiter's gain on what it hears, 0..1
}

// Limiter: what a participant hears is kept below limitPeak by a gain
// that drops at once and recovers over about half a second. Without it a
// few loud talkers sum past 16 bits; clipping puts intermodulation on
// everyone's voice, and a G.722 decoder near full scale may overflow
// (libspandsp wraps around) into loud noise.
const (
	limitPeak    = 22000 // about -3.5 dBFS
	limitRelease = 0.05  // share of the way back to unity gain per tick
)

// New returns an empty room.
func New(cfg Config) (*Mixer, error) {
	if cfg.SampleRate != 8000 && cfg.SampleRate != 16000 {
		return nil, fmt.Errorf("mix: sample rate %d: only 8000 or 16000", cfg.SampleRate)
	}
	if cfg.MaxParticipants < 2 || cfg.MaxParticipants > 256 {
		return nil, fmt.Errorf("mix: max participants %d: 2..256", cfg.MaxParticipants)
	}
	m := &Mixer{cfg: cfg, frame: cfg.SampleRate * frameMillis / 1000, parts: make(map[*Participant]struct{})}
	m.total = make([]int32, m.frame)
	m.joinT = beeps(cfg.SampleRate, []float64{440, 660})
	m.leaveT = beeps(cfg.SampleRate, []float64{660, 440})
	return m, nil
}

// beeps is two 120 ms tones with 40 ms between them at -16 dBFS, with short
// ramps so they do not click.
func beeps(rate int, freqs []float64) []int16 {
	var out []int16
	n := rate * 120 / 1000
	ramp := rate * 5 / 1000
	for _, f := range freqs {
		for i := range n {
			g := 1.0
			if i < ramp {
				g = float64(i) / float64(ramp)
			} else if n-i < ramp {
				g = float64(n-i) / float64(ramp)
			}
			out = append(out, int16(5000*g*math.Sin(2*math.Pi*f*float64(i)/float64(rate))))
		}
		out = append(out, make([]int16, rate*40/1000)...)
	}
	return out
}

// Len is the number of participants.
func (m *Mixer) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.parts)
}

// Join adds a participant speaking at rate (8000 or 16000 Hz PCM).
func (m *Mixer) Join(rate int) (*Participant, error) {
	if rate != 8000 && rate != 16000 {
		return nil, fmt.Errorf("mix: participant rate %d: only 8000 or 16000", rate)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.parts) >= m.cfg.MaxParticipants {
		return nil, ErrFull
	}
	p := &Participant{m: m, rate: rate, gain: 1, in: make([]int16, m.frame), out: make([]int16, 0, rate*frameMillis/1000)}
	m.parts[p] = struct{}{}
	if m.cfg.Tones {
		m.extra = append(m.extra, m.joinT...)
	}
	return p, nil
}

// Announce queues audio at the mix rate that every participant hears
// (capped at 30 s queued).
func (m *Mixer) Announce(pcm []int16) {
	m.mu.Lock()
	defer m.mu.Unlock()
	room := 30*m.cfg.SampleRate - len(m.extra)
	m.extra = append(m.extra, pcm[:max(0, min(len(pcm), room))]...)
}

// FrameSamples is the samples a participant of rate writes and reads per
// tick.
func FrameSamples(rate int) int { return rate * frameMillis / 1000 }

// Leave removes the participant; the others hear the leave tone.
func (p *Participant) Leave() {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.left {
		return
	}
	p.left = true
	delete(m.parts, p)
	if m.cfg.Tones && len(m.parts) > 0 {
		m.extra = append(m.extra, m.leaveT...)
	}
}

// SetMuted makes the participant listen only.
func (p *Participant) SetMuted(muted bool) {
	p.m.mu.Lock()
	p.muted = muted
	p.m.mu.Unlock()
}

// Write gives the participant's audio for this tick: FrameSamples(rate)
// samples at its own rate (shorter is padded with silence, longer is cut).
// A participant that does not write in a tick contributes silence.
func (p *Participant) Write(pcm []int16) {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	n := FrameSamples(p.rate)
	pcm = pcm[:min(len(pcm), n)]
	src := pcm
	if p.rate != m.cfg.SampleRate {
		p.scr = p.scr[:0]
		if p.rate < m.cfg.SampleRate {
			p.scr = p.up.Process(p.scr, pcm)
		} else {
			p.scr = p.down.Process(p.scr, pcm)
		}
		src = p.scr
	}
	k := copy(p.in, src)
	clear(p.in[k:])
	p.has = true
}

// Read appends what the participant hears this tick (at its own rate),
// computed by the last Mix, to dst.
func (p *Participant) Read(dst []int16) []int16 {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	return append(dst, p.out...)
}

// Mix computes one tick: everyone's output from everyone's input.
func (m *Mixer) Mix() {
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.total)
	for p := range m.parts {
		if !p.has || p.muted {
			continue
		}
		for i, s := range p.in {
			m.total[i] += int32(s)
		}
	}
	// Tones and announcements: part of everyone's output.
	var extra []int16
	if len(m.extra) > 0 {
		k := min(len(m.extra), m.frame)
		extra = m.extra[:k]
		m.extra = m.extra[k:]
		if len(m.extra) == 0 {
			m.extra = nil // release the backing array
		}
	}
	var buf [320]int16
	var sum [320]int32
	for p := range m.parts {
		mine := buf[:m.frame]
		own := p.has && !p.muted
		var peak int32
		for i, t := range m.total {
			if own {
				t -= int32(p.in[i])
			}
			if i < len(extra) {
				t += int32(extra[i])
			}
			sum[i] = t
			peak = max(peak, t, -t)
		}
		g := p.gain + (1-p.gain)*limitRelease
		if peak > limitPeak {
			g = min(g, float64(limitPeak)/float64(peak))
		}
		p.gain = g
		q := int64(g * 32768)
		for i, t := range sum[:m.frame] {
			if q < 32768 {
				t = int32(int64(t) * q >> 15)
			}
			mine[i] = int16(max(-32768, min(32767, t)))
		}
		p.out = p.out[:0]
		switch {
		case p.rate == m.cfg.SampleRate:
			p.out = append(p.out, mine...)
		case p.rate < m.cfg.SampleRate:
			p.out = p.down.Process(p.out, mine)
		default:
			p.out = p.up.Process(p.out, mine)
		}
		p.has = false
	}
}
