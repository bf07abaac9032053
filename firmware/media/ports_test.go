package media

import (
	"errors"
	"testing"
)

func TestPortsRange(t *testing.T) {
	tests := []struct {
		lo, hi    uint16
		pairs     int
		first     uint16
		wantError bool
	}{
		{10000, 10009, 5, 10000, false},
		{10001, 10009, 4, 10002, false},
		{10000, 10000, 0, 0, true},
		{10000, 10001, 1, 10000, false},
		{80, 1000, 0, 0, true},
		{20000, 10000, 0, 0, true},
	}
	for _, tc := range tests {
		p, err := NewPorts(tc.lo, tc.hi)
		if tc.wantError {
			if err == nil {
				t.Errorf("%d-%d: no error", tc.lo, tc.hi)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%d-%d: %v", tc.lo, tc.hi, err)
		}
		if p.Capacity() != tc.pairs {
			t.Errorf("%d-%d: %d pairs, want %d", tc.lo, tc.hi, p.Capacity(), tc.pairs)
		}
		seen := map[uint16]bool{}
		for range tc.pairs {
			port, err := p.Allocate()
			if err != nil {
				t.Fatal(err)
			}
			if port%2 != 0 || port < tc.first || port+1 > tc.hi || seen[port] {
				t.Fatalf("%d-%d: bad or repeated port %d", tc.lo, tc.hi, port)
			}
			seen[port] = true
		}
		if _, err := p.Allocate(); !errors.Is(err, ErrNoPorts) {
			t.Fatalf("full range: err = %v", err)
		}
	}
}

func TestPortsReleaseAndReuse(t *testing.T) {
	p, err := NewPorts(20000, 20019) // 10 pairs
	if err != nil {
		t.Fatal(err)
	}
	a, _ := p.Allocate()
	if err := p.Release(a); err != nil {
		t.Fatal(err)
	}
	if err := p.Release(a); err == nil {
		t.Fatal("double release accepted")
	}
	if err := p.Release(a + 1); err == nil {
		t.Fatal("odd port release accepted")
	}
	// Round robin: the released port comes back only after all others.
	for i := 0; i < 9; i++ {
		b, _ := p.Allocate()
		if b == a {
			t.Fatalf("port %d reused after %d allocations", a, i)
		}
	}
	b, _ := p.Allocate()
	if b != a || p.InUse() != 10 {
		t.Fatalf("last free port %d, want %d; in use %d", b, a, p.InUse())
	}
}

func TestPortsRandomStart(t *testing.T) {
	starts := map[uint16]bool{}
	for range 20 {
		p, _ := NewPorts(30000, 39999)
		port, _ := p.Allocate()
		starts[port] = true
	}
	if len(starts) < 10 {
		t.Fatalf("only %d distinct first ports in 20 allocators", len(starts))
	}
}

func BenchmarkPortsAllocateRelease(b *testing.B) {
	p, _ := NewPorts(10000, 59999)
	held := make([]uint16, 0, 1000)
	for i := range 1000 {
		port, _ := p.Allocate()
		held = append(held, port)
		_ = i
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		port, err := p.Allocate()
		if err != nil {
			b.Fatal(err)
		}
		if err := p.Release(port); err != nil {
			b.Fatal(err)
		}
	}
}
