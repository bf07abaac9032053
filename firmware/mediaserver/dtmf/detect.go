package dtmf

import (
	"fmt"
	"math"
	"time"
)

// The DTMF frequency grid (ITU-T Q.23): a digit is one row (low group)
// tone plus one column (high group) tone.
var (
	rowFreqs = [4]float64{697, 770, 852, 941}
	colFreqs = [4]float64{1209, 1336, 1477, 1633}
	keypad   = [4][4]rune{
		{'1', '2', '3', 'A'},
		{'4', '5', '6', 'B'},
		{'7', '8', '9', 'C'},
		{'*', '0', '#', 'D'},
	}
)

// Detector thresholds. They follow Q.24's spirit: a tone pair must carry
// most of the block's energy, each tone must be loud enough, the two may
// differ by a bounded twist, and a digit must persist for two blocks.
const (
	minToneRMS    = 120.0 // per tone, 16-bit scale: about -48 dBFS
	minPairShare  = 0.70  // row+col energy share of the block
	maxFwdTwistDB = 8.0   // column louder than row
	maxRevTwistDB = 8.0   // row louder than column
	minRelPeakDB  = 8.0   // strongest tone vs the next in its group
	confirmBlocks = 2     // blocks in a row for a digit (min ~50 ms)
	releaseBlocks = 2     // blocks without it to end a digit
)

// Detector finds in-band DTMF in a PCM stream with the Goertzel algorithm,
// for peers that neither negotiate telephone-event nor send INFO. One per
// leg; not safe for concurrent use.
type Detector struct {
	rate  int
	n     int        // block length in samples
	coeff [8]float64 // Goertzel 2cos(w) for rows then columns
	block []float64  // current block
	cur   rune       // candidate digit of the last blocks
	count int        // blocks the candidate has lasted
	miss  int        // blocks without the reported digit
	on    rune       // reported digit, 0 when none
	onLen int        // blocks the reported digit has lasted
}

// NewDetector returns a detector for 8000 or 16000 Hz PCM. The block is
// 25.6 ms (205 samples at 8 kHz, the classic choice: its bins fall close to
// all eight frequencies), so a digit is confirmed after ~51 ms.
func NewDetector(sampleRate int) (*Detector, error) {
	if sampleRate != 8000 && sampleRate != 16000 {
		return nil, fmt.Errorf("dtmf: detector for %d Hz: only 8000 and 16000", sampleRate)
	}
	d := &Detector{rate: sampleRate, n: 205 * sampleRate / 8000}
	for i, f := range append(rowFreqs[:], colFreqs[:]...) {
		d.coeff[i] = 2 * math.Cos(2*math.Pi*f/float64(sampleRate))
	}
	d.block = make([]float64, 0, d.n)
	return d, nil
}

// Process consumes PCM and appends a report for each digit start and end
// it finds to dst.
func (d *Detector) Process(dst []Report, pcm []int16) []Report {
	for _, s := range pcm {
		d.block = append(d.block, float64(s))
		if len(d.block) == d.n {
			dst = d.step(dst, d.classify())
			d.block = d.block[:0]
		}
	}
	return dst
}

func (d *Detector) blockDur(blocks int) time.Duration {
	return time.Duration(blocks*d.n) * time.Second / time.Duration(d.rate)
}

func (d *Detector) step(dst []Report, digit rune) []Report {
	if digit == d.cur {
		d.count++
	} else {
		d.cur, d.count = digit, 1
	}
	if d.on != 0 {
		if digit == d.on {
			d.miss = 0
			d.onLen++
			return dst
		}
		d.miss++
		if d.miss < releaseBlocks {
			return dst
		}
		code, _ := Code(d.on)
		dst = append(dst, Report{Digit: d.on, Code: code, End: true, Duration: d.blockDur(d.onLen)})
		d.on, d.miss = 0, 0
	}
	if digit != 0 && d.count >= confirmBlocks {
		d.on, d.onLen, d.miss = digit, d.count, 0
		code, _ := Code(digit)
		dst = append(dst, Report{Digit: digit, Code: code, Begin: true, Duration: d.blockDur(d.count)})
	}
	return dst
}

// classify returns the digit present in the current block, or 0.
func (d *Detector) classify() rune {
	var total float64
	for _, x := range d.block {
		total += x * x
	}
	n := float64(d.n)
	// A tone of amplitude A gives total N*A²/2; demand both tones' minimum.
	if total < n*minToneRMS*minToneRMS {
		return 0
	}
	var pow [8]float64
	for i, c := range d.coeff {
		var s1, s2 float64
		for _, x := range d.block {
			s0 := x + c*s1 - s2
			s2, s1 = s1, s0
		}
		// |X|² of the bin, scaled so a tone of amplitude A gives N*A²/2
		// (the same unit as total).
		pow[i] = (s1*s1 + s2*s2 - c*s1*s2) * 2 / n
	}
	r, rNext := peak(pow[:4])
	c, cNext := peak(pow[4:])
	pr, pc := pow[r], pow[4+c]
	if pr < n*minToneRMS*minToneRMS/2 || pc < n*minToneRMS*minToneRMS/2 {
		return 0
	}
	if (pr+pc)/total < minPairShare {
		return 0
	}
	if db(pc/pr) > maxFwdTwistDB || db(pr/pc) > maxRevTwistDB {
		return 0
	}
	if db(pr/rNext) < minRelPeakDB || db(pc/cNext) < minRelPeakDB {
		return 0
	}
	return keypad[r][c]
}

// peak returns the index of the largest value and the second largest
// value (floored to avoid dividing by zero).
func peak(p []float64) (int, float64) {
	best := 0
	for i := range p {
		if p[i] > p[best] {
			best = i
		}
	}
	next := 1e-9
	for i := range p {
		if i != best && p[i] > next {
			next = p[i]
		}
	}
	return best, next
}

func db(ratio float64) float64 { return 10 * math.Log10(ratio) }

// Tone appends samples of the DTMF tone pair of digit (each tone at
// amplitude amp) at sampleRate to dst, continuing the phase from sample
// offset start; for in-band sending and tests.
func Tone(dst []int16, digit rune, sampleRate, start, samples int, amp float64) ([]int16, error) {
	for r := range keypad {
		for c := range keypad[r] {
			if keypad[r][c] != upper(digit) {
				continue
			}
			wr := 2 * math.Pi * rowFreqs[r] / float64(sampleRate)
			wc := 2 * math.Pi * colFreqs[c] / float64(sampleRate)
			for i := start; i < start+samples; i++ {
				v := amp * (math.Sin(wr*float64(i)) + math.Sin(wc*float64(i)))
				dst = append(dst, int16(max(-32768, min(32767, v))))
			}
			return dst, nil
		}
	}
	return dst, fmt.Errorf("dtmf: %q is not a DTMF digit", digit)
}
