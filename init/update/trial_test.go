package update

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
)

type trialRig struct {
	*rig
	tm      *manualTimer
	healthy atomic.Bool
	why     atomic.Value
	reboots atomic.Int32
	said    []string
	sayMu   sync.Mutex
}

// installAndReboot installs a bundle of version 1.2.0 (floor 115) and
// plays the firmware's next boot.
func newTrialRig(t *testing.T) *trialRig {
	r := &trialRig{rig: newRig(t), tm: newManualTimer()}
	r.why.Store("sip: not listening")
	if _, err := r.in.Install(context.Background(), bytes.NewReader(makeBundle(t, r.rel, image(50<<10, 4), nil))); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *trialRig) config() TrialConfig {
	return TrialConfig{Slots: r.slots, Floor: r.floor,
		Running:    Release{Board: "pc-x86_64", Version: "1.2.0", VersionNumber: 120, Floor: 115},
		Healthy:    func() (bool, string) { return r.healthy.Load(), r.why.Load().(string) },
		HealthyFor: 5 * time.Minute, Deadline: 15 * time.Minute, Interval: 5 * time.Second,
		Timer: r.tm, Reboot: func() { r.reboots.Add(1) }, Audit: r.audit,
		Say: func(f string, a ...any) {
			r.sayMu.Lock()
			r.said = append(r.said, fmt.Sprintf(f, a...))
			r.sayMu.Unlock()
		}}
}

