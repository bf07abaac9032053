package supervise

import "time"

// Backoff is the restart policy: the delay doubles from Min up to Max after
// each quick exit and drops back to Min once a run lasted StableAfter.
type Backoff struct {
	Min, Max, StableAfter time.Duration
}

// Default restart policy.
const (
	DefaultMin         = 250 * time.Millisecond
	DefaultMax         = 30 * time.Second
	DefaultStableAfter = 30 * time.Second
)

func (b Backoff) withDefaults() Backoff {
	if b.Min <= 0 {
		b.Min = DefaultMin
	}
	if b.Max < b.Min {
		b.Max = max(DefaultMax, b.Min)
	}
	if b.StableAfter <= 0 {
		b.StableAfter = DefaultStableAfter
	}
	return b
}

// Next returns the delay before the next start, given the previous delay
// (0 before the first restart) and how long the last run lasted.
func (b Backoff) Next(prev, ran time.Duration) time.Duration {
	b = b.withDefaults()
	if prev <= 0 || ran >= b.StableAfter {
		return b.Min
	}
	if prev >= b.Max/2 {
		return b.Max
	}
	return min(prev*2, b.Max)
}
