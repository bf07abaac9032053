package voicemail

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// BenchmarkDepositFrame is the voicemail side of one recording leg per
// 20 ms frame of 8 kHz speech: A-law encoding and sealing into the
// recording store (the leg's RTP decode is the media engine's). It reports
// how many legs one core sustains in real time and the disk bytes per
// recorded minute.
func BenchmarkDepositFrame(b *testing.B) {
	dir := b.TempDir()
	keys, _ := recording.StaticKey(testKey(1))
	rs, err := recording.OpenStore(recording.Config{Dir: dir, Keys: keys, Quota: 8 << 30, MinFree: 1})
	if err != nil {
		b.Fatal(err)
	}
	audio := Recordings{Store: rs}
	frame := tone(160, 8000, 440)
	const perMinute = 3000 // 20 ms frames
	var w AudioWriter
	n := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if w == nil {
			if w, err = audio.Create("bench", 8000); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Write(frame); err != nil {
			b.Fatal(err)
		}
		if n++; n == perMinute {
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			w, n = nil, 0
		}
	}
	b.StopTimer()
	if w != nil {
		w.Abort()
	}
	if b.Elapsed() > 0 && b.N > 0 {
		b.ReportMetric(float64(20e6)/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "legs/core")
	}
	// One full minute on disk.
	w, _ = audio.Create("minute", 8000)
	for range perMinute {
		_ = w.Write(frame)
	}
	_ = w.Close()
	st, err := os.Stat(filepath.Join(dir, filepath.FromSlash(w.ID())))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Size()), "disk-bytes/min")
}
