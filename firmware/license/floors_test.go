package license_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
)

// tpmFloors gives the licence manager PID 1's floors store directly (the
// control socket in between is tested in init/control).
type tpmFloors struct{ f *keys.Floors }

func (t tpmFloors) Get(context.Context) (map[string]uint64, error) { return t.f.All(), nil }
func (t tpmFloors) Raise(_ context.Context, name string, v uint64) error {
	return t.f.Raise(name, v)
}

// TestRestoredDataCannotRewindGrace: the owner copies /data after a good
// check-in, lets one more check in, runs the box offline past the grace period, writes the old
// copy back and sets the clock back to when it was taken. Without floors
// that hands the box a fresh grace period (the row that shows the test can
// fail); with the floors in a real TPM's NV (swtpm), the offline time and
// check-in sequence continue from where the box really was, and a good
// check-in still resets the grace.
func TestRestoredDataCannotRewindGrace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		floors bool
	}{
		{"store only: rewound", false},
		{"TPM NV floors: not rewound", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var fl *keys.Floors
			opt := func(*license.Config) {}
			if tc.floors {
				tpm := swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
				var err error
				if fl, err = keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock)); err != nil {
					t.Fatal(err)
				}
				opt = func(c *license.Config) { c.Floors = tpmFloors{fl} }
			}
			b := e.newBox(opt)
			e.mustCheck(b)
			taken := b.clock.Now()
			var old bytes.Buffer
			if _, err := b.db.Backup(&old); err != nil {
				t.Fatal(err)
			}
			e.advance(b, day)
			e.mustCheck(b) // one more good check-in after the copy
			e.offline.Store(true)
			for range 15 { // a failed daily check-in each day
				e.advance(b, day)
				if _, err := b.m.CheckNow(context.Background()); err == nil {
					t.Fatal("check-in succeeded while offline")
				}
			}
			if st := b.m.State(); st.Mode != license.ModeDegraded {
				t.Fatalf("15 days offline: mode %s", st.Mode)
			}
			// Box off, the old copy written back, clock set back, box on.
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
			b.clock.Set(taken.Add(time.Minute))
			b.restart(e)
			st := b.m.State()
			if !tc.floors {
				if st.Mode != license.ModeFull {
					t.Fatalf("without floors the restore was expected to rewind the grace: mode %s offline %s", st.Mode, st.Offline)
				}
				return
			}
			if st.Mode != license.ModeDegraded || st.Offline < 15*day-time.Hour {
				t.Fatalf("restored /data rewound the grace: mode %s offline %s", st.Mode, st.Offline)
			}
			// The real clock back and the server reachable: a good
			// check-in resets the grace, and the sequence went on, so the
			// vendor sees no rollback.
			b.clock.Set(e.srvClock.Now())
			e.offline.Store(false)
			st = e.mustCheck(b)
			if st.Mode != license.ModeFull || hasReason(st, license.ReasonRollback) {
				t.Fatalf("after a good check-in: mode %s reasons %+v", st.Mode, st.Reasons)
			}
			f := fl.All()
			if f[license.FloorGoodRun] != f[license.FloorRun] || f[license.FloorRun] < uint64(15*day/time.Second) || f[license.FloorSeq] < 18 {
				t.Fatalf("floors after the good check-in: %v", f)
			}
		})
	}
}

// TestForgedFloorsHeal: floors pushed far forward (what a compromised
// edgepbxd could ask PID 1 for; no reset lowers a TPM floor) degrade the
// box at most until its next good check-in, never for good.
func TestForgedFloorsHeal(t *testing.T) {
	e := newEnv(t)
	tpm := swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
	fl, err := keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock))
	if err != nil {
		t.Fatal(err)
	}
	b := e.newBox(func(c *license.Config) { c.Floors = tpmFloors{fl} })
	e.mustCheck(b)
	for name, v := range map[string]uint64{license.FloorRun: 1 << 62, license.FloorSeq: 1 << 60} {
		if err := fl.Raise(name, v); err != nil {
			t.Fatal(err)
		}
	}
	b.restart(e)
	if st := b.m.State(); st.Mode != license.ModeDegraded {
		t.Fatalf("forged offline floor: mode %s, want degraded until a check-in", st.Mode)
	}
	e.advance(b, time.Hour)
	if st := e.mustCheck(b); st.Mode != license.ModeFull || hasReason(st, license.ReasonRollback) {
		t.Fatalf("good check-in after forged floors: mode %s reasons %+v", st.Mode, st.Reasons)
	}
	if f := fl.All(); f[license.FloorGoodRun] < 1<<33 {
		t.Fatalf("good floor not moved up to the forged run floor: %v", f)
	}
	b.restart(e)
	if st := b.m.State(); st.Mode != license.ModeFull {
		t.Fatalf("after a reboot: mode %s", st.Mode)
	}
}
