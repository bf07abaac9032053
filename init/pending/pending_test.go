package pending

import (
	"errors"
	"sort"
	"sync"
	"testing"
	"time"
)

// Manual is a clock that moves only when the test says so.
type manual struct {
	mu   sync.Mutex
	now  time.Time
	next int
	fns  map[int]struct {
		at time.Time
		f  func()
	}
}

func newManual() *manual {
	return &manual{now: time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC), fns: map[int]struct {
		at time.Time
		f  func()
	}{}}
}

func (m *manual) Now() time.Time { m.mu.Lock(); defer m.mu.Unlock(); return m.now }

func (m *manual) AfterFunc(d time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	k := m.next
	m.fns[k] = struct {
		at time.Time
		f  func()
	}{m.now.Add(d), f}
	return func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, ok := m.fns[k]
		delete(m.fns, k)
		return ok
	}
}

func (m *manual) Advance(d time.Duration) {
	m.mu.Lock()
	m.now = m.now.Add(d)
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

// owner is how netfw, netconf and update use a gate: their lock around it.
type owner struct {
	mu       sync.Mutex
	g        *Gate
	reverted []string
}

func (o *owner) arm(d time.Duration) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	id, _, err := o.g.Arm(d, o.expire)
	if err != nil {
		panic(err)
	}
	return id
}

func (o *owner) expire(id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.g.Expire(id) {
		o.reverted = append(o.reverted, id)
	}
}

func TestGate(t *testing.T) {
	tm := newManual()
	o := &owner{g: New(tm)}

	// Unconfirmed: reverted at the deadline, not before.
	a := o.arm(time.Minute)
	tm.Advance(59 * time.Second)
	if len(o.reverted) != 0 {
		t.Fatal("reverted early")
	}
	if _, _, rem, ok := o.g.Pending(); !ok || rem != time.Second {
		t.Fatalf("pending %v remaining %v", ok, rem)
	}
	tm.Advance(time.Second)
	if len(o.reverted) != 1 || o.reverted[0] != a {
		t.Fatalf("reverted %v", o.reverted)
	}
	if err := o.g.Confirm(a, nil); !errors.Is(err, ErrNone) {
		t.Fatalf("confirm after revert: %v", err)
	}

	// Wrong id, then a failing commit: still pending, still reverts.
	b := o.arm(time.Minute)
	if err := o.g.Confirm(a, nil); !errors.Is(err, ErrID) {
		t.Fatalf("confirm with old id: %v", err)
	}
	boom := errors.New("disk full")
	if err := o.g.Confirm(b, func() error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failing commit: %v", err)
	}
	tm.Advance(time.Minute)
	if len(o.reverted) != 2 {
		t.Fatalf("a change whose commit failed did not revert: %v", o.reverted)
	}

	// Confirmed: never reverted.
	c := o.arm(time.Minute)
	committed := false
	if err := o.g.Confirm(c, func() error { committed = true; return nil }); err != nil || !committed {
		t.Fatalf("confirm: %v", err)
	}
	tm.Advance(time.Hour)
	if len(o.reverted) != 2 {
		t.Fatal("confirmed change reverted")
	}

	// Superseded: only the newest reverts, once.
	o.arm(time.Minute)
	tm.Advance(30 * time.Second)
	e := o.arm(time.Minute)
	tm.Advance(time.Minute)
	if len(o.reverted) != 3 || o.reverted[2] != e {
		t.Fatalf("supersede: %v", o.reverted)
	}

	// Closed: no revert, no new change.
	o.arm(time.Minute)
	o.mu.Lock()
	o.g.Close()
	o.mu.Unlock()
	tm.Advance(time.Hour)
	if len(o.reverted) != 3 {
		t.Fatal("closed gate reverted")
	}
	if _, _, err := o.g.Arm(time.Minute, o.expire); !errors.Is(err, ErrClosed) {
		t.Fatalf("arm after close: %v", err)
	}
}

// TestGateExpireRacesConfirm: a confirm that loses the race to the
// deadline fails, and one that wins stops the revert: never both.
func TestGateExpireRacesConfirm(t *testing.T) {
	for range 200 {
		o := &owner{g: New(nil)}
		id := o.arm(time.Microsecond)
		o.mu.Lock()
		err := o.g.Confirm(id, nil)
		o.mu.Unlock()
		// A failed confirm means the expiry already ran under the lock;
		// a successful one means it never will revert.
		o.mu.Lock()
		n := len(o.reverted)
		o.mu.Unlock()
		if (err == nil) == (n == 1) {
			t.Fatalf("confirm err %v and %d reverts", err, n)
		}
	}
}

func TestSteady(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	s := Steady{For: 5 * time.Minute}
	steps := []struct {
		at      time.Duration
		healthy bool
		want    bool
	}{
		{0, true, false},
		{4 * time.Minute, true, false},
		{4*time.Minute + 30*time.Second, false, false}, // one bad report restarts the count
		{5 * time.Minute, true, false},
		{9*time.Minute + 59*time.Second, true, false},
		{10 * time.Minute, true, true},
	}
	for _, st := range steps {
		if got := s.Observe(t0.Add(st.at), st.healthy); got != st.want {
			t.Fatalf("at %v healthy=%v: %v, want %v", st.at, st.healthy, got, st.want)
		}
	}
}
