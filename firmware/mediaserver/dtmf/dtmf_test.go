package dtmf

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEventRoundTrip(t *testing.T) {
	cases := []struct {
		raw []byte
		ev  Event
	}{
		{[]byte{5, 0x0a, 0x01, 0x40}, Event{Code: 5, Volume: 10, Duration: 320}},
		{[]byte{11, 0x8a, 0x03, 0x20}, Event{Code: 11, End: true, Volume: 10, Duration: 800}},
		{[]byte{16, 0x3f, 0xff, 0xff}, Event{Code: 16, Volume: 63, Duration: 0xffff}},
	}
	for _, c := range cases {
		got, err := ParseEvent(c.raw)
		if err != nil || got != c.ev {
			t.Errorf("%x: %+v %v, want %+v", c.raw, got, err, c.ev)
		}
		if back := c.ev.Append(nil); !slices.Equal(back, c.raw) {
			t.Errorf("%+v: encoded %x, want %x", c.ev, back, c.raw)
		}
	}
	// The reserved bit is ignored on receipt.
	if ev, _ := ParseEvent([]byte{1, 0x40 | 7, 0, 160}); ev.Volume != 7 || ev.End {
		t.Errorf("reserved bit changed the event: %+v", ev)
	}
	for _, n := range []int{0, 3, 5, 8} {
		if _, err := ParseEvent(make([]byte, n)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v", n, err)
		}
	}
}

func TestDigitCodes(t *testing.T) {
	for i, d := range "0123456789*#ABCD" {
		c, ok := Code(d)
		if !ok || c != uint8(i) {
			t.Errorf("Code(%q) = %d %v", d, c, ok)
		}
		back, ok := Digit(uint8(i))
		if !ok || back != d {
			t.Errorf("Digit(%d) = %q %v", i, back, ok)
		}
	}
	if _, ok := Digit(CodeFlash); ok {
		t.Error("flash is not a digit")
	}
	if _, ok := Code('E'); ok {
		t.Error("E is not a digit")
	}
}

type pkt struct {
	ts      uint32
	payload []byte
}

func sendDigits(t *testing.T, digits string, ts uint32) []pkt {
	t.Helper()
	var out []pkt
	for _, d := range digits {
		ps, err := Packets(d, ts, 100*time.Millisecond, 10, 8000, 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			out = append(out, pkt{p.Timestamp, p.Payload})
		}
		ts += Span(100*time.Millisecond, 8000) + 800 // 100 ms pause
	}
	return out
}

func feed(t *testing.T, r *Receiver, ps []pkt) (begins, ends string, reps []Report) {
	t.Helper()
	for _, p := range ps {
		rep, ok, err := r.Packet(p.ts, p.payload)
		if err != nil {
			continue
		}
		if ok {
			reps = append(reps, rep)
			if rep.Begin {
				begins += string(rep.Digit)
			}
			if rep.End {
				ends += string(rep.Digit)
			}
		}
	}
	return begins, ends, reps
}

