// Package update is edgepbxd's side of pulled firmware updates: it reads
// the vendor's update repository through TUF metadata (so the vendor can
// rotate keys, and a frozen or replayed repository is found out), decides
// by the admin's policy and maintenance window whether to install the
// newest bundle for this board, and streams it to PID 1, which verifies
// and installs it (init/update). Nothing here is trusted by PID 1: a
// compromised edgepbxd can only hand it bytes.
package update

import (
	"errors"
	"fmt"
	"time"
)

// Mode is the admin's update policy.
type Mode string

// Policies.
const (
	// ModeOff: the box does not look for updates.
	ModeOff Mode = "off"
	// ModeNotify: it looks, and says so on the dashboard; an admin installs.
	ModeNotify Mode = "notify"
	// ModeSecurity: it installs bundles marked as security fixes by itself.
	ModeSecurity Mode = "security-only"
	// ModeAll: it installs every newer bundle by itself.
	ModeAll Mode = "all"
)

// Window is the daily maintenance window (box time, UTC on an appliance
// without a time zone): installs start only inside it.
type Window struct {
	// Start is "HH:MM"; Hours 1..24 (24: any time).
	Start string `json:"start"`
	Hours int    `json:"hours"`
}

// Policy is the admin's update setting.
type Policy struct {
	Mode   Mode   `json:"mode"`
	Window Window `json:"window"`
}

// DefaultPolicy installs security fixes between 03:00 and 05:00.
var DefaultPolicy = Policy{Mode: ModeSecurity, Window: Window{Start: "03:00", Hours: 2}}

// ErrPolicy wraps every refused policy; the message names the field.
var ErrPolicy = errors.New("update policy refused")

// Validate checks a policy; the error names the field.
func (p Policy) Validate() error {
	switch p.Mode {
	case ModeOff, ModeNotify, ModeSecurity, ModeAll:
	default:
		return fmt.Errorf("%w: mode %q: want off, notify, security-only or all", ErrPolicy, p.Mode)
	}
	if _, err := p.Window.start(); err != nil {
		return err
	}
	if p.Window.Hours < 1 || p.Window.Hours > 24 {
		return fmt.Errorf("%w: window.hours %d: want 1..24", ErrPolicy, p.Window.Hours)
	}
	return nil
}

func (w Window) start() (time.Duration, error) {
	t, err := time.Parse("15:04", w.Start)
	if err != nil || len(w.Start) != 5 {
		return 0, fmt.Errorf("%w: window.start %q: want HH:MM", ErrPolicy, w.Start)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}

// Contains says whether t is inside the window; a window may cross
// midnight.
func (w Window) Contains(t time.Time) bool {
	s, err := w.start()
	if err != nil || w.Hours < 1 {
		return false
	}
	if w.Hours >= 24 {
		return true
	}
	tod := time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second
	end := s + time.Duration(w.Hours)*time.Hour
	if end <= 24*time.Hour {
		return tod >= s && tod < end
	}
	return tod >= s || tod < end-24*time.Hour
}

// Wants says whether the policy installs an offer by itself (inside the
// window: see Window.Contains).
func (p Policy) Wants(o Offer) bool {
	switch p.Mode {
	case ModeAll:
		return true
	case ModeSecurity:
		return o.Security
	}
	return false
}
