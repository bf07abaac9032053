package mix

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

// BenchmarkMix measures one 20 ms tick of a room: every participant's
// payload decoded, written, mixed, read and encoded again, as the
// conference application does. ns/op is per participant per tick;
// participants/core = 20 ms / that.
func BenchmarkMix(b *testing.B) {
	cases := []struct {
		name string
		room int
		legs []string
	}{
		{"G711-room8k", 8000, []string{"PCMU"}},
		{"G711-room16k", 16000, []string{"PCMU"}},
		{"G722-room16k", 16000, []string{"G722"}},
		{"mixed-room16k", 16000, []string{"PCMU", "G722"}},
	}
	for _, c := range cases {
		for _, n := range []int{5, 20} {
			b.Run(fmt.Sprintf("%s-%d", c.name, n), func(b *testing.B) {
				m, err := New(Config{SampleRate: c.room, MaxParticipants: n})
				if err != nil {
					b.Fatal(err)
				}
				type leg struct {
					p        *Participant
					dec, enc codec.Codec
					payload  []byte
					pcm, out []int16
					sent     []byte
				}
				legs := make([]*leg, n)
				for i := range legs {
					name := c.legs[i%len(c.legs)]
					dec, _ := codec.New(name)
					enc, _ := codec.New(name)
					p, err := m.Join(dec.SampleRate())
					if err != nil {
						b.Fatal(err)
					}
					src, _ := codec.New(name)
					pcm := sine(300+100*float64(i), dec.SampleRate(), 0, dec.FrameSamples(), 3000)
					legs[i] = &leg{p: p, dec: dec, enc: enc, payload: src.Encode(nil, pcm)}
				}
				b.ResetTimer()
				cpu0 := cpuTime()
				for range b.N {
					for _, l := range legs {
						l.pcm = l.dec.Decode(l.pcm[:0], l.payload)
						l.p.Write(l.pcm)
					}
					m.Mix()
					for _, l := range legs {
						l.out = l.p.Read(l.out[:0])
						l.sent = l.enc.Encode(l.sent[:0], l.out)
					}
				}
				// CPU time, not wall time (the machine is shared).
				perPart := float64((cpuTime() - cpu0).Nanoseconds()) / float64(b.N) / float64(n)
				b.ReportMetric(perPart, "cpu-ns/participant")
				b.ReportMetric(float64(20*time.Millisecond)/perPart, "participants/core")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
