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
// The counters sit in fixed slots; a min-heap of slot numbers orders them
// by Count, so an increment or a replacement costs O(log cap) int swaps,
// touches the key map only when a key enters or leaves, and allocates
// only when a new key must be copied (own).
type topK[K comparable] struct {
	cap  int
	own  func(K) K // copies a key before it is kept (strings: detach from packet buffers)
	idx  map[K]int32
	ent  []Counter[K] // slots
	heap []int32      // slot numbers, min-heap on Count
	pos  []int32      // slot → its place in heap
}

// Counter is one tracked key: Count overestimates the true count by at
// most Err.
type Counter[K comparable] struct {
	Key   K      `json:"k"`
	Count uint64 `json:"n"`
	Err   uint64 `json:"e,omitempty"`
}

func newTopK[K comparable](capacity int, own func(K) K) *topK[K] {
	return &topK[K]{cap: capacity, own: own, idx: make(map[K]int32, capacity)}
}

func (t *topK[K]) add(k K, n uint64) {
	if s, ok := t.idx[k]; ok {
		t.ent[s].Count += n
		t.down(int(t.pos[s]))
		return
	}
	if t.own != nil {
		k = t.own(k)
	}
	t.insert(Counter[K]{Key: k, Count: n})
}

// insert adds a key not in the sketch.
func (t *topK[K]) insert(c Counter[K]) {
	if len(t.ent) < t.cap {
		s := int32(len(t.ent))
		t.ent = append(t.ent, c)
		t.idx[c.Key] = s
		t.heap = append(t.heap, s)
		t.pos = append(t.pos, int32(len(t.heap)-1))
		t.up(len(t.heap) - 1)
		return
	}
	// Full: the new key takes the least counted slot and its count.
	s := t.heap[0]
	m := &t.ent[s]
	delete(t.idx, m.Key)
	*m = Counter[K]{Key: c.Key, Count: m.Count + c.Count, Err: m.Count + c.Err}
	t.idx[c.Key] = s
	t.down(0)
}

func (t *topK[K]) less(i, j int) bool { return t.ent[t.heap[i]].Count < t.ent[t.heap[j]].Count }

func (t *topK[K]) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.pos[t.heap[i]] = int32(i)
	t.pos[t.heap[j]] = int32(j)
}

func (t *topK[K]) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *topK[K]) down(i int) {
	for {
		l, s := 2*i+1, i
		if l < len(t.heap) && t.less(l, s) {
			s = l
		}
		if r := l + 1; r < len(t.heap) && t.less(r, s) {
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
	out := slices.Clone(t.ent)
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
	t.ent, t.heap, t.pos = t.ent[:0], t.heap[:0], t.pos[:0]
	for _, x := range c {
		if _, dup := t.idx[x.Key]; !dup {
			t.insert(x)
		}
	}
}

func (t *topK[K]) len() int { return len(t.ent) }
