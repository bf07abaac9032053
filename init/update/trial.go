package update

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/init/pending"
)

// Defaults of a trial boot.
const (
	DefaultHealthyFor    = 5 * time.Minute
	DefaultTrialDeadline = 15 * time.Minute
	DefaultPollInterval  = 5 * time.Second
)

// TrialConfig configures Boot.
type TrialConfig struct {
	Slots   Slots
	Floor   Floor
	Running Release
	// Healthy reports PID 1's and edgepbxd's health (SIP listening, admin
	// answering, store opened, firewall applied, licence not worse) and,
	// when not healthy, why.
	Healthy func() (bool, string)
	// HealthyFor is N: the trial commits after this long healthy without
	// a break. Deadline: without that by then, the box goes back.
	HealthyFor, Deadline, Interval time.Duration
	Timer                          pending.Timer
	// Reboot starts an orderly reboot (into the old slot after Rollback).
	Reboot func()
	// Say prints on the console and the dashboard's banner.
	Say   func(format string, a ...any)
	Audit func(Event)
	Log   *slog.Logger
}

// TrialState is what the dashboard shows of a trial boot.
type TrialState struct {
	Slot         string        `json:"slot"`
	Version      string        `json:"version"`
	HealthyFor   time.Duration `json:"healthy_for"`
	HealthySince time.Time     `json:"healthy_since,omitzero"`
	Remaining    time.Duration `json:"remaining"`
	Committed    bool          `json:"committed"`
	RolledBack   string        `json:"rolled_back,omitempty"`
}

// Trial is a running trial boot: it commits the slot once the box was
// healthy for HealthyFor without a break, or rolls back at the deadline.
type Trial struct {
	cfg    TrialConfig
	mu     sync.Mutex
	gate   *pending.Gate
	id     string
	steady pending.Steady
	why    string // the last unhealthy reason
	state  TrialState
	stop   func() bool
}

