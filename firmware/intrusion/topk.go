package intrusion

import (
	"cmp"
	"slices"
)

// topK is a space-saving sketch (Metwally et al.): at most cap counters;
// a key not tracked when the sketch is full takes over the smallest
// counter and inherits its count as its error bound. Every key seen more
// than total/cap times is in the sketch, and each count overestimates the
// true one by at most its Err. While fewer than cap distinct keys were
// seen, the counts are exact (Err 0). Memory is bounded by cap whatever
// an attacker sends: a flood of distinct sources cannot grow it.
//
// The counters form a min-heap on Count with an index, so an increment or
// a replacement costs O(log cap) and allocates only when a new key must
// be copied (own).
type topK[K comparable] struct {
	cap  int
	own  func(K) K // copies a key before it is kept (strings: detach from packet buffers)
	idx  map[K]int
	heap []Counter[K]
}

// Counter is one tracked key: Count overestimates the true count by at
// most Err.
type Counter[K comparable] struct {
	Key   K      `json:"k"`
	Count uint64 `json:"n"`
	Err   uint64 `json:"e,omitempty"`
}

func newTopK[K comparable](capacity int, own func(K) K) *topK[K] {
	return &topK[K]{cap: capacity, own: own, idx: make(map[K]int, capacity)}
}

func (t *topK[K]) add(k K, n uint64) {
	if i, ok := t.idx[k]; ok {
		t.heap[i].Count += n
		t.down(i)
		return
	}
	if t.own != nil {
		k = t.own(k)
	}
	if len(t.heap) < t.cap {
		t.heap = append(t.heap, Counter[K]{Key: k, Count: n})
		t.idx[k] = len(t.heap) - 1
		t.up(len(t.heap) - 1)
		return
	}
	// Full: the new key replaces the least counted one.
	m := &t.heap[0]
	delete(t.idx, m.Key)
	*m = Counter[K]{Key: k, Count: m.Count + n, Err: m.Count}
	t.idx[k] = 0
	t.down(0)
}

func (t *topK[K]) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.idx[t.heap[i].Key] = i
	t.idx[t.heap[j].Key] = j
}

func (t *topK[K]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if t.heap[p].Count <= t.heap[i].Count {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *topK[K]) down(i int) {
	for {
		l, s := 2*i+1, i
		if l < len(t.heap) && t.heap[l].Count < t.heap[s].Count {
			s = l
		}
		if r := l + 1; r < len(t.heap) && t.heap[r].Count < t.heap[s].Count {
			s = r
		}
		if s == i {
			return
		}
		t.swap(i, s)
		i = s
	}
}

// sorted returns the counters, largest first (ties by key order of less).
func (t *topK[K]) sorted(less func(a, b K) int) []Counter[K] {
	out := slices.Clone(t.heap)
	sortCounters(out, less)
	return out
}

func sortCounters[K comparable](c []Counter[K], less func(a, b K) int) {
	slices.SortFunc(c, func(a, b Counter[K]) int {
		if r := cmp.Compare(b.Count, a.Count); r != 0 {
			return r
		}
		return less(a.Key, b.Key)
	})
}

// load rebuilds a sketch from stored counters, keeping at most cap (the
// largest) so a stored value cannot exceed the bound either.
func (t *topK[K]) load(c []Counter[K], less func(a, b K) int) {
	sortCounters(c, less)
	if len(c) > t.cap {
		c = c[:t.cap]
	}
	clear(t.idx)
	t.heap = t.heap[:0]
	for _, x := range c {
		if _, dup := t.idx[x.Key]; dup {
			continue
		}
		t.heap = append(t.heap, x)
		t.idx[x.Key] = len(t.heap) - 1
		t.up(len(t.heap) - 1)
	}
}

func (t *topK[K]) len() int { return len(t.heap) }
