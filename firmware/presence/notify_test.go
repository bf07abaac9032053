package presence

import (
	"testing"
	"time"
)

// TestBucket: a burst of NOTIFYs passes at once, then they leave at the
// configured rate, and unused time refills the burst only up to its size.
func TestBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(10, 3, func() time.Time { return now })
	for i := 0; i < 3; i++ {
		if d := b.take(); d != 0 {
			t.Fatalf("burst token %d: wait %v", i, d)
		}
	}
	if d := b.take(); d != 100*time.Millisecond {
		t.Fatalf("after the burst: wait %v, want 100ms", d)
	}
	now = now.Add(100 * time.Millisecond)
	if d := b.take(); d != 0 {
		t.Fatalf("after 100ms: wait %v", d)
	}
	now = now.Add(time.Hour)
	for i := 0; i < 3; i++ {
		if d := b.take(); d != 0 {
			t.Fatalf("refilled token %d: wait %v", i, d)
		}
	}
	if d := b.take(); d <= 0 {
		t.Fatal("an hour idle saved more than the burst")
	}
}
