package mix

import (
	"errors"
	"math"
	"testing"
)

func sine(f float64, rate, start, n int, amp float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*f*float64(start+i)/float64(rate)))
	}
	return out
}

// level is the amplitude of the f Hz component of x (Goertzel).
func level(x []int16, f float64, rate int) float64 {
	c := 2 * math.Cos(2*math.Pi*f/float64(rate))
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	p := s1*s1 + s2*s2 - c*s1*s2
	return 2 * math.Sqrt(p) / float64(len(x))
}

// Five parties, two of them G.711 (8 kHz) in a 16 kHz room: each hears the
// four other tones at their level and not its own.
func TestFivePartyConference(t *testing.T) {
	m, err := New(Config{SampleRate: 16000, MaxParticipants: 5, Tones: false})
	if err != nil {
		t.Fatal(err)
	}
	freqs := []float64{400, 700, 1100, 1500, 2300}
	rates := []int{8000, 16000, 8000, 16000, 16000}
	ps := make([]*Participant, 5)
	for i := range ps {
		if ps[i], err = m.Join(rates[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Join(8000); !errors.Is(err, ErrFull) {
		t.Fatalf("sixth join: %v", err)
	}
	heard := make([][]int16, 5)
	for tick := range 50 {
		for i, p := range ps {
			n := FrameSamples(rates[i])
			p.Write(sine(freqs[i], rates[i], tick*n, n, 3000))
		}
		m.Mix()
		for i, p := range ps {
			heard[i] = p.Read(heard[i])
		}
	}
	for i := range ps {
		if len(heard[i]) != 50*FrameSamples(rates[i]) {
			t.Fatalf("party %d heard %d samples", i, len(heard[i]))
		}
		tail := heard[i][len(heard[i])/2:]
		for j, f := range freqs {
			l := level(tail, f, rates[i])
			if i == j && l > 30 {
				t.Errorf("party %d hears its own %v Hz at %.0f", i, f, l)
			}
			if i != j && (l < 2700 || l > 3300) {
				t.Errorf("party %d hears party %d's %v Hz at %.0f, want ~3000", i, j, f, l)
			}
		}
	}
}

func TestJoinLeaveTonesAndMute(t *testing.T) {
	m, _ := New(Config{SampleRate: 8000, MaxParticipants: 4, Tones: true})
	a, _ := m.Join(8000)
	var got []int16
	for range 15 {
		m.Mix()
		got = a.Read(got)
	}
	if l := level(got[:960], 440, 8000); l < 1000 {
		t.Errorf("join tone 440 Hz at %.0f", l)
	}
	b, _ := m.Join(16000)
	for range 20 { // let b's join tone finish
		m.Mix()
	}
	b.SetMuted(true)
	got = got[:0]
	for tick := range 10 {
		b.Write(sine(1000, 16000, tick*320, 320, 8000))
		m.Mix()
		got = a.Read(got)
	}
	if l := level(got, 1000, 8000); l > 10 {
		t.Errorf("muted party heard at %.0f", l)
	}
	b.Leave()
	b.Leave() // idempotent
	got = got[:0]
	for range 15 {
		m.Mix()
		got = a.Read(got)
	}
	if l := level(got[:960], 660, 8000); l < 1000 {
		t.Errorf("leave tone 660 Hz at %.0f", l)
	}
	if m.Len() != 1 {
		t.Errorf("%d left in the room", m.Len())
	}
}

// Loud parties are limited, never wrapped around: what a participant
// hears stays at or below the limiter's peak, and the gain comes back
// once the room is quiet again.
func TestLimit(t *testing.T) {
	m, _ := New(Config{SampleRate: 8000, MaxParticipants: 4})
	ps := make([]*Participant, 3)
	for i := range ps {
		ps[i], _ = m.Join(8000)
	}
	frame := func(v int16) []int16 {
		f := make([]int16, 160)
		for i := range f {
			f[i] = v
		}
		return f
	}
	ps[0].Write(frame(30000))
	ps[1].Write(frame(30000))
	m.Mix()
	for _, v := range ps[2].Read(nil) { // 60000 summed
		if v <= 0 || v > limitPeak || v < limitPeak*99/100 {
			t.Fatalf("sum of two loud parties heard as %d, want about %d", v, limitPeak)
		}
	}
	for _, v := range ps[0].Read(nil) {
		if v <= 0 || v > limitPeak {
			t.Fatalf("party 0 hears %d, want party 1's 30000 limited to at most %d", v, limitPeak)
		}
	}
	// Quiet again: party 2's gain recovers within a second.
	for range 50 {
		ps[0].Write(frame(1000))
		m.Mix()
	}
	for _, v := range ps[2].Read(nil) {
		if v < 950 || v > 1000 {
			t.Fatalf("after the loud part, 1000 heard as %d", v)
		}
	}
}

func TestConfig(t *testing.T) {
	for _, c := range []Config{{SampleRate: 44100, MaxParticipants: 3}, {SampleRate: 8000, MaxParticipants: 1}, {SampleRate: 8000, MaxParticipants: 1000}} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	m, _ := New(Config{SampleRate: 8000, MaxParticipants: 3})
	if _, err := m.Join(11025); err == nil {
		t.Error("11025 Hz participant accepted")
	}
}
