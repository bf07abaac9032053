package dtmf

import (
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// Talk-off: the box's own prompts and hold music (chords, arpeggios,
// two-tone beeps) must not be taken for digits, at 16 kHz and after the
// down-sampling an 8 kHz leg gets.
func TestDetectorTalkOff(t *testing.T) {
	for _, p := range prompts.Catalog() {
		pcm, err := prompts.Default(p.Name)
		if err != nil {
			t.Fatal(err)
		}
		var d codec.Downsampler
		narrow := d.Process(nil, pcm)
		for _, c := range []struct {
			rate int
			pcm  []int16
		}{{16000, pcm}, {8000, narrow}} {
			if b, _ := detect(t, c.rate, c.pcm); b != "" {
				t.Errorf("%s at %d Hz detected as %q", p.Name, c.rate, b)
			}
		}
	}
}

// In-band digits survive the codecs a peer sends them through.
func TestDetectorThroughCodecs(t *testing.T) {
	const digits = "0123456789*#ABCD"
	for _, name := range codec.Names() {
		enc, _ := codec.New(name)
		dec, _ := codec.New(name)
		rate := enc.SampleRate()
		pcm := signal(t, rate, digits, 70*time.Millisecond, 60*time.Millisecond, 3000, 20, 5)
		out := dec.Decode(nil, enc.Encode(nil, pcm))
		if b, e := detect(t, rate, out); b != digits || e != digits {
			t.Errorf("%s: begins %q ends %q", name, b, e)
		}
	}
}
