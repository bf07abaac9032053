package baresiptest

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// Sine is d seconds of a tone Hz sine at rate, mono 16-bit, at amplitude
// (of 32767): the audio a phone that plays files (linphonec in file mode)
// sends.
func Sine(tone, rate int, seconds float64, amplitude int16) PCM {
	w := PCM{Rate: rate, Samples: make([]int16, int(seconds*float64(rate)))}
	for i := range w.Samples {
		w.Samples[i] = int16(float64(amplitude) * math.Sin(2*math.Pi*float64(tone)*float64(i)/float64(rate)))
	}
	return w
}

// WriteWAV writes w as a mono 16-bit PCM RIFF/WAVE file.
func WriteWAV(path string, w PCM) error {
	data := 2 * len(w.Samples)
	b := make([]byte, 44+data)
	copy(b, "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+data))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(w.Rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(2*w.Rate))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(data))
	for i, s := range w.Samples {
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(s))
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
