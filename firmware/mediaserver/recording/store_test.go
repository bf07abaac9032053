package recording

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/jitter"
)

func newStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "rec")
	}
	if cfg.Keys == nil {
		cfg.Keys = testKeys(t)
	}
	if cfg.Quota == 0 {
		cfg.Quota = 1 << 30
	}
	if cfg.MinFree == 0 {
		cfg.MinFree = 1 << 20
	}
	s, err := OpenStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func tone(f float64, rate, start, n int, amp float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * math.Sin(2*math.Pi*f*float64(start+i)/float64(rate)))
	}
	return out
}

func level(x []int16, f float64, rate int) float64 {
	c := 2 * math.Cos(2*math.Pi*f/float64(rate))
	var s1, s2 float64
	for _, v := range x {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	return 2 * math.Sqrt(s1*s1+s2*s2-c*s1*s2) / float64(len(x))
}

// rtpStream is a sender's packets of a tone in a codec, 20 ms each.
type rtpPacket struct {
	seq     uint16
	ts      uint32
	payload []byte
}

func rtpStream(t testing.TB, name string, f float64, packets int, seq0 uint16, ts0 uint32) []rtpPacket {
	t.Helper()
	c, err := codec.New(name)
	if err != nil {
		t.Fatal(err)
	}
	n := c.FrameSamples()
	var out []rtpPacket
	for i := range packets {
		pcm := tone(f, c.SampleRate(), i*n, n, 8000)
		out = append(out, rtpPacket{seq0 + uint16(i), ts0 + uint32(i*160), c.Encode(nil, pcm)})
	}
	return out
}

// decodeRecording opens a stored recording and decodes its audio.
func decodeRecording(t *testing.T, s *Store, id string) ([]int16, Meta) {
	t.Helper()
	r, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	c, err := codec.New(r.Meta().Codec)
	if err != nil {
		t.Fatal(err)
	}
	return c.Decode(nil, raw), r.Meta()
}

// A recorded tone, sent with reordering, duplicates and 1 % loss, comes
// back at its frequency and length; the bytes on disk are not audio.
func TestRecorderToneAndRawBytes(t *testing.T) {
	for _, name := range []string{"PCMU", "PCMA", "G722"} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t, Config{})
			rec, err := s.NewRecorder("call", RecorderConfig{Tracks: []string{name}, Label: "201 -> 202"})
			if err != nil {
				t.Fatal(err)
			}
			pkts := rtpStream(t, name, 1000, 250, 65500, 0xfffff000) // 5 s, seq and ts wrap
			r := rand.New(rand.NewPCG(1, 1))
			for i := 0; i < len(pkts); i++ {
				p := pkts[i]
				if r.IntN(100) == 0 {
					continue // lost
				}
				if i+1 < len(pkts) && r.IntN(10) == 0 { // swapped with the next
					q := pkts[i+1]
					rec.Packet(0, q.seq, q.ts, false, q.payload)
					i++
				}
				rec.Packet(0, p.seq, p.ts, false, p.payload)
				if r.IntN(20) == 0 {
					rec.Packet(0, p.seq, p.ts, false, p.payload) // duplicate
				}
				if err := rec.Tick(); err != nil {
					t.Fatal(err)
				}
			}
			id := rec.ID()
			if err := rec.Close(); err != nil {
				t.Fatal(err)
			}
			st := rec.Stats()
			if st.Late != 0 || st.Lost < 1 || st.Lost > 6 || st.Duplicates == 0 {
				t.Errorf("stats %+v", st)
			}
			pcm, meta := decodeRecording(t, s, id)
			if meta.Label != "201 -> 202" || meta.Category != "call" {
				t.Errorf("meta %+v", meta)
			}
			rate := meta.SampleRate
			if d := time.Duration(len(pcm)) * time.Second / time.Duration(rate); d < 4900*time.Millisecond || d > 5200*time.Millisecond {
				t.Errorf("recorded %v", d)
			}
			if l := level(pcm[rate:], 1000, rate); l < 6000 {
				t.Errorf("1 kHz at %.0f in the recording", l)
			}
			raw, err := os.ReadFile(filepath.Join(s.cfg.Dir, id))
			if err != nil {
				t.Fatal(err)
			}
			assertNotAudio(t, raw, pkts)
		})
	}
}

