package callrec

import (
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

// BenchmarkRecordedCall is the recording cost of one bridged call per
// 20 ms: both directions' packets through the tap (parse, copy, queue),
// jitter buffers, decode, mix, re-encode, seal and write. calls/core is
// how many recorded calls one core carries on top of relaying them;
// disk-B/min the sealed file's growth per minute of call.
func BenchmarkRecordedCall(b *testing.B) {
	for _, tc := range []struct {
		name string
		pt   uint8
	}{{"PCMU", 0}, {"G722", 9}} {
		b.Run(tc.name, func(b *testing.B) {
			st := newStore(b)
			m, err := New(Config{Store: st, Policy: func() Policy { return Policy{} }})
			if err != nil {
				b.Fatal(err)
			}
			s := &Session{m: m, c: Call{ID: "bench", From: "201", To: "202", Codec: tc.name}, dec: Decision{Mode: Always}, ch: make(chan packet, 4)}
			s.voice[tc.pt/64] |= 1 << (tc.pt % 64)
			s.begin()
			if s.rec == nil {
				b.Fatal(s.notes)
			}
			enc, _ := codec.New(tc.name)
			n := enc.FrameSamples()
			var frames [2][][]byte
			for side, tone := range []int{440, 1000} {
				pcm := baresiptest.Sine(tone, enc.SampleRate(), 1, 8000).Samples
				for i := 0; i+n <= len(pcm); i += n {
					frames[side] = append(frames[side], enc.Encode(nil, pcm[i:i+n]))
				}
			}
			pkt := func(side, i int) []byte {
				p := make([]byte, 12, 12+len(frames[side][0]))
				seq, ts := uint16(i), uint32(i*160)
				p[0], p[1], p[2], p[3] = 0x80, tc.pt, byte(seq>>8), byte(seq)
				p[4], p[5], p[6], p[7] = byte(ts>>24), byte(ts>>16), byte(ts>>8), byte(ts)
				return append(p, frames[side][i%len(frames[side])]...)
			}
			// Packets are built outside the timer: the relay has them.
			const ring = 500
			var pkts [2][ring][]byte
			for side := range 2 {
				for i := range ring {
					pkts[side][i] = pkt(side, i)
				}
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := range b.N {
				if i > 0 && i%ring == 0 { // fresh sequence numbers beyond the ring
					b.StopTimer()
					for side := range 2 {
						for j := range ring {
							pkts[side][j] = pkt(side, i+j)
						}
					}
					b.StartTimer()
				}
				s.Packet(media.A, pkts[0][i%ring])
				s.Packet(media.B, pkts[1][i%ring])
				for len(s.ch) > 0 {
					p := <-s.ch
					s.handle(&p)
				}
				if err := s.rec.Tick(); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := cpuTime(b) - cpu0
			id := s.rec.ID()
			s.end(nil)
			if s.dropped.Load() != 0 {
				b.Fatalf("%d packets dropped", s.dropped.Load())
			}
			var size int64
			for _, e := range st.List("") {
				if e.ID == id {
					size = e.Size
				}
			}
			// Process CPU time, not wall time: the machine is shared.
			perFrame := float64(cpu.Nanoseconds()) / float64(b.N)
			b.ReportMetric(perFrame, "cpu-ns/frame")
			b.ReportMetric(20e6/perFrame, "calls/core")
			b.ReportMetric(float64(size)/(float64(b.N)*0.02/60), "disk-B/min")
		})
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