func (r *trialRig) saidContains(s string) bool {
	r.sayMu.Lock()
	defer r.sayMu.Unlock()
	for _, l := range r.said {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func TestTrialCommitsWhenHealthy(t *testing.T) {
	r := newTrialRig(t)
	if got := r.slots.boot(); got != "b" {
		t.Fatalf("trial boot booted %s", got)
	}
	tr, err := Boot(context.Background(), r.config())
	if err != nil || tr == nil {
		t.Fatalf("boot: %v %v", tr, err)
	}
	// Healthy for 4 minutes, one bad report, then healthy: the count restarts.
	r.healthy.Store(true)
	r.tm.Advance(4*time.Minute, 5*time.Second)
	r.healthy.Store(false)
	r.tm.Advance(10*time.Second, 5*time.Second)
	r.healthy.Store(true)
	r.tm.Advance(4*time.Minute, 5*time.Second)
	if tr.State().Committed {
		t.Fatal("committed without 5 minutes of unbroken health")
	}
	r.tm.Advance(time.Minute+5*time.Second, 5*time.Second)
	st := tr.State()
	if !st.Committed || r.slots.State().Trial {
		t.Fatalf("not committed: %+v %v", st, r.slots.calls)
	}
	if f, _ := r.floor.Get(); f != 115 {
		t.Fatalf("floor after commit %d, want 115", f)
	}
	// Past the deadline nothing reverts a committed slot; later boots stay on it.
	r.tm.Advance(time.Hour, time.Minute)
	if r.reboots.Load() != 0 || r.slots.boot() != "b" || r.slots.boot() != "b" {
		t.Fatal("committed slot not kept")
	}
	if e := r.lastEvent(); e.Action != "committed" {
		t.Fatalf("audit %+v", e)
	}
}

func TestTrialRollsBackWhenUnhealthy(t *testing.T) {
	r := newTrialRig(t)
	r.slots.boot()
	tr, err := Boot(context.Background(), r.config())
	if err != nil {
		t.Fatal(err)
	}
	// Healthy in bursts shorter than N until the deadline.
	for range 4 {
		r.healthy.Store(true)
		r.tm.Advance(3*time.Minute, 5*time.Second)
		r.healthy.Store(false)
		r.tm.Advance(30*time.Second, 5*time.Second)
	}
	r.tm.Advance(2*time.Minute, 5*time.Second)
	st := tr.State()
	if st.Committed || st.RolledBack == "" || r.reboots.Load() != 1 {
		t.Fatalf("not rolled back: %+v reboots %d", st, r.reboots.Load())
	}
	if !strings.Contains(st.RolledBack, "sip: not listening") || !r.saidContains("UPDATE ROLLED BACK") {
		t.Fatalf("rollback does not say why: %q %v", st.RolledBack, r.said)
	}
	if e := r.lastEvent(); e.Action != "rolled-back" || !strings.Contains(e.Detail, "not healthy") {
		t.Fatalf("audit %+v", e)
	}
	if got := r.slots.boot(); got != "a" {
		t.Fatalf("after rollback booted %s", got)
	}
	if f, _ := r.floor.Get(); f != 0 {
		t.Fatalf("floor raised by a failed trial: %d", f)
	}
}

// TestTrialCrashedBootRollsBack: the trial boot never reached PID 1's
// check (kernel panic, watchdog reset): the firmware came back to the old
// slot, which records and says why.
func TestTrialCrashedBootRollsBack(t *testing.T) {
	r := newTrialRig(t)
	r.slots.boot() // trial boot: b
	// ... it panics; the firmware's BootNext was one-shot:
	if got := r.slots.boot(); got != "a" {
		t.Fatalf("after a crashed trial booted %s", got)
	}
	tr, err := Boot(context.Background(), r.config())
	if err != nil || tr != nil {
		t.Fatalf("boot after crash: %v %v", tr, err)
	}
	if r.slots.State().Trial || len(r.slots.rollbacks) != 1 || !strings.Contains(r.slots.rollbacks[0], "watchdog reset") {
		t.Fatalf("crashed trial not recorded: %v", r.slots.rollbacks)
	}
	if !r.saidContains("UPDATE ROLLED BACK") || r.lastEvent().Action != "rolled-back" {
		t.Fatal("crashed trial not said / audited")
	}
}

func TestTrialNoTrial(t *testing.T) {
	r := &trialRig{rig: newRig(t), tm: newManualTimer()}
	r.why.Store("")
	tr, err := Boot(context.Background(), r.config())
	if tr != nil || err != nil || len(r.slots.calls) != 0 {
		t.Fatalf("ordinary boot: %v %v %v", tr, err, r.slots.calls)
	}
}

// TestPowerCutDuringUpdate cuts an update at 60 points spread over the
// whole bundle (header, signature, every part of the image), on a box
// whose inactive slot already holds an earlier verified install waiting
// for its trial, and once more during the trial boot before its commit.
// After each cut the next boot comes up on a slot holding a complete,
// verified image (the running one, or the earlier install whose trial a
// cut before the new upload's first byte leaves alone), the running slot
// is untouched, and a half-written slot is never bootable. (The slot
// layer's own atomicity across a cut, UEFI variables, is init/slots' to
// prove; this covers PID 1's order of operations.)
func TestPowerCutDuringUpdate(t *testing.T) {
	earlier, img := image(120<<10, 7), image(120<<10, 9)
	for i := range 60 {
		r := newRig(t)
		running, _ := os.ReadFile(r.slots.path("a"))
		if _, err := r.in.Install(context.Background(), bytes.NewReader(makeBundle(t, r.rel, earlier, nil))); err != nil {
			t.Fatal(err)
		}
		b := makeBundle(t, r.rel, img, func(m *bundle.Manifest) { m.Version, m.VersionNumber = "1.3.0", 130 })
		cut := i * len(b) / 60
		if _, err := r.in.Install(context.Background(), &cutReader{bytes.NewReader(b), cut}); err == nil {
			t.Fatalf("cut at %d of %d: installed", cut, len(b))
		}
		got := r.slots.boot()
		content, _ := os.ReadFile(r.slots.path(got))
		switch {
		case got == "a" && bytes.Equal(content, running):
		case got == "b" && bytes.Equal(content[:len(earlier)], earlier):
		default:
			t.Fatalf("cut at %d of %d: booted slot %s holding neither verified image", cut, len(b), got)
		}
		if now, _ := os.ReadFile(r.slots.path("a")); !bytes.Equal(now, running) {
			t.Fatalf("cut at %d: the running slot changed", cut)
		}
	}
	// Cut during the trial boot, before the commit: the firmware comes
	// back to the old slot and PID 1 records the rollback.
	r := newTrialRig(t)
	if got := r.slots.boot(); got != "b" {
		t.Fatalf("trial boot booted %s", got)
	}
	if got := r.slots.boot(); got != "a" { // power cut: BootNext was one-shot
		t.Fatalf("after a cut in the trial booted %s", got)
	}
	tr, err := Boot(context.Background(), r.config())
	if err != nil || tr != nil || len(r.slots.rollbacks) != 1 || !r.saidContains("ROLLED BACK") {
		t.Fatalf("after a cut in the trial: %v %v %v", tr, err, r.slots.rollbacks)
	}
}

// TestTrialLayerRolledBack: a boot layer that ends a failed trial itself
// (init/slots does, while taking over at boot) still gets it said on the
// console and audited, with the layer's reason.
func TestTrialLayerRolledBack(t *testing.T) {
	r := &trialRig{rig: newRig(t), tm: newManualTimer()}
	r.why.Store("")
	r.slots.layerRolledBack = "slot b booted without commit (watchdog reset)"
	r.slots.layerFailed = "b"
	tr, err := Boot(context.Background(), r.config())
	if tr != nil || err != nil {
		t.Fatalf("%v %v", tr, err)
	}
	if !r.saidContains("UPDATE ROLLED BACK: slot b booted without commit (watchdog reset)") || r.lastEvent().Action != "rolled-back" || r.lastEvent().Slot != "b" {
		t.Fatalf("not said or audited: %v %+v", r.said, r.lastEvent())
	}
}

// TestCommittedBootRaisesFloor: a cut between the commit (BootOrder) and
// the floor's raise leaves the persisted floor low; the next boot of the
// committed slot raises it to the running image's floor.
func TestCommittedBootRaisesFloor(t *testing.T) {
	r := &trialRig{rig: newRig(t), tm: newManualTimer()}
	r.why.Store("")
	if err := r.floor.Raise(100); err != nil {
		t.Fatal(err)
	}
	if tr, err := Boot(context.Background(), r.config()); tr != nil || err != nil {
		t.Fatalf("ordinary boot: %v %v", tr, err)
	}
	if f, err := r.floor.Get(); err != nil || f != 115 {
		t.Fatalf("floor after a committed boot: %d %v; want the image's 115", f, err)
	}
}