// assertNotAudio: no 8-byte run of any sent payload is in the file, the
// bytes look random, and read as µ-law/A-law/PCM they carry no tone.
func assertNotAudio(t *testing.T, raw []byte, pkts []rtpPacket) {
	t.Helper()
	for _, p := range pkts[10:20] {
		for i := 0; i+8 <= len(p.payload); i += 8 {
			if bytes.Contains(raw, p.payload[i:i+8]) {
				t.Fatalf("plaintext audio bytes found on disk")
			}
		}
	}
	var hist [256]float64
	for _, b := range raw {
		hist[b]++
	}
	var h float64
	for _, n := range hist {
		if n > 0 {
			p := n / float64(len(raw))
			h -= p * math.Log2(p)
		}
	}
	if h < 7.95 {
		t.Errorf("file entropy %.3f bits/byte: looks like plaintext", h)
	}
	for _, name := range []string{"PCMU", "PCMA"} {
		c, _ := codec.New(name)
		pcm := c.Decode(nil, raw)
		if l := level(pcm, 1000, 8000); l > 400 {
			t.Errorf("raw bytes read as %s carry the tone at %.0f", name, l)
		}
	}
}

// Two tracks of different codecs are mixed into one G.722 recording.
func TestRecorderTwoTracks(t *testing.T) {
	s := newStore(t, Config{})
	rec, err := s.NewRecorder("call", RecorderConfig{Tracks: []string{"PCMA", "G722"}})
	if err != nil {
		t.Fatal(err)
	}
	a := rtpStream(t, "PCMA", 700, 150, 1, 1000)
	b := rtpStream(t, "G722", 1900, 150, 30000, 5)
	for i := range a {
		rec.Packet(0, a[i].seq, a[i].ts, false, a[i].payload)
		rec.Packet(1, b[i].seq, b[i].ts, false, b[i].payload)
		rec.Tick()
	}
	id := rec.ID()
	rec.Close()
	pcm, meta := decodeRecording(t, s, id)
	if meta.Codec != "G722" || meta.SampleRate != 16000 {
		t.Fatalf("meta %+v", meta)
	}
	for _, f := range []float64{700, 1900} {
		if l := level(pcm[16000:], f, 16000); l < 6000 {
			t.Errorf("%v Hz at %.0f", f, l)
		}
	}
}

