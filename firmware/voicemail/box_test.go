package voicemail

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/store"
)

type mwiLog struct {
	mu  sync.Mutex
	got []string
}

func (m *mwiLog) MailboxChanged(ext string, n, o int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.got = append(m.got, ext+":"+string(rune('0'+n))+"/"+string(rune('0'+o)))
}

type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestService(t *testing.T, mwi MWI) (*Service, *testClock) {
	t.Helper()
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "db"), testKey(9))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keys, err := recording.StaticKey(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(dir, "rec"), Keys: keys, Quota: 64 << 20, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	clk := &testClock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s, err := New(Config{DB: db, Audio: Recordings{Store: rs},
		Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 8),
		Exists: func(e string) bool { return e == "201" || e == "202" }, MWI: mwi, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return s, clk
}

func TestLoginLockout(t *testing.T) {
	s, clk := newTestService(t, nil)
	ctx := context.Background()
	src := netip.MustParseAddr("192.0.2.7")
	if err := s.Login(ctx, "201", "493817", src, false); !errors.Is(err, ErrNoPIN) {
		t.Fatalf("no PIN set: %v", err)
	}
	if err := s.SetPIN(ctx, "201", "123456"); !errors.Is(err, ErrWeakPIN) {
		t.Fatalf("weak PIN: %v", err)
	}
	if err := s.SetPIN(ctx, "201", "493817"); err != nil {
		t.Fatal(err)
	}
	b, _ := s.Mailbox("201")
	if b.PINHash == "" || b.PINHash == "493817" {
		t.Fatalf("PIN stored as %q", b.PINHash)
	}
	if err := s.Login(ctx, "201", "493817", src, false); err != nil {
		t.Fatalf("right PIN: %v", err)
	}
	for i := 1; i < 5; i++ {
		if err := s.Login(ctx, "201", "000001", src, false); !errors.Is(err, ErrWrongPIN) {
			t.Fatalf("wrong PIN %d: %v", i, err)
		}
	}
	if err := s.Login(ctx, "201", "000001", src, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("fifth wrong PIN: %v", err)
	}
	if err := s.Login(ctx, "201", "493817", src, false); !errors.Is(err, ErrLocked) {
		t.Fatalf("right PIN while locked: %v", err)
	}
	clk.add(16 * time.Minute)
	if err := s.Login(ctx, "201", "493817", src, false); err != nil {
		t.Fatalf("right PIN after the lock: %v", err)
	}
	// The admin's reset gives a new PIN that works, and lifts a lock.
	for range 5 {
		_ = s.Login(ctx, "201", "000001", src, false)
	}
	pin, err := s.ResetPIN(ctx, "201")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Login(ctx, "201", pin, src, false); err != nil {
		t.Fatalf("reset PIN: %v", err)
	}
	if err := s.Login(ctx, "999", pin, src, false); !errors.Is(err, ErrNoMailbox) {
		t.Fatalf("unknown mailbox: %v", err)
	}
}

func TestMessagesAndMWI(t *testing.T) {
	mwi := &mwiLog{}
	s, clk := newTestService(t, mwi)
	var ids []string
	for i := range 3 {
		id, _ := newID(clk.now())
		w, err := s.cfg.Audio.Create("test", 8000)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(tone(8000+2*i, 8000, 440)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.add(Message{ID: id, Ext: "202", Caller: "201", Time: clk.now(), Duration: time.Second, New: true, Rate: 8000, File: w.ID()}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		clk.add(time.Minute)
	}
	ms, err := s.Messages("202")
	if err != nil || len(ms) != 3 || ms[0].ID != ids[2] {
		t.Fatalf("messages %v %v", ms, err)
	}
	if err := s.MarkOld("202", ids[2]); err != nil {
		t.Fatal(err)
	}
	ms, _ = s.Messages("202")
	if ms[0].ID != ids[1] || ms[2].ID != ids[2] {
		t.Fatalf("new first: %v", ms)
	}
	rate, pcm, err := s.Audio("202", ids[0])
	if err != nil || rate != 8000 || len(pcm) != 8000 {
		t.Fatalf("audio: %d %d %v", rate, len(pcm), err)
	}
	file, _ := s.File("202", ids[0])
	if err := s.Delete("202", ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.cfg.Audio.Read(file); !errors.Is(err, recording.ErrNotFound) {
		t.Fatalf("recording of a deleted message: %v", err)
	}
	if _, _, err := s.Audio("202", ids[0]); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("deleted: %v", err)
	}
	for _, bad := range []string{"../x", "", "0000000000000000-0000000g"} {
		if _, err := s.Message("202", bad); !errors.Is(err, ErrNoMessage) {
			t.Fatalf("id %q: %v", bad, err)
		}
	}
	if err := s.NotifyAll(); err != nil {
		t.Fatal(err)
	}
	want := []string{"202:1/0", "202:2/0", "202:3/0", "202:2/1", "202:1/1", "202:1/1"}
	mwi.mu.Lock()
	defer mwi.mu.Unlock()
	if len(mwi.got) != len(want) {
		t.Fatalf("MWI %v, want %v", mwi.got, want)
	}
	for i := range want {
		if mwi.got[i] != want[i] {
			t.Fatalf("MWI %v, want %v", mwi.got, want)
		}
	}
}

func FuzzValidID(f *testing.F) {
	f.Add("0000000000000001-abcdef01")
	f.Add("../../etc/passwd")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidID(s) && (len(s) != 25 || filepath.Base(s) != s) {
			t.Fatalf("accepted %q", s)
		}
		if ValidExt(s) && filepath.Base(s) != s {
			t.Fatalf("accepted ext %q", s)
		}
	})
}

func testKey(b byte) []byte {
	k := make([]byte, 32)
	for i := range k {
		k[i] = b
	}
	return k
}

func tone(n, rate int, hz float64) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(9000 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate)))
	}
	return out
}

func TestResample(t *testing.T) {
	in := tone(1600, 16000, 440)
	down := resample(in, 16000, 8000)
	up := resample(down, 8000, 16000)
	if len(down) != 800 || len(up) != 1600 || resample(in, 16000, 16000)[0] != in[0] || resample(in, 16000, 44100) != nil {
		t.Fatalf("lengths %d %d", len(down), len(up))
	}
	var e float64
	for _, v := range down[100:] {
		e += float64(v) * float64(v)
	}
	if rms := math.Sqrt(e / float64(len(down)-100)); rms < 5000 {
		t.Fatalf("440 Hz lost in the down-sampling: RMS %.0f", rms)
	}
}
