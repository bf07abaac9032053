package voicemail

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func tone(n, rate int, hz float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(9000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return out
}

func writeSealed(t *testing.T, f *SealedFiles, path string, rate int, pcm []int16) {
	t.Helper()
	w, err := f.Create(path, rate)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(pcm); i += 160 {
		if err := w.Write(pcm[i:min(i+160, len(pcm))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSealedRoundTrip(t *testing.T) {
	f, err := NewSealedFiles(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range []int{1, 160, chunkPCM, chunkPCM + 1, 3*chunkPCM + 77} {
		path := filepath.Join(dir, "m.vm")
		pcm := tone(n, 8000, 440)
		writeSealed(t, f, path, 8000, pcm)
		rate, got, err := f.Read(path)
		if err != nil || rate != 8000 || !slicesEqual(got, pcm) {
			t.Fatalf("%d samples: rate %d, %d samples back, err %v", n, rate, len(got), err)
		}
	}
}

func slicesEqual(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The file on disk is not the audio: no run of the PCM's bytes is in it,
// and it does not open with another key, under another name, or cut short.
func TestSealedUnreadableWithoutKey(t *testing.T) {
	f, _ := NewSealedFiles(testKey(1))
	dir := t.TempDir()
	path := filepath.Join(dir, "m.vm")
	pcm := tone(2*chunkPCM+5, 8000, 1000)
	writeSealed(t, f, path, 8000, pcm)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 0, 2*len(pcm))
	for _, v := range pcm {
		plain = append(plain, byte(v), byte(uint16(v)>>8))
	}
	if bytes.Contains(raw, plain[100:132]) {
		t.Fatal("the PCM is readable in the file")
	}
	other, _ := NewSealedFiles(testKey(2))
	if _, _, err := other.Read(path); !errors.Is(err, ErrSealed) {
		t.Fatalf("another key: %v", err)
	}
	moved := filepath.Join(dir, "n.vm")
	if err := os.WriteFile(moved, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Read(moved); !errors.Is(err, ErrSealed) {
		t.Fatalf("moved to another name: %v", err)
	}
	for _, cut := range []int{len(raw) - 1, len(raw) - 40, 30} {
		if _, _, err := f.decode(bytes.NewReader(raw[:cut]), path); !errors.Is(err, ErrSealed) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
	}
	// Dropping the last chunk leaves a file whose new end is not sealed as last.
	if _, _, err := f.decode(bytes.NewReader(raw[:len(raw)-(4+f.aead.Overhead()+10)]), path); !errors.Is(err, ErrSealed) {
		t.Fatalf("last chunk dropped: %v", err)
	}
}

func FuzzSealedDecode(f *testing.F) {
	s, _ := NewSealedFiles(testKey(1))
	dir := f.TempDir()
	path := filepath.Join(dir, "m.vm")
	w, _ := s.Create(path, 8000)
	_ = w.Write(tone(chunkPCM+10, 8000, 440))
	_ = w.Close()
	raw, _ := os.ReadFile(path)
	f.Add(raw)
	f.Add([]byte(sealedMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		rate, pcm, err := s.decode(bytes.NewReader(b), path)
		if err == nil && (rate <= 0 || int64(len(pcm))*2 > s.MaxBytes) {
			t.Fatalf("accepted rate %d with %d samples", rate, len(pcm))
		}
	})
}
