package intrusion

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// TestPurge: days that ended before the cutoff go, from memory and the
// store; the size shrinks; the newer days stay.
func TestPurge(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1}
	a, err := New(Config{DB: db, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		clk.set(day1.Add(time.Duration(i) * 24 * time.Hour))
		a.Observe(logs.Event{Kind: logs.KindAuthFailure, Source: "198.51.100.7:5060", User: "201"})
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := db.BucketSize(DaysBucket)
	// Cutoff in the middle of the 8th day (17 March): days 10..16 March go.
	n, err := a.Purge(day1.Add(7*24*time.Hour + time.Hour))
	if err != nil || n != 7 {
		t.Fatalf("purged %d (%v), want 7", n, err)
	}
	after, _ := db.BucketSize(DaysBucket)
	if after.Keys != 3 || after.Bytes >= before.Bytes {
		t.Errorf("size %+v → %+v, want 3 days and fewer bytes", before, after)
	}
	rep, err := a.Report("2026-03-10", "2026-03-19")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rep.Days {
		want := uint64(0)
		if d.Date >= "2026-03-17" {
			want = 1
		}
		if d.AuthFailures != want {
			t.Errorf("%s: %d failures, want %d", d.Date, d.AuthFailures, want)
		}
	}
}

// TestForgetAddress: an address leaves the source and admin lists of
// every day, in memory and in the store file's bytes; totals stay.
func TestForgetAddress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db := openDB(t, path)
	clk := &clock{t: day1.Add(36 * time.Hour)}
	a, err := New(Config{DB: db, Geo: geo{}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range testEvents() {
		a.Observe(e)
	}
	a.Observe(logs.Event{Time: day1.Add(time.Hour), Kind: logs.KindAdminLoginFailure, Source: "198.51.100.7", User: "root"})
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	s := Subject{Addr: netip.MustParseAddr("198.51.100.7")}
	held, err := a.Find(s)
	if err != nil {
		t.Fatal(err)
	}
	want := []Held{{Date: "2026-03-10", List: "sources", Count: 5}, {Date: "2026-03-10", List: "admin_sources", Count: 1}}
	if len(held) != 2 || held[0] != want[0] || held[1] != want[1] {
		t.Fatalf("held %+v, want %+v", held, want)
	}
	if n, err := a.Forget(s); err != nil || n != 2 {
		t.Fatalf("forgot %d (%v), want 2", n, err)
	}
	rep, _ := a.Report("2026-03-10", "2026-03-10")
	d := rep.Days[0]
	for _, x := range append(d.TopSources, d.AdminSources...) {
		if x.Source == "198.51.100.7" {
			t.Errorf("address still listed: %+v", x)
		}
	}
	if d.AuthFailures != 4 || d.AdminFailures != 2 {
		t.Errorf("totals changed: %d failures, %d admin failures", d.AuthFailures, d.AdminFailures)
	}
	if _, err := db.Scrub(); err != nil { // the privacy registry does this after a Forget
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(`"198.51.100.7"`)) {
		t.Error("the forgotten address is still in the store file's bytes")
	}
	if !bytes.Contains(raw, []byte(`"203.0.113.9"`)) {
		t.Error("another source went too")
	}
}

// TestTruncateSources: stored sources become their networks, merged.
func TestTruncateSources(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1}
	a, err := New(Config{DB: db, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"198.51.100.7:1", "198.51.100.8:1", "198.51.100.8:2", "[2001:db8:1:2::5]:5060"} {
		a.Observe(logs.Event{Time: day1, Kind: logs.KindScanner, Source: src})
	}
	clk.set(day1.Add(72 * time.Hour)) // the day leaves memory: rewritten in the store
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, err := a.TruncateSources(); err != nil || n != 1 {
		t.Fatalf("truncated %d days (%v), want 1", n, err)
	}
	rep, _ := a.Report("2026-03-10", "2026-03-10")
	got := rep.Days[0].TopSources
	if len(got) != 2 || got[0].Source != "198.51.100.0" || got[0].Count != 3 || got[1].Source != "2001:db8:1::" {
		t.Errorf("sources %+v, want 198.51.100.0 ×3 and 2001:db8:1::", got)
	}
	if n, _ := a.TruncateSources(); n != 0 {
		t.Errorf("second truncation changed %d days", n)
	}
}

// TestForgetConcurrent: Forget runs while Observe and Flush go on (run
// with -race); the subject is gone afterwards. The ordering a stale Flush
// snapshot could break is guarded by flushMu, which this test exercises
// but cannot force.
func TestForgetConcurrent(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "db"))
	defer db.Close()
	clk := &clock{t: day1}
	a, err := New(Config{DB: db, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		a.Observe(logs.Event{Time: day1, Kind: logs.KindAuthFailure, Source: "192.0.2.1:5060", User: "victim"})
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			a.Observe(logs.Event{Time: day1, Kind: logs.KindAuthFailure, Source: "192.0.2.2:5060", User: "other"})
			if err := a.Flush(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	if _, err := a.Forget(Subject{Name: "victim"}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if h, err := a.Find(Subject{Name: "victim"}); err != nil || len(h) != 0 {
		t.Fatalf("after forget: %+v %v", h, err)
	}
}
