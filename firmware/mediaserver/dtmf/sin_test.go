package dtmf

import "math"

func sinAt(f float64, i, rate int) float64 {
	return math.Sin(2 * math.Pi * f * float64(i) / float64(rate))
}
