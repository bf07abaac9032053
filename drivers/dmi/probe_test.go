package dmi

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func write(t *testing.T, root, rel, data string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestHardwareIDs: DMI model names (blank and oversized values left out)
// and the MACs of NICs with a device behind them, sorted; virtual NICs and
// NICs without a MAC do not count.
func TestHardwareIDs(t *testing.T) {
	root := t.TempDir()
	write(t, root, "sys/class/dmi/id/sys_vendor", "Acme Corp\n")
	write(t, root, "sys/class/dmi/id/product_name", "PBX-4\n")
	write(t, root, "sys/class/dmi/id/board_vendor", "  \n")
	write(t, root, "sys/class/dmi/id/board_name", strings.Repeat("x", 300))
	write(t, root, "sys/class/net/eth1/device/vendor", "0x8086")
	write(t, root, "sys/class/net/eth0/device/vendor", "0x8086")
	write(t, root, "sys/class/net/nomac/device/vendor", "0x8086")
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	ifs := []net.Interface{
		{Name: "eth1", HardwareAddr: mac("52:54:00:00:00:02")},
		{Name: "eth0", HardwareAddr: mac("52:54:00:00:00:01")},
		{Name: "veth9", HardwareAddr: mac("52:54:00:00:00:09")},
		{Name: "nomac"},
		{Name: "lo"},
	}
	want := []string{"sys_vendor=Acme Corp", "product_name=PBX-4", "mac=52:54:00:00:00:01", "mac=52:54:00:00:00:02"}
	if got := hardwareIDs(root, ifs); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if got := hardwareIDs(t.TempDir(), nil); len(got) != 0 {
		t.Fatalf("empty root: %q", got)
	}
}

// TestCPUMeter: no figure on the first reading (no baseline) or from a
// malformed /proc/stat; then the busy share of the interval, idle and
// iowait not busy, guest time not counted twice.
func TestCPUMeter(t *testing.T) {
	root := t.TempDir()
	m := NewCPUMeter(root)
	if _, ok := m.Percent(); ok {
		t.Fatal("figure without /proc/stat")
	}
	//                 user nice system idle iowait irq softirq steal guest guest_nice
	write(t, root, "proc/stat", "cpu  100 0 100 800 0 0 0 0 50 0\ncpu0 1 1 1 1 1 1 1 1\n")
	if _, ok := m.Percent(); ok {
		t.Fatal("figure on the first reading")
	}
	write(t, root, "proc/stat", "cpu  250 0 100 850 0 0 0 0 500 0\n")
	if p, ok := m.Percent(); !ok || p != 75 {
		t.Fatalf("interval: %d %v, want 75", p, ok)
	}
	write(t, root, "proc/stat", "cpu  250 0 100 950 100 0 0 0 0 0\n")
	if p, ok := m.Percent(); !ok || p != 0 {
		t.Fatalf("idle and iowait interval: %d %v, want 0", p, ok)
	}
	for _, bad := range []string{"", "intr 1 2 3\n", "cpu 1 2 x 4 5 6 7\n", "cpu 1 2\n"} {
		write(t, root, "proc/stat", bad)
		if _, ok := m.Percent(); ok {
			t.Fatalf("figure from %q", bad)
		}
	}
	write(t, root, "proc/stat", "cpu  100 0 100 800 0 0 0 0\n") // counters went back
	if _, ok := m.Percent(); ok {
		t.Fatal("figure from counters that went back")
	}
}

func TestMemInfo(t *testing.T) {
	root := t.TempDir()
	if total, avail := MemInfo(root); total != 0 || avail != 0 {
		t.Fatalf("without meminfo: %d %d", total, avail)
	}
	write(t, root, "proc/meminfo", "MemTotal:        2048000 kB\nMemFree:  10 kB\nMemAvailable:    1024000 kB\nbogus line\n")
	if total, avail := MemInfo(root); total != 2048000 || avail != 1024000 {
		t.Fatalf("got %d %d", total, avail)
	}
}

func FuzzProcStat(f *testing.F) {
	f.Add("cpu  100 0 100 800 0 0 0 0 50 0\n")
	f.Add("cpu 1 2 3 4 5 6 7\n")
	f.Fuzz(func(t *testing.T, stat string) {
		root := t.TempDir()
		write(t, root, "proc/stat", stat)
		m := NewCPUMeter(root)
		m.Percent()
		if p, ok := m.Percent(); ok && (p < 0 || p > 100) {
			t.Fatalf("percent %d", p)
		}
		write(t, root, "proc/meminfo", stat)
		MemInfo(root)
	})
}
