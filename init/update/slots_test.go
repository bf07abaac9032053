package update

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"
)

// fileSlots is the A/B boot layer over two files, with the UEFI semantics
// init/slots has (BootOrder, one-shot BootNext, a trial variable), until
// that package is merged: boot() plays the firmware.
type fileSlots struct {
	mu     sync.Mutex
	dir    string
	size   int64
	order  []string // BootOrder
	next   string   // BootNext
	trial  string   // EdgepbxTrial
	booted string
	// layerRolledBack plays init/slots, which ends a failed trial itself.
	layerRolledBack string
	layerFailed     string // the slot it names as failed
	invalid         map[string]bool
	rollbacks       []string
	calls           []string
}

func newFileSlots(t testing.TB, size int64) *fileSlots {
	t.Helper()
	s := &fileSlots{dir: t.TempDir(), size: size, order: []string{"a", "b"}, booted: "a", invalid: map[string]bool{}}
	for _, n := range []string{"a", "b"} {
		if err := os.WriteFile(s.path(n), make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func (s *fileSlots) path(n string) string { return filepath.Join(s.dir, n+".img") }

func (s *fileSlots) other(n string) string {
	if n == "a" {
		return "b"
	}
	return "a"
}

func (s *fileSlots) State() BootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return BootState{Booted: s.booted, Trial: s.trial != "", TrialSlot: s.trial,
		RolledBack: s.layerRolledBack != "", LastRollback: s.layerRolledBack, FailedSlot: s.layerFailed}
}

func (s *fileSlots) Inactive() (Slot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.other(s.booted)
	return Slot{Name: n, Path: s.path(n), Size: s.size}, nil
}

func (s *fileSlots) MarkInvalid(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n == s.booted {
		return errors.New("active slot")
	}
	s.calls = append(s.calls, "invalid "+n)
	s.invalid[n] = true
	if s.next == n {
		s.next = ""
	}
	if s.trial == n {
		s.trial = ""
	}
	return nil
}

func (s *fileSlots) MarkTrial(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "trial "+n)
	s.invalid[n] = false
	s.next, s.trial = n, n
	return nil
}

func (s *fileSlots) Commit() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.trial == "" || s.trial != s.booted {
		return errors.New("not a trial boot")
	}
	s.calls = append(s.calls, "commit "+s.booted)
	s.order = []string{s.booted, s.other(s.booted)}
	s.trial = ""
	return nil
}

func (s *fileSlots) Rollback(reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "rollback "+s.trial)
	s.trial, s.next = "", ""
	s.rollbacks = append(s.rollbacks, reason)
	return nil
}

// boot plays the firmware: BootNext once, else BootOrder's first valid slot.
func (s *fileSlots) boot() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next != "" && !s.invalid[s.next] {
		s.booted, s.next = s.next, ""
		return s.booted
	}
	s.next = ""
	for _, n := range s.order {
		if !s.invalid[n] {
			s.booted = n
			return n
		}
	}
	panic("no bootable slot")
}

func (s *fileSlots) bootable(n string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.invalid[n] && (s.next == n || s.order[0] == n)
}

// manualTimer moves only when the test says so.
type manualTimer struct {
	mu   sync.Mutex
	now  time.Time
	next int
	fns  map[int]timerFn
}

type timerFn struct {
	at time.Time
	f  func()
}

func newManualTimer() *manualTimer {
	return &manualTimer{now: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC), fns: map[int]timerFn{}}
}

func (m *manualTimer) Now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.now }

func (m *manualTimer) AfterFunc(d time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	k := m.next
	m.fns[k] = timerFn{m.now.Add(d), f}
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.fns[k]
		delete(m.fns, k)
		return ok
	}
}

// Advance moves the clock in steps of at most step, running what is due.
func (m *manualTimer) Advance(d, step time.Duration) {
	for d > 0 {
		s := min(d, step)
		d -= s
		m.mu.Lock()
		m.now = m.now.Add(s)
		var due []int
		for k, v := range m.fns {
			if !v.at.After(m.now) {
				due = append(due, k)
			}
		}
		sort.Ints(due)
		var fs []func()
		for _, k := range due {
			fs = append(fs, m.fns[k].f)
			delete(m.fns, k)
		}
		m.mu.Unlock()
		for _, f := range fs {
			f()
		}
	}
}
