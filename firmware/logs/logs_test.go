package logs

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

func openDB(t testing.TB, path string) *store.DB {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestLogBoundedAndPersisted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db")
	db := openDB(t, path)
	l, err := New(db, 5)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 12; i++ {
		l.Record(Event{Kind: KindAuthFailure, User: strings.Repeat("x", 1000)})
		if i%4 == 3 {
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	got := l.Recent(100)
	if len(got) != 5 || got[0].Seq != 8 || got[4].Seq != 12 {
		t.Fatalf("ring: got %d events, first seq %d", len(got), got[0].Seq)
	}
	if len(got[0].User) != maxField {
		t.Fatalf("user not clipped: %d bytes", len(got[0].User))
	}
	stored, err := l.Stored()
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 5 || stored[0].Seq != 8 {
		t.Fatalf("stored: %d events, first %+v", len(stored), stored)
	}
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	// A reopened log continues the sequence (different key: sealing is not used here).
	l2, err := New(db, 5)
	if err != nil {
		t.Fatal(err)
	}
	l2.Record(Event{Kind: KindBan})
	if got := l2.Recent(1); got[0].Seq != 13 {
		t.Fatalf("sequence restarted: %d", got[0].Seq)
	}
}

func TestNewRejectsZero(t *testing.T) {
	if _, err := New(nil, 0); err == nil {
		t.Fatal("max 0 accepted")
	}
}

// TestBacklogBounded: without flushes the write backlog is the ring itself:
// the newest max events reach the disk, older ones are counted as dropped.
func TestBacklogBounded(t *testing.T) {
	tests := []struct {
		name        string
		records     int
		wantStored  int
		wantFirst   uint64
		wantDropped uint64
	}{
		{"under max", 3, 3, 1, 0},
		{"exactly max", 5, 5, 1, 0},
		{"over max", 12, 5, 8, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := openDB(t, filepath.Join(t.TempDir(), "db"))
			defer db.Close()
			l, err := New(db, 5)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tt.records; i++ {
				l.Record(Event{Kind: KindRegister})
			}
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			stored, err := l.Stored()
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != tt.wantStored || stored[0].Seq != tt.wantFirst || l.Dropped() != tt.wantDropped {
				t.Fatalf("stored %d (first seq %d), dropped %d", len(stored), stored[0].Seq, l.Dropped())
			}
			for i := 1; i < len(stored); i++ {
				if stored[i].Seq != stored[i-1].Seq+1 {
					t.Fatalf("gap or disorder: %d after %d", stored[i].Seq, stored[i-1].Seq)
				}
			}
			// A second flush has nothing new to write.
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			if again, _ := l.Stored(); len(again) != len(stored) {
				t.Fatalf("second flush changed the store: %d -> %d", len(stored), len(again))
			}
		})
	}
}

func BenchmarkRecord(b *testing.B) {
	db := openDB(b, filepath.Join(b.TempDir(), "db"))
	defer db.Close()
	l, _ := New(db, 1000)
	e := Event{Kind: KindRegister, Source: "192.0.2.1:5060", Transport: "UDP", User: "101", UserAgent: "Yealink SIP-T46U 108.86.0.20"}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		l.Record(e)
	}
}
