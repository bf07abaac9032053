package codec

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestG711MatchesAudioop compares all 65,536 inputs and all 256 codes, in
// both laws, with CPython's audioop (an independent C implementation of
// G.711, derived from the CCITT reference): our tables, computed from the
// segment rules, must agree exactly.
func TestG711MatchesAudioop(t *testing.T) {
	if out, err := exec.Command("python3", "-c", "import audioop").CombinedOutput(); err != nil {
		skipUnlessCI(t, "python3 with audioop (Python <= 3.12) missing: "+string(out))
	}
	dir := t.TempDir()
	pcm := make([]byte, 2*65536)
	for i := range 65536 {
		binary.LittleEndian.PutUint16(pcm[2*i:], uint16(i))
	}
	codes := make([]byte, 256)
	for i := range codes {
		codes[i] = byte(i)
	}
	os.WriteFile(filepath.Join(dir, "pcm"), pcm, 0o600)
	os.WriteFile(filepath.Join(dir, "codes"), codes, 0o600)
	if out, err := exec.Command("python3", "testdata/audioop_g711.py", filepath.Join(dir, "pcm"), filepath.Join(dir, "codes"), filepath.Join(dir, "out")).CombinedOutput(); err != nil {
		t.Fatalf("audioop: %v\n%s", err, out)
	}
	ref, err := os.ReadFile(filepath.Join(dir, "out"))
	if err != nil || len(ref) != 65536*2+256*4 {
		t.Fatalf("audioop output of %d bytes: %v", len(ref), err)
	}
	ulaw, alaw, rest := ref[:65536], ref[65536:131072], ref[131072:]
	// audioop's µ-law takes the 14-bit value with an arithmetic shift and
	// negates it, which rounds negative inputs near a decision level away
	// from zero; we use the ones' complement of G.191 (the ITU's software
	// tools), which picks the nearest level (ties towards zero). The only
	// differences allowed are those, and ours must then be at least as
	// near to the input.
	differ := 0
	for i := range 65536 {
		x := int16(uint16(i))
		if got := MulawEncodeSample(x); got != ulaw[i] {
			dGot := abs(int(MulawDecodeSample(got)) - int(x))
			dRef := abs(int(MulawDecodeSample(ulaw[i])) - int(x))
			if x >= 0 || dGot > dRef {
				t.Fatalf("µ-law encode %d: %#x, audioop %#x", x, got, ulaw[i])
			}
			differ++
		}
		if got := AlawEncodeSample(x); got != alaw[i] {
			t.Fatalf("A-law encode %d: %#x, audioop %#x", x, got, alaw[i])
		}
	}
	t.Logf("µ-law: %d negative inputs where audioop rounds away from the nearest level", differ)
	if differ > 3*256 {
		t.Errorf("%d µ-law differences: more than the boundary cases", differ)
	}
	for c := range 256 {
		if got, want := MulawDecodeSample(byte(c)), int16(binary.LittleEndian.Uint16(rest[2*c:])); got != want {
			t.Fatalf("µ-law decode %#x: %d, audioop %d", c, got, want)
		}
		if got, want := AlawDecodeSample(byte(c)), int16(binary.LittleEndian.Uint16(rest[512+2*c:])); got != want {
			t.Fatalf("A-law decode %#x: %d, audioop %d", c, got, want)
		}
	}
}
