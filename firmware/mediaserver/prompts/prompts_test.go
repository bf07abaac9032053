package prompts

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

func level(x []int16, f float64, rate int) float64 {
	c := 2 * math.Cos(2*math.Pi*f/float64(rate))
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	return 2 * math.Sqrt(s1*s1+s2*s2-c*s1*s2) / float64(len(x))
}

// Every catalogued prompt has a default that is audible, bounded and not
// clipped.
func TestDefaults(t *testing.T) {
	for _, p := range Catalog() {
		pcm, err := Default(p.Name)
		if err != nil {
			t.Errorf("%s: %v", p.Name, err)
			continue
		}
		d := time.Duration(len(pcm)) * time.Second / Rate
		if d < 100*time.Millisecond || d > 30*time.Second {
			t.Errorf("%s: %v long", p.Name, d)
		}
		var peak int16
		for _, v := range pcm {
			peak = max(peak, v, -v)
		}
		if peak < 3000 || peak == math.MaxInt16 {
			t.Errorf("%s: peak %d", p.Name, peak)
		}
	}
	if pcm, _ := Default(Record); level(pcm, 1000, Rate) < 4000 {
		t.Error("record beep is not 1 kHz")
	}
	if _, err := Default("nope"); !errors.Is(err, ErrUnknown) {
		t.Error("unknown prompt has a default")
	}
	if n := len(Count(3)); n != 3*Rate/4 {
		t.Errorf("Count(3) is %d samples", n)
	}
}

func TestLibrary(t *testing.T) {
	lib := &Library{Dir: filepath.Join(t.TempDir(), "prompts")}
	def, err := lib.Get("en", EnterPIN, 16000)
	if err != nil {
		t.Fatal(err)
	}
	if lib.Custom("en", EnterPIN) {
		t.Error("custom before upload")
	}
	// An admin uploads a 44.1 kHz 16-bit file for German.
	up := make([]int16, 44100)
	for i := range up {
		up[i] = int16(9000 * math.Sin(2*math.Pi*500*float64(i)/44100))
	}
	upload := wav.Encode(44100, up)
	info, err := lib.Put("de", EnterPIN, upload)
	if err != nil || info.SampleRate != 44100 {
		t.Fatalf("put: %+v %v", info, err)
	}
	got, err := lib.Get("de", EnterPIN, 8000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 8000 || level(got[1000:7000], 500, 8000) < 8000 {
		t.Errorf("uploaded prompt: %d samples, 500 Hz at %.0f", len(got), level(got[1000:7000], 500, 8000))
	}
	// English still plays the default.
	if en, _ := lib.Get("en", EnterPIN, 16000); len(en) != len(def) {
		t.Error("upload for de changed en")
	}
	// A refused upload changes nothing.
	if _, err := lib.Put("de", EnterPIN, []byte("RIFF....WAVEjunk")); !errors.Is(err, wav.ErrRefused) {
		t.Errorf("junk upload: %v", err)
	}
	if again, _ := lib.Get("de", EnterPIN, 8000); len(again) != 8000 {
		t.Error("refused upload replaced the prompt")
	}
	// Too long for a prompt (limit 30 s for the record beep).
	if _, err := lib.Put("de", Record, wav.Encode(8000, make([]int16, 31*8000))); !errors.Is(err, wav.ErrRefused) {
		t.Errorf("31 s beep: %v", err)
	}
	for _, c := range [][2]string{{"../x", EnterPIN}, {"de", "../../etc/passwd"}, {"DE", EnterPIN}, {"de", "custom"}} {
		if _, err := lib.Put(c[0], c[1], upload); !errors.Is(err, ErrUnknown) {
			t.Errorf("put %v: %v", c, err)
		}
		if _, err := lib.Get(c[0], c[1], 8000); !errors.Is(err, ErrUnknown) {
			t.Errorf("get %v: %v", c, err)
		}
	}
	if err := lib.Delete("de", EnterPIN); err != nil {
		t.Fatal(err)
	}
	if lib.Custom("de", EnterPIN) {
		t.Error("still custom after delete")
	}
	if _, err := os.Stat(filepath.Join(lib.Dir, "de", EnterPIN+".wav")); !os.IsNotExist(err) {
		t.Errorf("file left: %v", err)
	}
}

func TestPlayer(t *testing.T) {
	pcm, _ := Default(Record) // 300 ms at 16 kHz
	for _, name := range []string{"PCMU", "G722"} {
		c, _ := codec.New(name)
		p, err := NewPlayer(pcm, Rate, c, false)
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := codec.New(name)
		var out []int16
		frames := 0
		for {
			pay, ok := p.Next(nil)
			if !ok {
				break
			}
			frames++
			out = dec.Decode(out, pay)
		}
		if frames != 15 {
			t.Errorf("%s: %d frames for 300 ms", name, frames)
		}
		if l := level(out[c.SampleRate()/20:], 1000, c.SampleRate()); l < 4000 {
			t.Errorf("%s: beep at %.0f", name, l)
		}
	}
	c, _ := codec.New("PCMA")
	loop, _ := NewPlayer(pcm, Rate, c, true)
	for range 100 {
		if _, ok := loop.Next(nil); !ok {
			t.Fatal("looping player ended")
		}
	}
}
