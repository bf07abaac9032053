package baresiptest

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestToneBlocks: the audio check tells the sent tone from another tone,
// noise (what undecrypted or corrupted PCMU sounds like), silence, and a
// tone with every other frame lost or garbled.
func TestToneBlocks(t *testing.T) {
	const n = 3 * 8000
	sine := func(f float64) []int16 {
		x := make([]int16, n)
		for i := range x {
			x[i] = int16(10000 * math.Sin(2*math.Pi*f*float64(i)/8000))
		}
		return x
	}
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(x []int16, from, every int) []int16 { // garble 20 ms frames
		y := slices.Clone(x)
		for f := from; f*160 < len(y); f += every {
			for i := f * 160; i < min((f+1)*160, len(y)); i++ {
				y[i] = int16(rng.IntN(30000) - 15000)
			}
		}
		return y
	}
	sent := PCM{Rate: 8000, Samples: sine(440)}
	cases := []struct {
		name    string
		got     []int16
		minGood int // of 25 blocks
		maxGood int
	}{
		{"the tone", sine(440), 25, 25},
		{"quieter by half", func() []int16 {
			x := sine(440)
			for i := range x {
				x[i] /= 2
			}
			return x
		}(), 0, 0},
		{"another tone", sine(1000), 0, 0},
		{"noise", noise(make([]int16, n), 0, 1), 0, 0},
		{"silence", make([]int16, n), 0, 0},
		{"every other frame garbled", noise(sine(440), 0, 2), 0, 0},
		{"one frame in ten garbled", noise(sine(440), 3, 10), 0, 13}, // every other block holds one
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good, total, _, _, err := ToneBlocks(PCM{Rate: 8000, Samples: tc.got}, sent, 440)
			if err != nil {
				t.Fatal(err)
			}
			if total != 25 || good < tc.minGood || good > tc.maxGood {
				t.Fatalf("%d of %d blocks good, want %d..%d", good, total, tc.minGood, tc.maxGood)
			}
		})
	}
}
