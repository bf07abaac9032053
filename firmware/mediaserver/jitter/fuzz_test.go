package jitter

import (
	"encoding/binary"
	"testing"
)

// FuzzBuffer: any sequence of pushes and pops (3 bytes per op: seq and a
// length/op byte) keeps the buffer bounded, plays every accepted packet at
// most once and in sequence order between resyncs.
func FuzzBuffer(f *testing.F) {
	f.Add([]byte{0, 1, 4, 0, 2, 4, 0, 3, 0xff, 0, 4, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		b, err := New(Config{Depth: 2, Capacity: 8, MaxPayload: 16})
		if err != nil {
			t.Fatal(err)
		}
		var last uint16
		played := false
		resyncs := uint64(0)
		check := func(fr Frame) {
			if s := b.Stats().Resyncs; s != resyncs {
				resyncs, played = s, false
			}
			if fr.Underrun {
				return
			}
			if played && fr.Seq != last+1 {
				if b.Stats().Skipped == 0 && b.Stats().Lost == 0 {
					t.Fatalf("played %d after %d", fr.Seq, last)
				}
			}
			last, played = fr.Seq, true
		}
		for len(ops) >= 3 {
			seq := binary.BigEndian.Uint16(ops)
			op := ops[2]
			ops = ops[3:]
			if op == 0xff {
				if fr, ok := b.Pop(); ok {
					check(fr)
				}
				continue
			}
			b.Push(seq, uint32(seq)*160, false, make([]byte, int(op)%20))
			if b.Len() > 8 {
				t.Fatalf("%d buffered, capacity 8", b.Len())
			}
		}
		b.Drain(check)
		s := b.Stats()
		if s.Played+s.Skipped != s.Received {
			t.Fatalf("received %d, played %d, skipped %d", s.Received, s.Played, s.Skipped)
		}
	})
}
