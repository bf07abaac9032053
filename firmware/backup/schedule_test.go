package backup

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestScheduleRetention(t *testing.T) {
	b := newBox(t, "SCHED1")
	b.fill(t, 2)
	if err := b.backup.SetSettings(Settings{Daily: 3}, Actor{Name: "root1"}); !errors.Is(err, ErrBadRequest) ||
		!strings.Contains(err.Error(), "recipient") {
		t.Fatalf("schedule without a key: %v", err)
	}
	if _, _, err := b.backup.GenerateKey(Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	st, err := b.backup.Settings()
	if err != nil {
		t.Fatal(err)
	}
	st.Daily, st.Weekly, st.Monthly = 3, 2, 1
	if err := b.backup.SetSettings(st, Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.backup.SetSettings(Settings{Recipient: st.Recipient, Daily: 61}, Actor{Name: "root1"}); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("retention 61 accepted: %v", err)
	}
	// Ten days, checked every six hours: one backup per day, week and month.
	start := time.Date(2026, 3, 1, 0, 30, 0, 0, time.UTC) // a Sunday
	for h := 0; h < 10*24; h += 6 {
		b.clk.t = start.Add(time.Duration(h) * time.Hour)
		if err := b.backup.RunDue(); err != nil {
			t.Fatal(err)
		}
	}
	files, err := b.backup.List()
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, f := range files {
		count[f.Kind]++
	}
	// Days 1..10 → 3 kept; ISO weeks of Mar 1 (Sun), Mar 2-8, Mar 9-10 → 2 kept; March → 1.
	if count[Daily] != 3 || count[Weekly] != 2 || count[Monthly] != 1 {
		t.Fatalf("kept %v", count)
	}
	if !files[0].Created.After(files[len(files)-1].Created) {
		t.Fatal("list not newest first")
	}
	ents, _ := os.ReadDir(b.backup.cfg.Dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".tmp-") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
		if fi, _ := e.Info(); fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v", e.Name(), fi.Mode())
		}
	}
	for _, bad := range []string{"../edgepbx.db", "edgepbx-x-daily-20260301T000000Z.age/../../x", ".tmp-1"} {
		if _, err := b.backup.Open(bad); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open(%q): %v", bad, err)
		}
		if err := b.backup.Delete(bad, Actor{}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Delete(%q): %v", bad, err)
		}
	}
}
