package conference

import (
	"fmt"
	"math"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/mix"
)

// BenchmarkConferenceTick is one room's 20 ms tick as the box does it per
// participant: decode the caller's packet, mix, encode what it hears
// (RTP and socket I/O not included; the relay's figures cover those).
// ns/participant is the process CPU time (not wall time: the figure
// holds on a loaded machine) of one participant per tick ; participants/core
// is how many such participants one core keeps in real time.
func BenchmarkConferenceTick(b *testing.B) {
	for _, tc := range []struct {
		name     string
		rtpmap   string
		roomRate int
	}{
		{"G711", "PCMU/8000", 8000},
		{"G722", "G722/8000", 16000},
	} {
		for _, n := range []int{5, 20} {
			b.Run(fmt.Sprintf("%s/%d", tc.name, n), func(b *testing.B) {
				mx, err := mix.New(mix.Config{SampleRate: tc.roomRate, MaxParticipants: n, Tones: true})
				if err != nil {
					b.Fatal(err)
				}
				type leg struct {
					p       *mix.Participant
					enc     codec.Codec
					dec     codec.Codec
					payload []byte
				}
				legs := make([]leg, n)
				for i := range legs {
					enc, _ := codec.New(tc.rtpmap)
					dec, _ := codec.New(tc.rtpmap)
					src, _ := codec.New(tc.rtpmap)
					rate := src.SampleRate()
					p, err := mx.Join(rate)
					if err != nil {
						b.Fatal(err)
					}
					pcm := make([]int16, mix.FrameSamples(rate))
					for j := range pcm {
						pcm[j] = int16(6000 * math.Sin(2*math.Pi*float64(300+100*i)*float64(j)/float64(rate)))
					}
					legs[i] = leg{p: p, enc: enc, dec: dec, payload: src.Encode(nil, pcm)}
				}
				in := make([]int16, 0, 320)
				out := make([]int16, 0, 320)
				pkt := make([]byte, 0, 320)
				b.ResetTimer()
				start := cpuTime(b)
				for range b.N {
					for i := range legs {
						in = legs[i].dec.Decode(in[:0], legs[i].payload)
						legs[i].p.Write(in)
					}
					mx.Mix()
					for i := range legs {
						out = legs[i].p.Read(out[:0])
						pkt = legs[i].enc.Encode(pkt[:0], out)
					}
				}
				per := float64((cpuTime(b) - start).Nanoseconds()) / float64(b.N) / float64(n)
				b.ReportMetric(per, "ns/participant")
				b.ReportMetric(float64(20*time.Millisecond)/per, "participants/core")
			})
		}
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
