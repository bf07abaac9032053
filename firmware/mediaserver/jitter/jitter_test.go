package jitter

import (
	"errors"
	"fmt"
	"slices"
	"testing"
)

func mustNew(t *testing.T, cfg Config) *Buffer {
	t.Helper()
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// play pushes the packets (seq values; payload = seq as text) interleaving
// one Pop after every push once started, then drains; it returns the play
// order as "seq" for played frames and "L" for lost.
func play(t *testing.T, b *Buffer, seqs []uint16) []string {
	t.Helper()
	var out []string
	rec := func(f Frame) {
		switch {
		case f.Lost:
			out = append(out, "L")
		case f.Underrun:
			out = append(out, "U")
		default:
			if string(f.Payload) != fmt.Sprint(f.Seq) || f.Timestamp != uint32(f.Seq)*160 {
				t.Fatalf("frame %d carries %q ts %d", f.Seq, f.Payload, f.Timestamp)
			}
			out = append(out, fmt.Sprint(f.Seq))
		}
	}
	for _, s := range seqs {
		b.Push(s, uint32(s)*160, false, []byte(fmt.Sprint(s)))
		if f, ok := b.Pop(); ok {
			rec(f)
		}
	}
	b.Drain(rec)
	return out
}

func strs(xs ...any) []string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func TestBuffer(t *testing.T) {
	cfg := Config{Depth: 3, Capacity: 8, MaxPayload: 16}
	cases := []struct {
		name  string
		in    []uint16
		want  []string
		stats Stats
	}{
		{"in order", []uint16{10, 11, 12, 13, 14}, strs(10, 11, 12, 13, 14),
			Stats{Received: 5, Played: 5}},
		{"reordered within depth", []uint16{10, 12, 11, 14, 13, 15}, strs(10, 11, 12, 13, 14, 15),
			Stats{Received: 6, Played: 6}},
		{"reordered before start", []uint16{11, 10, 12, 13}, strs(10, 11, 12, 13),
			Stats{Received: 4, Played: 4}},
		{"lost", []uint16{10, 11, 12, 14, 15, 16}, strs(10, 11, 12, "L", 14, 15, 16),
			Stats{Received: 6, Played: 6, Lost: 1}},
		{"late", []uint16{10, 11, 12, 13, 14, 15, 16, 11}, strs(10, 11, 12, 13, 14, 15, 16),
			Stats{Received: 7, Played: 7, Late: 1}},
		{"duplicate", []uint16{10, 11, 11, 12, 13}, strs(10, 11, 12, 13),
			Stats{Received: 4, Played: 4, Duplicates: 1}},
		{"wrap", []uint16{65534, 65535, 0, 1, 2}, strs(65534, 65535, 0, 1, 2),
			Stats{Received: 5, Played: 5}},
		{"far ahead skips the oldest", []uint16{10, 11, 12, 30}, strs(10, "L", "L", "L", "L", "L", "L", "L", 30),
			Stats{Received: 4, Played: 2, Skipped: 2, Lost: 10 + 7}},
		{"sequence restart", []uint16{10, 11, 12, 40000, 40001, 40002}, strs(10, 11, 40001, 40002),
			Stats{Received: 5, Played: 4, Skipped: 1, Resyncs: 1, Probation: 1}},
		{"stray packet", []uint16{10, 11, 12, 40000, 13, 14}, strs(10, 11, 12, 13, 14),
			Stats{Received: 5, Played: 5, Probation: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := mustNew(t, cfg)
			got := play(t, b, c.in)
			if !slices.Equal(got, c.want) {
				t.Errorf("played %v, want %v", got, c.want)
			}
			if b.Stats() != c.stats {
				t.Errorf("stats %+v, want %+v", b.Stats(), c.stats)
			}
			if b.Len() != 0 {
				t.Errorf("%d left after drain", b.Len())
			}
		})
	}
}

// A paused sender underruns without advancing: its next packet plays.
func TestUnderrunDoesNotLose(t *testing.T) {
	b := mustNew(t, Config{Depth: 1, Capacity: 4, MaxPayload: 8})
	b.Push(1, 160, false, []byte("1"))
	if f, _ := b.Pop(); f.Seq != 1 || f.Lost {
		t.Fatalf("%+v", f)
	}
	for range 10 {
		if f, ok := b.Pop(); !ok || !f.Underrun || f.Lost {
			t.Fatalf("%+v", f)
		}
	}
	if err := b.Push(2, 320, false, []byte("2")); err != nil {
		t.Fatal(err)
	}
	if f, _ := b.Pop(); f.Seq != 2 || string(f.Payload) != "2" {
		t.Fatalf("%+v", f)
	}
	if s := b.Stats(); s.Underruns != 10 || s.Lost != 0 || s.Late != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestRejects(t *testing.T) {
	b := mustNew(t, Config{Depth: 1, Capacity: 4, MaxPayload: 8})
	if err := b.Push(1, 0, false, make([]byte, 9)); !errors.Is(err, ErrRejected) || b.Stats().Oversize != 1 {
		t.Errorf("oversize: %v", err)
	}
	for _, cfg := range []Config{{}, {Depth: 4, Capacity: 2, MaxPayload: 1}, {Depth: 1, Capacity: 2000, MaxPayload: 1}, {Depth: 1, Capacity: 2}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("config %+v accepted", cfg)
		}
	}
}

func TestConcealer(t *testing.T) {
	var c Concealer
	if got := c.Lost(nil, 3); !slices.Equal(got, []int16{0, 0, 0}) {
		t.Errorf("no history: %v", got)
	}
	c.Good([]int16{100, -200, 300})
	if got := c.Lost(nil, 4); !slices.Equal(got, []int16{50, -100, 150, 50}) {
		t.Errorf("first loss: %v", got)
	}
	if got := c.Lost(nil, 3); !slices.Equal(got, []int16{0, 0, 0}) {
		t.Errorf("second loss: %v", got)
	}
}
