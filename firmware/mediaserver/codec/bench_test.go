package codec

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkCodec: one 20 ms frame. cpu-ns/op is process CPU time per
// frame (the machine is shared: wall time also counts other processes).
func BenchmarkCodec(b *testing.B) {
	for _, name := range Names() {
		c, _ := New(name)
		pcm := speechLike(c.FrameSamples(), float64(c.SampleRate()), 1)
		pay := c.Encode(nil, pcm)
		b.Run(name+"/encode", func(b *testing.B) {
			var dst []byte
			c0 := cpuTime()
			for range b.N {
				dst = c.Encode(dst[:0], pcm)
			}
			reportCPU(b, c0)
		})
		b.Run(name+"/decode", func(b *testing.B) {
			var dst []int16
			c0 := cpuTime()
			for range b.N {
				dst = c.Decode(dst[:0], pay)
			}
			reportCPU(b, c0)
		})
	}
	in := speechLike(160, 8000, 1)
	b.Run("upsample-20ms", func(b *testing.B) {
		var u Upsampler
		var dst []int16
		c0 := cpuTime()
		for range b.N {
			dst = u.Process(dst[:0], in)
		}
		reportCPU(b, c0)
	})
	wide := speechLike(320, 16000, 1)
	b.Run("downsample-20ms", func(b *testing.B) {
		var d Downsampler
		var dst []int16
		c0 := cpuTime()
		for range b.N {
			dst = d.Process(dst[:0], wide)
		}
		reportCPU(b, c0)
	})
}

func cpuTime() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportCPU(b *testing.B, c0 time.Duration) {
	b.ReportMetric(float64((cpuTime()-c0).Nanoseconds())/float64(b.N), "cpu-ns/op")
}
