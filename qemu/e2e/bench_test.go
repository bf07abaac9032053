package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu"
)

var (
	tLine     = regexp.MustCompile(`t=([0-9]+)ms`)
	statsLine = regexp.MustCompile(`pid1_rss_kib=(-?[0-9]+) edgepbxd_rss_kib=(-?[0-9]+)`)
)

// msOf parses init's "t=<ms>ms" from a console line.
func msOf(tb testing.TB, line string) float64 {
	m := tLine.FindStringSubmatch(line)
	if m == nil {
		tb.Fatalf("no t=…ms in %q", line)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkBootToReady boots qemu-x86_64 under TCG five times per iteration
// and reports medians: wall time from QEMU start to "edgepbx: ready", init's
// own times to firewall installed and edgepbxd ready, and the image sizes.
// Run: go test ./qemu/e2e -run '^$' -bench BootToReady -benchtime 1x -v
func BenchmarkBootToReady(b *testing.B) {
	require(b, "qemu-system-x86_64", "mkfs.ext4")
	img := buildImage(b, "qemu-x86_64")
	const boots = 5
	var wall, fw, ready, rss1, rssd []float64
	b.ResetTimer()
	for range b.N {
		for i := range boots {
			disk := filepath.Join(b.TempDir(), "data.img")
			if _, err := qemu.EnsureDataDisk(context.Background(), disk, 256<<20); err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
			vm, err := qemu.Boot(ctx, img, qemu.WithDataDisk(disk))
			if err != nil {
				cancel()
				b.Fatal(err)
			}
			l1, err := vm.WaitLine(ctx, "edgepbx: firewall installed")
			if err != nil {
				b.Fatal(err)
			}
			l2, err := vm.WaitLine(ctx, "edgepbx: edgepbxd ready")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := vm.WaitLine(ctx, "edgepbx: ready"); err != nil {
				b.Fatal(err)
			}
			wall = append(wall, time.Since(vm.Started()).Seconds())
			// Memory after ready, from the test hook (images built for tests only).
			if err := vm.SendLine("edgepbx-test: stats"); err != nil {
				b.Fatal(err)
			}
			sl, err := vm.WaitLine(ctx, "edgepbx: stats")
			if err != nil {
				b.Fatal(err)
			}
			if m := statsLine.FindStringSubmatch(sl); m != nil {
				a, _ := strconv.ParseFloat(m[1], 64)
				d, _ := strconv.ParseFloat(m[2], 64)
				rss1, rssd = append(rss1, a/1024), append(rssd, d/1024)
			} else {
				b.Fatalf("unparsable stats line %q", sl)
			}
			fw = append(fw, msOf(b, l1))
			ready = append(ready, msOf(b, l2))
			b.Logf("boot %d: ready %.2fs, firewall t=%.0fms, edgepbxd ready t=%.0fms", i+1, wall[len(wall)-1], fw[len(fw)-1], ready[len(ready)-1])
			if err := vm.Powerdown(ctx); err != nil {
				b.Error(err)
			}
			vm.Kill()
			cancel()
		}
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(median(wall), "s-to-ready")
	b.ReportMetric(median(fw), "ms-firewall")
	b.ReportMetric(median(ready), "ms-edgepbxd")
	b.ReportMetric(median(rss1), "MiB-rss-pid1")
	b.ReportMetric(median(rssd), "MiB-rss-edgepbxd")
	for name, path := range map[string]string{"MiB-initramfs": img.Initramfs, "MiB-kernel": img.Kernel} {
		if fi, err := os.Stat(path); err == nil {
			b.ReportMetric(float64(fi.Size())/(1<<20), name)
		}
	}
}
