package license

import "time"

// Clock is the wall clock and timer source. Tests pass a fake one to simulate
// days without sleeping; the daemon passes SystemClock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// SystemClock is the real clock. Its times carry Go's monotonic reading, so
// elapsed time measured within one run ignores wall-clock steps.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// After returns time.After(d).
func (SystemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
