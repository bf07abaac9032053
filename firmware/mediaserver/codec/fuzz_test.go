package codec

import "testing"

// FuzzDecode: any payload decodes without panicking into exactly the
// number of samples its length implies, for every codec.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0xff, 0x7f, 0x00, 0x80})
	f.Add(make([]byte, 160))
	f.Fuzz(func(t *testing.T, payload []byte) {
		for _, n := range Names() {
			c, err := New(n)
			if err != nil {
				t.Fatal(err)
			}
			out := c.Decode(nil, payload)
			if want := len(payload) * c.SampleRate() / 8000; len(out) != want {
				t.Fatalf("%s: %d samples from %d bytes, want %d", n, len(out), len(payload), want)
			}
		}
	})
}

// FuzzNew: the rtpmap lookup (SDP input) either returns a working codec or
// ErrUnknown.
func FuzzNew(f *testing.F) {
	for _, s := range []string{"PCMU/8000", "G722/8000/1", "opus/48000/2", "pcma", "/", "G722/8000/1/1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := New(s)
		if err != nil {
			return
		}
		pcm := make([]int16, c.FrameSamples())
		if got := c.Decode(nil, c.Encode(nil, pcm)); len(got) != len(pcm) {
			t.Fatalf("%q: frame of %d samples came back as %d", s, len(pcm), len(got))
		}
	})
}
