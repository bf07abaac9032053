package qemu

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The measured rate must be near the kernel's own "cpu MHz" on hosts whose
// TSC is constant (all x86-64 hosts QEMU runs on in practice).
func TestHostTSCkHz(t *testing.T) {
	khz := hostTSCkHz()
	if khz < 100_000 || khz > 10_000_000 {
		t.Fatalf("host TSC %d kHz: implausible", khz)
	}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			break
		}
		t.Logf("measured %d kHz, cpuinfo %.0f kHz", khz, mhz*1000)
		return
	}
}
