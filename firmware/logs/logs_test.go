package logs

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

func openDB(t *testing.T, path string) *store.DB {
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
