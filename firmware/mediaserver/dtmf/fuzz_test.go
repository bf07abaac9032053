package dtmf

import (
	"encoding/binary"
	"testing"
)

// FuzzParseEvent: any payload either parses and re-encodes to itself
// (modulo the reserved bit) or is rejected.
func FuzzParseEvent(f *testing.F) {
	f.Add([]byte{5, 0x8a, 0x03, 0x20})
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, p []byte) {
		ev, err := ParseEvent(p)
		if err != nil {
			return
		}
		back := ev.Append(nil)
		if back[0] != p[0] || back[1] != p[1]&^0x40 || back[2] != p[2] || back[3] != p[3] {
			t.Fatalf("%x -> %+v -> %x", p, ev, back)
		}
	})
}

// FuzzReceiver: a stream of (timestamp, payload) records; the receiver
// never reports an End without a Begin for the same timestamp first.
func FuzzReceiver(f *testing.F) {
	seed := []byte{}
	for _, p := range []Event{{Code: 1, Duration: 160}, {Code: 1, End: true, Duration: 800}, {Code: 1, End: true, Duration: 800}} {
		seed = binary.BigEndian.AppendUint32(seed, 1000)
		seed = p.Append(seed)
	}
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReceiver(8000)
		begun := map[uint32]bool{}
		for len(data) >= 5 {
			ts := binary.BigEndian.Uint32(data)
			n := min(len(data)-4, int(data[4]%6)) // payloads of 0..5 bytes
			payload := data[5 : 5+min(n, len(data)-5)]
			data = data[5+len(payload):]
			rep, ok, err := r.Packet(ts, payload)
			if err != nil && ok {
				t.Fatal("report with an error")
			}
			if !ok {
				continue
			}
			if rep.Begin {
				begun[rep.Timestamp] = true
			}
			if rep.End && !rep.Begin && !begun[rep.Timestamp] && r.segBase == 0 {
				t.Fatalf("end of %q at %d without a begin", rep.Digit, rep.Timestamp)
			}
		}
	})
}

// FuzzParseINFO: SIP INFO bodies and content types.
func FuzzParseINFO(f *testing.F) {
	f.Add("application/dtmf-relay", []byte("Signal=5\r\nDuration=160\r\n"))
	f.Add("application/dtmf", []byte("#"))
	f.Add("application/dtmf-relay; x=\"y\"", []byte("signal=11"))
	f.Add("application/dtmf-relay", []byte("Signal=1\r\nDuration=200\r\nVolume=10\r\nEvent=flash\r\n"))
	f.Add("application/dtmf-relay", []byte("X-Vendor_ID=\r\nsignal=#\r\n"))
	f.Add("application/dtmf-relay", []byte("Signal=5\r\nVol ume=1"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		rep, err := ParseINFO(ct, body)
		if err != nil {
			return
		}
		if c, ok := Code(rep.Digit); !ok || c != rep.Code || rep.Duration <= 0 || rep.Duration > MaxDuration {
			t.Fatalf("%q %q: %+v", ct, body, rep)
		}
	})
}

// FuzzDetector: arbitrary PCM never panics and reports alternate
// begin/end.
func FuzzDetector(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, _ := NewDetector(8000)
		pcm := make([]int16, len(raw)/2)
		for i := range pcm {
			pcm[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		// Repeat the input so short inputs fill blocks.
		var reps []Report
		for range 8 {
			reps = d.Process(reps, pcm)
		}
		on := false
		for _, r := range reps {
			if r.Begin == on || r.End != on {
				t.Fatalf("reports out of order: %+v", reps)
			}
			on = !on
		}
	})
}
