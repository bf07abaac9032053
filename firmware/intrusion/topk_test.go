package intrusion

import (
	"cmp"
	"math/rand/v2"
	"testing"
)

// TestTopKGuarantees checks the space-saving bounds against exact counts
// on skewed streams: every count overestimates by at most its Err, and
// every key seen more than total/cap times is kept.
func TestTopKGuarantees(t *testing.T) {
	for _, c := range []struct {
		name      string
		cap, keys int
		n         int
	}{{"fits", 64, 50, 10_000}, {"skewed", 16, 1000, 50_000}, {"flat", 8, 100_000, 100_000}} {
		t.Run(c.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			z := rand.NewZipf(r, 1.2, 1, uint64(c.keys-1))
			s := newTopK[uint64](c.cap, nil)
			exact := map[uint64]uint64{}
			for range c.n {
				k := z.Uint64()
				exact[k]++
				s.add(k, 1)
			}
			if s.len() > c.cap {
				t.Fatalf("%d counters, cap %d", s.len(), c.cap)
			}
			kept := map[uint64]bool{}
			for _, x := range s.sorted(cmp.Compare[uint64]) {
				kept[x.Key] = true
				if x.Count < exact[x.Key] || x.Count-x.Err > exact[x.Key] {
					t.Errorf("key %d: count %d err %d, exact %d", x.Key, x.Count, x.Err, exact[x.Key])
				}
				if len(exact) <= c.cap && x.Err != 0 {
					t.Errorf("key %d: err %d while every key fits", x.Key, x.Err)
				}
			}
			for k, v := range exact {
				if v > uint64(c.n/c.cap) && !kept[k] {
					t.Errorf("heavy key %d (%d of %d) lost", k, v, c.n)
				}
			}
		})
	}
}