func TestPackets(t *testing.T) {
	ps, err := Packets('#', 1000, 100*time.Millisecond, 10, 8000, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 5+3 {
		t.Fatalf("%d packets, want 5 updates and 3 ends", len(ps))
	}
	var prev uint16
	for i, p := range ps {
		ev, err := ParseEvent(p.Payload)
		if err != nil || ev.Code != CodeHash || p.Timestamp != 1000 || p.Marker != (i == 0) {
			t.Fatalf("packet %d: %+v %+v %v", i, p, ev, err)
		}
		if ev.Duration < prev || ev.End != (i >= 5) {
			t.Fatalf("packet %d: duration %d after %d, end %v", i, ev.Duration, prev, ev.End)
		}
		prev = ev.Duration
		if i > 0 && p.At <= ps[i-1].At {
			t.Fatalf("packet %d not after the previous one", i)
		}
	}
	if prev != 800 {
		t.Errorf("final duration %d, want 800", prev)
	}
	bad := []struct {
		d   rune
		dur time.Duration
		vol uint8
		cr  int
	}{
		{'E', 100 * time.Millisecond, 10, 8000},
		{'1', 10 * time.Millisecond, 10, 8000},
		{'1', 6 * time.Second, 10, 8000},
		{'1', 100 * time.Millisecond, 64, 8000},
		{'1', 100 * time.Millisecond, 10, 0},
		{'1', 2 * time.Second, 10, 48000},
	}
	for _, b := range bad {
		if _, err := Packets(b.d, 0, b.dur, b.vol, b.cr, 20*time.Millisecond); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
}

func TestReceiver(t *testing.T) {
	clean := sendDigits(t, "1234567890*#ABCD", 0xffff_f000) // wraps the timestamp
	t.Run("clean", func(t *testing.T) {
		r := NewReceiver(8000)
		b, e, reps := feed(t, r, clean)
		if b != "1234567890*#ABCD" || e != b {
			t.Fatalf("begins %q ends %q", b, e)
		}
		for _, rep := range reps {
			if rep.End && rep.Duration != 100*time.Millisecond {
				t.Errorf("%q duration %v", rep.Digit, rep.Duration)
			}
		}
		if s := r.Stats(); s.Duplicates != 2*16 {
			t.Errorf("duplicates %d, want the 2 redundant ends of each digit", s.Duplicates)
		}
	})
	t.Run("everything twice", func(t *testing.T) {
		var dup []pkt
		for _, p := range clean {
			dup = append(dup, p, p)
		}
		if b, e, _ := feed(t, NewReceiver(8000), dup); b != "1234567890*#ABCD" || e != b {
			t.Fatalf("begins %q ends %q", b, e)
		}
	})
	t.Run("first and end packets lost", func(t *testing.T) {
		// Only the middle update of each digit arrives: still one digit each,
		// begun late, never ended (the next digit's new timestamp starts it).
		var lossy []pkt
		for i := 2; i < len(clean); i += 8 {
			lossy = append(lossy, clean[i])
		}
		if b, _, _ := feed(t, NewReceiver(8000), lossy); b != "1234567890*#ABCD" {
			t.Fatalf("begins %q", b)
		}
	})
	t.Run("old event retransmitted after a new one", func(t *testing.T) {
		ps := slices.Clone(clean[:16])      // digits 1 and 2
		ps = append(ps, clean[0], clean[7]) // 1 again, late
		r := NewReceiver(8000)
		if b, e, _ := feed(t, r, ps); b != "12" || e != "12" {
			t.Fatalf("begins %q ends %q", b, e)
		}
		if r.Stats().Stale != 2 {
			t.Errorf("stale %d", r.Stats().Stale)
		}
	})
	t.Run("same digit twice", func(t *testing.T) {
		if b, _, _ := feed(t, NewReceiver(8000), sendDigits(t, "55", 0)); b != "55" {
			t.Fatalf("begins %q", b)
		}
	})
	t.Run("conflicting code and malformed", func(t *testing.T) {
		r := NewReceiver(8000)
		r.Packet(100, Event{Code: 1, Duration: 160}.Append(nil))
		if _, ok, _ := r.Packet(100, Event{Code: 2, Duration: 320}.Append(nil)); ok {
			t.Error("a different code on the same timestamp was reported")
		}
		if _, ok, err := r.Packet(100, []byte{1, 2, 3}); ok || !errors.Is(err, ErrMalformed) {
			t.Error("3-byte payload accepted")
		}
		if _, ok, _ := r.Packet(200, Event{Code: CodeFlash}.Append(nil)); ok {
			t.Error("flash reported as a digit")
		}
		if rep, ok, _ := r.Packet(100, Event{Code: 1, End: true, Duration: 480}.Append(nil)); !ok || !rep.End || rep.Digit != '1' {
			t.Errorf("digit 1 did not end after the noise: %+v %v", rep, ok)
		}
		s := r.Stats()
		if s.Conflicts != 1 || s.Malformed != 1 || s.NotDigit != 1 {
			t.Errorf("stats %+v", s)
		}
	})
	t.Run("long event in segments", func(t *testing.T) {
		r := NewReceiver(8000)
		reps := []Report{}
		for _, p := range []pkt{
			{1000, Event{Code: 9, Duration: 160}.Append(nil)},
			{1000, Event{Code: 9, Duration: 0xffff}.Append(nil)},
			{1000 + 0xffff, Event{Code: 9, Duration: 160}.Append(nil)},
			{1000 + 0xffff, Event{Code: 9, End: true, Duration: 800}.Append(nil)},
		} {
			if rep, ok, _ := r.Packet(p.ts, p.payload); ok {
				reps = append(reps, rep)
			}
		}
		if len(reps) != 2 || !reps[0].Begin || !reps[1].End {
			t.Fatalf("reports %+v", reps)
		}
		if want := time.Duration(0xffff+800) * time.Second / 8000; reps[1].Duration != want {
			t.Errorf("duration %v, want %v", reps[1].Duration, want)
		}
	})
}

func TestParseINFO(t *testing.T) {
	cases := []struct {
		ct, body string
		digit    rune
		dur      time.Duration
		err      bool
	}{
		{"application/dtmf-relay", "Signal=5\r\nDuration=160\r\n", '5', 160 * time.Millisecond, false},
		{"application/dtmf-relay", "Signal= #\nDuration= 100", '#', 100 * time.Millisecond, false},
		{"Application/DTMF-Relay; charset=utf-8", "signal=*\r\n", '*', DefaultINFODuration, false},
		{"application/dtmf-relay", "Signal=11\r\nDuration=0\r\n", '#', DefaultINFODuration, false},
		{"application/dtmf-relay", "Signal=d", 'D', DefaultINFODuration, false},
		{"application/dtmf", "7\r\n", '7', DefaultINFODuration, false},
		{"application/dtmf", "10", '*', DefaultINFODuration, false},
		{"application/dtmf-relay", "Duration=160", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nSignal=6", 0, 0, true},
		{"application/dtmf-relay", "Signal=E", 0, 0, true},
		{"application/dtmf-relay", "Signal=16", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nDuration=-1", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nDuration=99999999", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nVolume=10", '5', DefaultINFODuration, false},
		{"application/dtmf-relay", "Event=flash\r\nSignal=1\r\nDuration=200\r\nX-Vendor_ID= \r\n", '1', 200 * time.Millisecond, false},
		{"application/dtmf-relay", "Volume=10\r\nVolume=12", 0, 0, true}, // no Signal
		{"application/dtmf-relay", "Signal=5\r\nDuration=160\r\nDuration=100", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\n=10", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nVol ume=10", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\nVolume\x00=10", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\n" + strings.Repeat("v", maxKey+1) + "=1", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\n" + strings.Repeat("Volume=1\r\n", MaxINFOBody/10), 0, 0, true}, // over the bound
		{"application/dtmf-relay", "Signal 5", 0, 0, true},
		{"application/dtmf-relay", "Signal=5\r\n" + strings.Repeat(" ", MaxINFOBody), 0, 0, true},
		{"application/dtmf", "55", 0, 0, true},
		{"application/dtmf", "", 0, 0, true},
		{"text/plain", "5", 0, 0, true},
		{"", "5", 0, 0, true},
	}
	for _, c := range cases {
		rep, err := ParseINFO(c.ct, []byte(c.body))
		if c.err {
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("%q %q: err %v, want ErrMalformed", c.ct, c.body, err)
			}
			continue
		}
		if err != nil || rep.Digit != c.digit || rep.Duration != c.dur || !rep.Begin || !rep.End {
			t.Errorf("%q %q: %+v %v", c.ct, c.body, rep, err)
		}
	}
}

// signal builds PCM: for each digit, on ms of tone then off ms of silence,
// with white noise of the given RMS added throughout.
func signal(t *testing.T, rate int, digits string, on, off time.Duration, amp, noise float64, seed uint64) []int16 {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 2))
	onN, offN := int(on)*rate/int(time.Second), int(off)*rate/int(time.Second)
	var out []int16
	for _, d := range digits {
		var err error
		out, err = Tone(out, d, rate, len(out), onN, amp)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, make([]int16, offN)...)
	}
	for i := range out {
		out[i] = int16(max(-32768, min(32767, float64(out[i])+r.NormFloat64()*noise)))
	}
	return out
}

func detect(t *testing.T, rate int, pcm []int16) (begins, ends string) {
	t.Helper()
	d, err := NewDetector(rate)
	if err != nil {
		t.Fatal(err)
	}
	// Feed in 20 ms frames as a leg would.
	var reps []Report
	step := rate / 50
	for i := 0; i < len(pcm); i += step {
		reps = d.Process(reps, pcm[i:min(i+step, len(pcm))])
	}
	reps = d.Process(reps, make([]int16, rate/2)) // trailing silence ends the last digit
	for _, r := range reps {
		if r.Begin {
			begins += string(r.Digit)
		}
		if r.End {
			ends += string(r.Digit)
		}
	}
	return begins, ends
}

func TestDetector(t *testing.T) {
	const all = "123A456B789C*0#D"
	ms := time.Millisecond
	cases := []struct {
		name      string
		digits    string
		on, off   time.Duration
		amp, nois float64
		want      string
	}{
		{"all digits", all, 80 * ms, 80 * ms, 4000, 0, all},
		{"quiet with noise", "159#", 80 * ms, 80 * ms, 700, 60, "159#"},
		{"repeated digit", "5555", 70 * ms, 60 * ms, 4000, 30, "5555"},
		{"too short", "123", 30 * ms, 100 * ms, 4000, 0, ""},
		{"too quiet", "123", 100 * ms, 100 * ms, 60, 0, ""},
		{"buried in noise", "123", 100 * ms, 100 * ms, 1000, 3000, ""},
	}
	for _, rate := range []int{8000, 16000} {
		for _, c := range cases {
			b, e := detect(t, rate, signal(t, rate, c.digits, c.on, c.off, c.amp, c.nois, 3))
			if b != c.want || e != c.want {
				t.Errorf("%d Hz %s: begins %q ends %q, want %q", rate, c.name, b, e, c.want)
			}
		}
	}
}

// Single tones, a tone pair with too much twist, and two rows at once are
// not digits.
func TestDetectorRejects(t *testing.T) {
	const rate = 8000
	n := rate / 5
	mk := func(parts ...[2]float64) []int16 {
		out := make([]int16, n)
		for i := range out {
			var v float64
			for _, p := range parts {
				v += p[1] * sinAt(p[0], i, rate)
			}
			out[i] = int16(v)
		}
		return out
	}
	cases := map[string][]int16{
		"row tone alone":   mk([2]float64{697, 6000}),
		"column alone":     mk([2]float64{1336, 6000}),
		"12 dB twist":      mk([2]float64{697, 8000}, [2]float64{1209, 2000}),
		"two rows and col": mk([2]float64{697, 4000}, [2]float64{770, 4000}, [2]float64{1209, 4000}),
		"1 kHz test tone":  mk([2]float64{1000, 8000}),
	}
	for name, pcm := range cases {
		if b, _ := detect(t, rate, pcm); b != "" {
			t.Errorf("%s: detected %q", name, b)
		}
	}
}

func TestNewDetectorRate(t *testing.T) {
	if _, err := NewDetector(44100); err == nil {
		t.Error("44.1 kHz accepted")
	}
}