func TestStorageFormat(t *testing.T) {
	cases := []struct {
		in   []string
		want string
	}{
		{[]string{"PCMA"}, "PCMA"},
		{[]string{"PCMU", "PCMU"}, "PCMU"},
		{[]string{"PCMU", "PCMA"}, "PCMU"},
		{[]string{"PCMU", "G722/8000"}, "G722"},
	}
	for _, c := range cases {
		got, err := StorageFormat(c.in)
		if err != nil || got.Name() != c.want {
			t.Errorf("%v: %v %v", c.in, got, err)
		}
	}
	for _, bad := range [][]string{nil, {"PCMU", "PCMU", "PCMU"}, {"opus/48000/2"}} {
		if _, err := StorageFormat(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// The quota stops a recording, refuses new ones, warns before, and the
// accounting matches the disk (also after reopening).
func TestQuota(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rec")
	s := newStore(t, Config{Dir: dir, Quota: 200_000, WarnFraction: 0.5})
	rec, err := s.NewRecorder("voicemail", RecorderConfig{Tracks: []string{"PCMU"}, Jitter: jitter.Config{Depth: 1, Capacity: 4, MaxPayload: 160}})
	if err != nil {
		t.Fatal(err)
	}
	pkts := rtpStream(t, "PCMU", 440, 2000, 0, 0) // 40 s = 320 kB
	var stopErr error
	warned := false
	for _, p := range pkts {
		rec.Packet(0, p.seq, p.ts, false, p.payload)
		if stopErr = rec.Tick(); stopErr != nil {
			break
		}
		if s.Usage().Warning {
			warned = true
		}
	}
	if !errors.Is(stopErr, ErrQuota) || !warned {
		t.Fatalf("stop %v, warned %v", stopErr, warned)
	}
	id := rec.ID()
	if err := rec.Close(); err != nil && !errors.Is(err, ErrQuota) {
		t.Fatal(err)
	}
	u := s.Usage()
	if !u.Full || !u.Warning || u.Used > 200_000+DefaultChunkSize+100 {
		t.Errorf("usage %+v", u)
	}
	// What was recorded before the stop is intact and closed properly.
	pcm, _ := decodeRecording(t, s, id)
	if len(pcm) < 150_000 {
		t.Errorf("only %d samples kept", len(pcm))
	}
	if _, err := s.NewRecorder("voicemail", RecorderConfig{Tracks: []string{"PCMU"}}); !errors.Is(err, ErrQuota) {
		t.Errorf("new recording over quota: %v", err)
	}
	st, _ := os.Stat(filepath.Join(dir, id))
	if st.Size() != u.Used {
		t.Errorf("disk %d bytes, accounted %d", st.Size(), u.Used)
	}
	again := newStore(t, Config{Dir: dir, Quota: 200_000})
	if again.Usage().Used != u.Used || len(again.List("")) != 1 {
		t.Errorf("reopened: %+v", again.Usage())
	}
	if err := again.Delete(id); err != nil {
		t.Fatal(err)
	}
	if u := again.Usage(); u.Used != 0 || u.Full || u.Warning {
		t.Errorf("after delete: %+v", u)
	}
}

// MinFree protects the file system whatever the quota says.
func TestMinFree(t *testing.T) {
	s := newStore(t, Config{MinFree: 1 << 62})
	if _, err := s.Create("call", Meta{}); !errors.Is(err, ErrQuota) {
		t.Errorf("create with no free space: %v", err)
	}
}

func TestRetentionAndDelete(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rec")
	s := newStore(t, Config{Dir: dir, Retention: map[string]time.Duration{"call": 24 * time.Hour}})
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	mk := func(cat string, age time.Duration) string {
		f, err := s.Create(cat, Meta{Codec: "PCMU", SampleRate: 8000, Created: now.Add(-age)})
		if err != nil {
			t.Fatal(err)
		}
		f.Write(make([]byte, 1000))
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		return f.ID()
	}
	oldCall := mk("call", 25*time.Hour)
	newCall := mk("call", 23*time.Hour)
	oldVM := mk("voicemail", 100*24*time.Hour)   // within the 6-month default
	ancient := mk("voicemail", 200*24*time.Hour) // past it
	// A file that is not a recording is never touched.
	stray := filepath.Join(dir, "call", "notes.txt")
	os.WriteFile(stray, []byte("x"), 0o600)
	n, err := s.Sweep(now)
	if err != nil || n != 2 {
		t.Fatalf("swept %d: %v", n, err)
	}
	for _, id := range []string{oldCall, ancient} {
		if _, err := os.Stat(filepath.Join(dir, id)); !os.IsNotExist(err) {
			t.Errorf("%s still on disk: %v", id, err)
		}
		if _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s opens: %v", id, err)
		}
	}
	for _, id := range []string{newCall, oldVM} {
		if _, err := s.Open(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("stray file removed: %v", err)
	}
	if got := s.List("voicemail"); len(got) != 1 || got[0].ID != oldVM {
		t.Errorf("list %+v", got)
	}
	for _, bad := range []string{"../etc/passwd", "call/../../x.rec", "call/1-0123456789abcdef.rec/..", "Call/1-0123456789abcdef.rec", ""} {
		if _, err := s.Open(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("open %q: %v", bad, err)
		}
		if err := s.Delete(bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("delete %q: %v", bad, err)
		}
	}
}

// Erasing the salt makes a copy of the rest of the file useless even with
// the key: what Delete does before unlinking.
func TestEraseMakesUnreadable(t *testing.T) {
	s := newStore(t, Config{})
	f, _ := s.Create("call", Meta{Codec: "PCMU", SampleRate: 8000})
	f.Write(bytes.Repeat([]byte{0x55}, 5000))
	f.Close()
	p := filepath.Join(s.cfg.Dir, f.ID())
	if err := erase(p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(f.ID()); !errors.Is(err, ErrAuth) {
		t.Errorf("erased file opens: %v", err)
	}
}
