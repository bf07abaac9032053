package moh

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

func tone(rate int, hz float64, secs float64) []int16 {
	out := make([]int16, int(float64(rate)*secs))
	for i := range out {
		out[i] = int16(8000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return out
}

// share is the part of x's energy at hz (Goertzel).
func share(x []int16, hz float64, rate int) float64 {
	c := 2 * math.Cos(2*math.Pi*hz/float64(rate))
	var s1, s2, e float64
	for _, v := range x {
		f := float64(v)
		s1, s2 = f+c*s1-s2, s1
		e += f * f
	}
	if e == 0 {
		return 0
	}
	return 2 * (s1*s1 + s2*s2 - c*s1*s2) / (float64(len(x)) * e)
}

func TestUploadPlaysAtBothRates(t *testing.T) {
	l, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// An 8 kHz upload of a 700 Hz tone: stored at 16 kHz, heard at 8 and 16.
	info, err := l.Put("sales", wav.Encode(8000, tone(8000, 700, 2)))
	if err != nil || info.SampleRate != 8000 {
		t.Fatalf("put: %+v %v", info, err)
	}
	for _, rate := range []int{8000, 16000} {
		s, err := l.Source("sales", rate)
		if err != nil {
			t.Fatal(err)
		}
		var got []int16
		for range 50 { // 1 s
			f := s.Next()
			if len(f) != FrameSamples(rate) {
				t.Fatalf("frame of %d samples at %d Hz", len(f), rate)
			}
			got = append(got, f...)
		}
		if sh := share(got[rate/10:], 700, rate); sh < 0.9 {
			t.Errorf("%d Hz: 700 Hz share %.2f", rate, sh)
		}
	}
	cs, err := l.Classes()
	if err != nil || len(cs) != 2 || cs[0].Name != "default" || cs[0].Uploaded || cs[1].Name != "sales" || !cs[1].Uploaded ||
		cs[1].Duration < 1990e6 || cs[1].Duration > 2010e6 {
		t.Fatalf("classes %+v %v", cs, err)
	}
}

func TestSourceLoops(t *testing.T) {
	pcm := make([]int16, 250)
	for i := range pcm {
		pcm[i] = int16(i)
	}
	s := NewSource(pcm, 8000)
	a := append([]int16(nil), s.Next()...)
	b := s.Next()
	if a[0] != 0 || a[159] != 159 || b[0] != 160 || b[89] != 249 || b[90] != 0 {
		t.Fatalf("loop: %v.. %v..", a[:3], b[88:92])
	}
}

func TestDefaultAndFallback(t *testing.T) {
	l, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// An unknown class plays the default: the generated music, not silence.
	s, err := l.Source("nosuch", 8000)
	if err != nil {
		t.Fatal(err)
	}
	var loud bool
	for range 100 {
		for _, v := range s.Next() {
			loud = loud || v > 1000 || v < -1000
		}
	}
	if !loud {
		t.Fatal("default music is silent")
	}
	// An uploaded default replaces it until deleted.
	if _, err := l.Put(DefaultClass, wav.Encode(16000, tone(16000, 900, 1))); err != nil {
		t.Fatal(err)
	}
	s, _ = l.Source("", 16000)
	if sh := share(s.Next(), 900, 16000); sh < 0.8 {
		t.Errorf("uploaded default: 900 Hz share %.2f", sh)
	}
	if err := l.Delete(DefaultClass); err != nil {
		t.Fatal(err)
	}
	if err := l.Delete(DefaultClass); !errors.Is(err, ErrNoClass) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	l, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	good := wav.Encode(8000, tone(8000, 440, 0.5))
	long := wav.Encode(8000, make([]int16, 8000*int(MaxDuration.Seconds()+1)))
	for _, tc := range []struct {
		name, class string
		data        []byte
		want        error
	}{
		{"bad name", "../x", good, ErrClass},
		{"upper case", "Sales", good, ErrClass},
		{"not a wav", "a", []byte("RIFF....WAVEjunk"), wav.ErrRefused},
		{"too long", "b", long, wav.ErrRefused},
		{"empty", "c", wav.Encode(8000, nil), wav.ErrRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := l.Put(tc.class, tc.data); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("a refused upload left files: %v", ents)
	}
	for i := range MaxClasses - 1 {
		if _, err := l.Put(string(rune('a'+i)), good); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Put("one-more", good); !errors.Is(err, ErrTooMany) {
		t.Fatalf("class %d: %v", MaxClasses+1, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "one-more.wav")); err == nil {
		t.Fatal("refused class stored")
	}
}

func FuzzPut(f *testing.F) {
	f.Add(wav.Encode(8000, tone(8000, 440, 0.1)))
	f.Add([]byte("RIFF\x24\x00\x00\x00WAVEfmt "))
	dir := f.TempDir()
	l, err := New(dir)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if _, err := l.Put("f", data); err != nil {
			if _, serr := os.Stat(filepath.Join(dir, "f.wav")); serr == nil {
				t.Fatalf("refused upload (%v) left a file", err)
			}
			return
		}
		s, err := l.Source("f", 8000)
		if err != nil {
			t.Fatalf("accepted upload does not play: %v", err)
		}
		s.Next()
		if err := l.Delete("f"); err != nil {
			t.Fatal(err)
		}
	})
}
