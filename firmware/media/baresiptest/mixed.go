package baresiptest

import (
	"fmt"
	"strings"
	"testing"
)

// MixedBlocks counts the 100 ms blocks of got (a recording that mixes
// both directions of a call) in which every tone is present with at least
// a fifth of the block's energy and the tones together hold at least 90 %
// of it: both parties are in the recording, and nothing else is.
func MixedBlocks(got PCM, tones ...float64) (good, total int, bad []string) {
	blocks := steady(got)
	for i, b := range blocks {
		sum, ok := 0.0, rms(b) > 500
		var shares []string
		for _, f := range tones {
			s := goertzel(b, f, got.Rate)
			sum += s
			ok = ok && s >= 0.2
			shares = append(shares, fmt.Sprintf("%.0f Hz %.2f", f, s))
		}
		if ok && sum >= 0.9 {
			good++
		} else if len(bad) < 5 {
			bad = append(bad, fmt.Sprintf("block %d: %s, rms %.0f", i, strings.Join(shares, ", "), rms(b)))
		}
	}
	return good, len(blocks), bad
}

// CheckMixed requires at least min blocks and nearly all of them to carry
// every tone (MixedBlocks).
func CheckMixed(tb testing.TB, what string, got PCM, minBlocks int, tones ...float64) {
	tb.Helper()
	good, total, bad := MixedBlocks(got, tones...)
	tb.Logf("%s: %d of %d blocks carry all of %v Hz", what, good, total, tones)
	if total < minBlocks {
		tb.Fatalf("%s: %d blocks of audio, want at least %d", what, total, minBlocks)
	}
	if good < total*9/10 {
		tb.Fatalf("%s: only %d of %d blocks carry all tones: %s", what, good, total, strings.Join(bad, "; "))
	}
}
