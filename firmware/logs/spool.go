package logs

import "sync"

// entry is a queued item with the queue's own sequence number.
type entry struct {
	seq uint64
	it  item
}

// spool is where the sender keeps messages until the collector confirmed
// them. push never blocks; next hands out entries after a read cursor;
// confirm removes everything up to a sequence number; rewind moves the
// cursor back to the first unconfirmed entry (a new connection resends
// the unconfirmed tail: at least once).
type spool interface {
	push(it item)
	next(buf []entry, n int) []entry
	confirm(seq uint64)
	rewind()
	reset() // disabled: forget everything queued
	stats() spoolStats
	// auditMark records the last audit sequence number handed to push (or
	// skipped while off), so a restart resumes after it.
	auditMark(seq uint64)
	close() error
}

type spoolStats struct {
	queued     int    // unconfirmed entries
	dropped    uint64 // oldest entries dropped past the bound
	bytes      int64  // on disk
	limitBytes int64
	durable    bool
}

// memSpool is the in-memory spool (no data directory): a ring that drops
// its oldest entry when full.
type memSpool struct {
	mu      sync.Mutex
	q       []entry
	head    int // first unconfirmed
	n       int // entries in the ring
	rd      int // entries after head already handed out
	seq     uint64
	dropped uint64
}

func newMemSpool(size int) *memSpool { return &memSpool{q: make([]entry, size)} }

func (m *memSpool) push(it item) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.n == len(m.q) {
		// Full: the newest events matter most during an attack.
		m.q[m.head] = entry{}
		m.head = (m.head + 1) % len(m.q)
		m.n--
		m.rd = max(m.rd-1, 0)
		m.dropped++
	}
	m.seq++
	m.q[(m.head+m.n)%len(m.q)] = entry{seq: m.seq, it: it}
	m.n++
}

func (m *memSpool) next(buf []entry, n int) []entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ; n > 0 && m.rd < m.n; n-- {
		buf = append(buf, m.q[(m.head+m.rd)%len(m.q)])
		m.rd++
	}
	return buf
}

func (m *memSpool) confirm(seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.n > 0 && m.q[m.head].seq <= seq {
		m.q[m.head] = entry{}
		m.head = (m.head + 1) % len(m.q)
		m.n--
		m.rd = max(m.rd-1, 0)
	}
}

func (m *memSpool) rewind() {
	m.mu.Lock()
	m.rd = 0
	m.mu.Unlock()
}

func (m *memSpool) reset() {
	m.mu.Lock()
	clear(m.q)
	m.head, m.n, m.rd = 0, 0, 0
	m.mu.Unlock()
}

func (m *memSpool) stats() spoolStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return spoolStats{queued: m.n, dropped: m.dropped}
}

func (m *memSpool) auditMark(uint64) {}
func (m *memSpool) close() error     { return nil }
