package qemu

import "time"

func rdtsc() uint64

// hostTSCkHz measures the host's TSC rate. Under TCG on an x86-64 host the
// guest's TSC is the host's, and the guest kernel calibrates it against the
// emulated PIT: on a busy host that calibration fails, the kernel marks the
// TSC unstable and, on microvm (no HPET, no PM timer), hangs. Telling the
// guest the rate (tsc_early_khz) removes that dependence on host load.
func hostTSCkHz() int {
	best := 0.0
	for range 3 {
		t0, c0 := time.Now(), rdtsc()
		time.Sleep(15 * time.Millisecond)
		c1, t1 := rdtsc(), time.Now()
		khz := float64(c1-c0) / float64(t1.Sub(t0).Microseconds()) * 1000
		// Preemption between the two reads only lengthens the time span, so
		// the highest sample is the closest.
		best = max(best, khz)
	}
	return int(best + 0.5)
}