// Boot decides, once per boot, what the slot state means:
//   - no trial: nothing to do (nil, nil), after saying so if the boot
//     layer found and ended a failed trial itself (RolledBack);
//   - a trial slot marked but another slot booted: the trial boot failed
//     (kernel panic, watchdog reset, hang, power loss) and the firmware
//     came back here; it is rolled back and said so (nil, nil);
//   - booted the trial slot: a Trial starts.
func Boot(ctx context.Context, cfg TrialConfig) (*Trial, error) {
	if cfg.HealthyFor <= 0 {
		cfg.HealthyFor = DefaultHealthyFor
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = DefaultTrialDeadline
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPollInterval
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Say == nil {
		cfg.Say = func(string, ...any) {}
	}
	st := cfg.Slots.State()
	if st.RolledBack {
		// The boot layer already ended the failed trial: say and audit it.
		reason := st.LastRollback
		if reason == "" {
			reason = "the trial boot did not come up (kernel panic, watchdog reset, hang or power loss)"
		}
		report(cfg, Event{Action: "rolled-back", Slot: cmp.Or(st.TrialSlot, st.FailedSlot), Detail: reason + ": back on slot " + st.Booted})
		cfg.Say("UPDATE ROLLED BACK: %s: back on slot %s", reason, st.Booted)
	}
	if !st.Trial {
		// A committed slot's floor holds, even when a power cut came
		// between the commit (BootOrder) and the floor's raise after it.
		if cfg.Floor != nil {
			if err := cfg.Floor.Raise(cfg.Running.Floor); err != nil {
				cfg.Log.Error("update: raise version floor", "err", err)
			}
		}
		return nil, nil
	}
	if st.Booted != st.TrialSlot {
		reason := fmt.Sprintf("the trial boot of slot %s did not come up (kernel panic, watchdog reset, hang or power loss): back on slot %s", st.TrialSlot, st.Booted)
		err := cfg.Slots.Rollback(reason)
		report(cfg, Event{Action: "rolled-back", Slot: st.TrialSlot, Detail: reason})
		cfg.Say("UPDATE ROLLED BACK: %s", reason)
		if err != nil {
			return nil, fmt.Errorf("update: record rollback: %w", err)
		}
		return nil, nil
	}
	t := &Trial{cfg: cfg, gate: pending.New(cfg.Timer), steady: pending.Steady{For: cfg.HealthyFor}}
	t.state = TrialState{Slot: st.Booted, Version: cfg.Running.Version, HealthyFor: cfg.HealthyFor}
	t.mu.Lock()
	defer t.mu.Unlock()
	id, _, err := t.gate.Arm(cfg.Deadline, t.expire)
	if err != nil {
		return nil, err
	}
	t.id = id
	context.AfterFunc(ctx, t.Close)
	cfg.Say("trial boot of slot %s (version %s): commits after %v healthy, else back to the old slot within %v",
		st.Booted, cfg.Running.Version, cfg.HealthyFor, cfg.Deadline)
	t.schedule()
	return t, nil
}

func (t *Trial) timer() pending.Timer {
	if t.cfg.Timer == nil {
		return pending.Wall{}
	}
	return t.cfg.Timer
}

// schedule arms the next health poll; called under t.mu.
func (t *Trial) schedule() {
	t.stop = t.timer().AfterFunc(t.cfg.Interval, t.poll)
}

func (t *Trial) poll() {
	ok, why := t.cfg.Healthy()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.state.Committed || t.state.RolledBack != "" || t.gate.Closed() {
		return
	}
	if !ok {
		t.why = why
	}
	if !t.steady.Observe(t.gate.Now(), ok) {
		t.schedule()
		return
	}
	err := t.gate.Confirm(t.id, func() error {
		if err := t.cfg.Slots.Commit(); err != nil {
			return fmt.Errorf("commit slot %s: %w", t.state.Slot, err)
		}
		return nil
	})
	if err != nil {
		// Still pending: try again next poll; the deadline still holds.
		t.cfg.Log.Error("update: commit failed", "err", err)
		t.schedule()
		return
	}
	t.state.Committed = true
	// The floor rises only with a committed image: a trial that fails
	// leaves the old version installable.
	if t.cfg.Floor != nil {
		if err := t.cfg.Floor.Raise(t.cfg.Running.Floor); err != nil {
			t.cfg.Log.Error("update: raise version floor", "err", err)
		}
	}
	report(t.cfg, Event{Action: "committed", Slot: t.state.Slot, Version: t.cfg.Running.Version, Number: t.cfg.Running.VersionNumber,
		Detail: fmt.Sprintf("healthy for %v", t.cfg.HealthyFor)})
	t.cfg.Say("update committed: slot %s, version %s", t.state.Slot, t.cfg.Running.Version)
}

func (t *Trial) expire(id string) {
	t.mu.Lock()
	if !t.gate.Expire(id) {
		t.mu.Unlock()
		return
	}
	if t.stop != nil {
		t.stop()
	}
	why := t.why
	if why == "" {
		why = "no health report"
	}
	reason := fmt.Sprintf("slot %s (version %s) was not healthy for %v within %v (last: %s)", t.state.Slot,
		t.cfg.Running.Version, t.cfg.HealthyFor, t.cfg.Deadline, why)
	t.state.RolledBack = reason
	err := t.cfg.Slots.Rollback(reason)
	t.mu.Unlock()
	report(t.cfg, Event{Action: "rolled-back", Slot: t.state.Slot, Version: t.cfg.Running.Version, Number: t.cfg.Running.VersionNumber, Detail: reason})
	if err != nil {
		// The firmware still returns to the old slot on the next boot:
		// BootNext was one-shot and BootOrder never named the trial slot.
		t.cfg.Log.Error("update: record rollback", "err", err)
	}
	t.cfg.Say("UPDATE ROLLED BACK: %s; rebooting into the old slot", reason)
	if t.cfg.Reboot != nil {
		t.cfg.Reboot()
	}
}

// State reports the trial for the dashboard.
func (t *Trial) State() TrialState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.state
	st.HealthySince = t.steady.Since()
	_, _, st.Remaining, _ = t.gate.Pending()
	return st
}

// Close stops the trial without deciding (shutdown): the next boot is
// not the trial slot's again (BootNext was one-shot), so an uncommitted
// trial rolls back by itself.
func (t *Trial) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stop != nil {
		t.stop()
	}
	t.gate.Close()
}

func report(cfg TrialConfig, e Event) {
	lvl := slog.LevelInfo
	if e.Action == "rolled-back" {
		lvl = slog.LevelWarn
	}
	cfg.Log.Log(context.Background(), lvl, "update: "+e.Action, "slot", e.Slot, "version", e.Version, "detail", e.Detail)
	if cfg.Audit != nil {
		cfg.Audit(e)
	}
}
