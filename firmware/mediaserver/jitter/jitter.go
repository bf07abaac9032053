// Package jitter reorders the RTP packets of one leg that the box records
// or mixes, and plays them out one frame per tick with losses marked for
// concealment. The buffer is bounded (a fixed ring of preallocated slots):
// no packet stream, however hostile, makes it allocate.
package jitter

import (
	"errors"
	"fmt"
)

// Config sizes a Buffer.
type Config struct {
	// Depth is the frames held before playout starts (the target delay):
	// a packet may arrive up to Depth-1 frames late and still be played.
	Depth int
	// Capacity bounds the frames held; a packet further ahead than that
	// pushes the playout point forward (the oldest frames are skipped).
	Capacity int
	// MaxPayload is the largest payload kept (bytes); 640 holds 80 ms of
	// G.711 or G.722.
	MaxPayload int
}

// DefaultConfig: 60 ms target delay, 640 ms bound, 80 ms packets.
func DefaultConfig() Config { return Config{Depth: 3, Capacity: 32, MaxPayload: 640} }

// Stats are the buffer's counters.
type Stats struct {
	Received   uint64 // packets accepted into the buffer
	Played     uint64 // frames played from a packet
	Lost       uint64 // frames played as lost (packet missing at its time)
	Late       uint64 // packets that arrived after their playout time
	Duplicates uint64
	Skipped    uint64 // buffered frames dropped to keep within Capacity
	Underruns  uint64 // ticks with nothing buffered at all (sender paused)
	Oversize   uint64 // payloads above MaxPayload
	Resyncs    uint64 // sequence jumps that restarted the buffer
	Probation  uint64 // packets of an unconfirmed sequence jump, dropped
}

// Frame is what Pop plays out for one tick.
type Frame struct {
	Payload   []byte // valid until the next Push or Pop; nil when Lost
	Seq       uint16
	Timestamp uint32
	Marker    bool
	// Lost: the packet of this sequence number never arrived in time;
	// conceal it. Underrun: nothing is buffered (the sender paused or
	// stopped); Seq is not advanced, so nothing is lost.
	Lost, Underrun bool
}

// ErrRejected wraps every reason a packet is not buffered.
var ErrRejected = errors.New("jitter: packet rejected")

type slot struct {
	full    bool
	seq     uint16
	ts      uint32
	marker  bool
	payload []byte
}

// Buffer is one leg's jitter buffer. Not safe for concurrent use: the
// leg's receive path pushes and its playout tick pops under one owner.
type Buffer struct {
	cfg     Config
	slots   []slot
	mask    uint16
	have    bool   // a first packet fixed the sequence base
	started bool   // prefill done
	next    uint16 // sequence number to play next
	high    uint16 // highest sequence number buffered
	probe   uint16 // the sequence number that would confirm a jump
	count   int
	out     []byte
	stats   Stats
}

// New returns a buffer, validating cfg.
func New(cfg Config) (*Buffer, error) {
	if cfg.Depth < 1 || cfg.Capacity < cfg.Depth || cfg.Capacity > 1024 || cfg.MaxPayload < 1 || cfg.MaxPayload > 65536 {
		return nil, fmt.Errorf("jitter: config %+v: need 1 <= Depth <= Capacity <= 1024, 1 <= MaxPayload <= 65536", cfg)
	}
	n := 1
	for n < cfg.Capacity {
		n <<= 1
	}
	b := &Buffer{cfg: cfg, slots: make([]slot, n), mask: uint16(n - 1), out: make([]byte, 0, cfg.MaxPayload)}
	backing := make([]byte, n*cfg.MaxPayload)
	for i := range b.slots {
		b.slots[i].payload = backing[i*cfg.MaxPayload : i*cfg.MaxPayload : (i+1)*cfg.MaxPayload]
	}
	return b, nil
}

// Stats returns the counters.
func (b *Buffer) Stats() Stats { return b.stats }

// Len is the number of packets buffered.
func (b *Buffer) Len() int { return b.count }

// Push buffers one packet (the payload is copied).
func (b *Buffer) Push(seq uint16, ts uint32, marker bool, payload []byte) error {
	if len(payload) > b.cfg.MaxPayload {
		b.stats.Oversize++
		return fmt.Errorf("%w: payload of %d bytes, limit %d", ErrRejected, len(payload), b.cfg.MaxPayload)
	}
	if !b.have {
		b.have, b.next, b.high = true, seq, seq
	}
	d := int(int16(seq - b.next)) // signed distance, wrap-safe
	if d < 0 && !b.started && int(int16(b.high-seq)) < len(b.slots) {
		// Reordered before playout began: move the start back.
		b.next, d = seq, 0
	}
	if d < -4*len(b.slots) || d > 4*len(b.slots) {
		// A jump far from the playout point: the sender restarted its
		// sequence, or a stray packet. Like RFC 3550 A.1's probation, follow
		// the jump only when the next packet continues it.
		if seq != b.probe {
			b.probe = seq + 1
			b.stats.Probation++
			return fmt.Errorf("%w: sequence jump to %d (playing %d)", ErrRejected, seq, b.next)
		}
		b.resync(seq)
		d = 0
	}
	if d < 0 {
		b.stats.Late++
		return fmt.Errorf("%w: late (seq %d, playing %d)", ErrRejected, seq, b.next)
	}
	// Move the playout point so seq fits, skipping the oldest.
	for int(int16(seq-b.next)) >= len(b.slots) {
		b.skipOne()
	}
	s := &b.slots[seq&b.mask]
	if s.full {
		b.stats.Duplicates++
		return fmt.Errorf("%w: duplicate seq %d", ErrRejected, seq)
	}
	if b.count == 0 || int(int16(seq-b.high)) > 0 {
		b.high = seq
	}
	s.full, s.seq, s.ts, s.marker = true, seq, ts, marker
	s.payload = append(s.payload[:0], payload...)
	b.count++
	b.stats.Received++
	return nil
}

func (b *Buffer) skipOne() {
	s := &b.slots[b.next&b.mask]
	if s.full {
		s.full = false
		b.count--
		b.stats.Skipped++
	} else {
		b.stats.Lost++
	}
	b.next++
}

func (b *Buffer) resync(seq uint16) {
	for i := range b.slots {
		if b.slots[i].full {
			b.slots[i].full = false
			b.stats.Skipped++
		}
	}
	b.count, b.next, b.high, b.started = 0, seq, seq, false
	b.stats.Resyncs++
}

// Pop plays out the next frame; call it once per packet interval. Until
// Depth packets have arrived it returns false (nothing to play yet).
func (b *Buffer) Pop() (Frame, bool) {
	if !b.started {
		if b.count < b.cfg.Depth {
			return Frame{}, false
		}
		b.started = true
		// Start at the oldest buffered packet.
		for !b.slots[b.next&b.mask].full {
			b.next++
		}
	}
	if b.count == 0 {
		b.stats.Underruns++
		return Frame{Seq: b.next, Underrun: true}, true
	}
	s := &b.slots[b.next&b.mask]
	seq := b.next
	b.next++
	if !s.full {
		b.stats.Lost++
		return Frame{Seq: seq, Lost: true}, true
	}
	s.full = false
	b.count--
	b.stats.Played++
	b.out = append(b.out[:0], s.payload...)
	return Frame{Payload: b.out, Seq: seq, Timestamp: s.ts, Marker: s.marker}, true
}

// Drain plays out everything still buffered, in order, with missing
// frames between them as Lost (for the end of a recording).
func (b *Buffer) Drain(f func(Frame)) {
	b.started = true
	for b.count > 0 {
		fr, _ := b.Pop()
		f(fr)
	}
}
