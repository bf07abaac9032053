package license_test

import (
	"bytes"
	"os"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// deleteRecords removes store records with the box off, as an owner with
// the disk would.
func (b *box) deleteRecords(t *testing.T, recs ...[2]string) {
	t.Helper()
	err := b.db.Update(func(tx *store.Tx) error {
		for _, r := range recs {
			if err := tx.Delete(r[0], r[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

var (
	recState    = [2]string{"license.state", "state"}
	recSchedule = [2]string{"license.schedule", "offset"}
)

// TestMissingStateIsTampering: a box that had licence state and loses the
// record (deleted with the box off) does not get a fresh 14 days: it is
// degraded with the reason shown until a good check-in. A fresh box that
// was never claimed and never checked in starts normally.
func TestMissingStateIsTampering(t *testing.T) {
	tests := []struct {
		name     string
		checkIn  bool // the box checked in before the deletion
		claimed  bool // the claim record says claimed
		delete   [][2]string
		tampered bool
	}{
		{name: "state deleted after a check-in", checkIn: true, delete: [][2]string{recState}, tampered: true},
		{name: "state deleted, never checked in", delete: [][2]string{recState}, tampered: true},
		{name: "state and schedule deleted on a claimed box", checkIn: true, claimed: true, delete: [][2]string{recState, recSchedule}, tampered: true},
		{name: "fresh unclaimed box never checked in", delete: nil, tampered: false},
		{name: "unclaimed box with every licence record deleted", delete: [][2]string{recState, recSchedule}, tampered: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.newBox()
			b.cfg.Claimed = func() (bool, error) { return tt.claimed, nil }
			if tt.checkIn {
				e.mustCheck(b)
			}
			e.offline.Store(true)
			e.advance(b, 3*day)
			b.deleteRecords(t, tt.delete...)
			b.restart(e)
			st := b.m.State()
			if !tt.tampered {
				if st.Mode != license.ModeFull || hasReason(st, license.ReasonTampered) {
					t.Fatalf("fresh box: mode %s reasons %+v", st.Mode, st.Reasons)
				}
				return
			}
			if st.Mode != license.ModeDegraded || !hasReason(st, license.ReasonTampered) || st.Banner == "" {
				t.Fatalf("after deleting %v: mode %s banner %q reasons %+v; want degraded, %s", tt.delete, st.Mode, st.Banner, st.Reasons, license.ReasonTampered)
			}
			checkGates(t, b.m, true)
			b.restart(e) // the verdict survives a reboot
			if st := b.m.State(); !hasReason(st, license.ReasonTampered) {
				t.Fatalf("tamper reason lost on reboot: %+v", st.Reasons)
			}
			e.offline.Store(false)
			st = e.mustCheck(b)
			if st.Mode == license.ModeDegraded || hasReason(st, license.ReasonTampered) {
				t.Fatalf("after a good check-in: mode %s reasons %+v", st.Mode, st.Reasons)
			}
			// The server saw this box's counter before: it says so too.
			if got := hasReason(st, license.ReasonRollback); got != tt.checkIn {
				t.Fatalf("server rollback verdict %v, want %v: %+v", got, tt.checkIn, st.Reasons)
			}
		})
	}
}

// TestOlderDatabaseRestored: a copy of the database taken after one
// check-in and restored after later ones is caught by the licence server at
// the next check-in (the box's counter did not move past the one it saw);
// the verdict stays until the vendor clears it.
func TestOlderDatabaseRestored(t *testing.T) {
	e := newEnv(t)
	b := e.newBox()
	e.mustCheck(b)
	var old bytes.Buffer
	if _, err := b.db.Backup(&old); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e.advance(b, day)
		if st := e.mustCheck(b); hasReason(st, license.ReasonRollback) {
			t.Fatalf("live box flagged: %+v", st.Reasons)
		}
	}
	// Box off, the older copy written back, box on.
	path := b.db.Path()
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, old.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := store.Open(path, b.key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b.db, b.cfg.DB = db, db
	b.restart(e)
	e.advance(b, day)
	st := e.mustCheck(b)
	if !hasReason(st, license.ReasonRollback) || st.Mode != license.ModeWarning {
		t.Fatalf("restored database not detected: mode %s reasons %+v", st.Mode, st.Reasons)
	}
	seqs, err := e.srv.Seqs("LIC-1")
	if err != nil || len(seqs) != 1 || seqs[0].Flag == nil {
		t.Fatalf("server record %+v err %v", seqs, err)
	}
	e.advance(b, day)
	if st := e.mustCheck(b); !hasReason(st, license.ReasonRollback) {
		t.Fatalf("flag dropped before the vendor cleared it: %+v", st.Reasons)
	}
	if err := e.srv.ClearRollbackFlag("LIC-1", b.cfg.Identity.InstallID); err != nil {
		t.Fatal(err)
	}
	e.advance(b, day)
	if st := e.mustCheck(b); hasReason(st, license.ReasonRollback) || st.Mode != license.ModeFull {
		t.Fatalf("after the vendor cleared the flag: mode %s reasons %+v", st.Mode, st.Reasons)
	}
}
