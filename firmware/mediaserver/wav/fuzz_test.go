package wav

import (
	"testing"
	"time"
)

// FuzzParse: uploads of any shape either convert into a bounded amount of
// audio or are refused.
func FuzzParse(f *testing.F) {
	f.Add(Encode(8000, make([]int16, 100)))
	f.Add(build(spec{code: 1, channels: 2, bits: 8, rate: 22050, data: make([]byte, 400), post: [][2]string{{"LIST", "abc"}}}))
	f.Add(build(spec{code: 7, channels: 1, bits: 8, rate: 8000, data: make([]byte, 10), extensible: true}))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, info, err := Parse(data, Options{Rate: 16000, MaxBytes: 1 << 16, MaxAudio: 5 * time.Second})
		if err != nil {
			return
		}
		if info.Duration > 5*time.Second || len(out) > 5*16000+1 {
			t.Fatalf("%+v gave %d samples", info, len(out))
		}
	})
}
