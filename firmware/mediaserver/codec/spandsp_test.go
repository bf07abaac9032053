package codec

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// spandsp runs testdata/spandsp_g722.py (libspandsp through ctypes) in
// mode enc or dec on in and returns its output.
func spandsp(t *testing.T, mode string, in []byte) []byte {
	t.Helper()
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	if err := os.WriteFile(src, in, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("python3", "testdata/spandsp_g722.py", mode, src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("spandsp %s: %v\n%s", mode, err, out)
	}
	got, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestG722MatchesSpandsp checks bit-exactness against an independent
// implementation: libspandsp's G.722, which baresip (and with it many
// phones and PBXs) uses. Encoder output must be the same octets and
// decoder output the same samples, for speech-like audio, full-scale
// clipping tones, noise, silence and arbitrary payload bytes.
func TestG722MatchesSpandsp(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		skipUnlessCI(t, "python3 missing (.ci/deps installs it)")
	}
	if out, err := exec.Command("python3", "-c", `import ctypes; ctypes.CDLL("libspandsp.so.2")`).CombinedOutput(); err != nil {
		skipUnlessCI(t, "libspandsp.so.2 missing (.ci/deps installs libspandsp2): "+string(out))
	}
	r := rand.New(rand.NewPCG(11, 12))
	noise := make([]int16, 16000)
	for i := range noise {
		noise[i] = int16(r.IntN(65536) - 32768)
	}
	loud := tone(16000, 1200, 40000, 16000) // clips at full scale
	for i, v := range tone(16000, 5500, 20000, 16000) {
		loud[i] = int16(max(-32768, min(32767, int(loud[i])/2+int(v))))
	}
	signals := map[string][]int16{
		"speech-like": speechLike(48000, 16000, 21),
		"loud":        loud,
		"noise":       noise,
		"silence":     make([]int16, 4000),
	}
	for name, pcm := range signals {
		raw := make([]byte, 2*len(pcm))
		for i, v := range pcm {
			binary.LittleEndian.PutUint16(raw[2*i:], uint16(v))
		}
		ref := spandsp(t, "enc", raw)
		mine := NewG722().Encode(nil, pcm)
		if len(ref) != len(mine) {
			t.Fatalf("%s: %d octets from spandsp, %d from us", name, len(ref), len(mine))
		}
		for i := range mine {
			if mine[i] != ref[i] {
				t.Fatalf("%s: encoder differs first at octet %d: %#x, spandsp %#x", name, i, mine[i], ref[i])
			}
		}
	}
	payload := make([]byte, 20000)
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	payload = append(payload, NewG722().Encode(nil, speechLike(16000, 16000, 4))...)
	ref := spandsp(t, "dec", payload)
	mine := NewG722().Decode(nil, payload)
	if len(ref) != 2*len(mine) {
		t.Fatalf("decoder: %d samples from spandsp, %d from us", len(ref)/2, len(mine))
	}
	// Where the receive QMF overflows 16 bits, spandsp 0.0.6 casts and
	// wraps around (a loud click of the opposite sign); we saturate, as
	// the standard's limiter does. Those samples are the only allowed
	// difference, and only in that form.
	wraps := 0
	for i, v := range mine {
		w := int16(binary.LittleEndian.Uint16(ref[2*i:]))
		if v == w {
			continue
		}
		if (v == 32767 && w < 0) || (v == -32768 && w >= 0) {
			wraps++
			continue
		}
		t.Fatalf("decoder differs at sample %d: %d, spandsp %d", i, v, w)
	}
	t.Logf("decoder: %d samples, identical except %d where spandsp wraps and we saturate", len(mine), wraps)
	if wraps > len(mine)/100 {
		t.Errorf("%d saturated samples is more than overflow explains", wraps)
	}
}

func skipUnlessCI(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}
