package dmi

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Paths relative to the root of /sys and /proc for the hardware
// fingerprint and the load figures.
const (
	dmiDir      = "sys/class/dmi/id"
	netDir      = "sys/class/net"
	procStat    = "proc/stat"
	procMeminfo = "proc/meminfo"
	maxDMIValue = 256
)

// dmiIDFields are the DMI entries that name the hardware model (and the
// product UUID where the firmware fills it in).
var dmiIDFields = []string{"sys_vendor", "product_name", "board_vendor", "board_name", "product_uuid"}

// HardwareIDs lists what identifies the hardware under root ("/" on the
// box) and survives a reinstall but not a disk copied into another box:
// the DMI model names and product UUID, and the MACs of physical NICs, as
// "key=value" strings in a stable order. A container has none of them.
func HardwareIDs(root string) []string {
	ifs, _ := net.Interfaces()
	return hardwareIDs(root, ifs)
}

func hardwareIDs(root string, ifs []net.Interface) []string {
	var parts []string
	for _, f := range dmiIDFields {
		if raw, err := os.ReadFile(filepath.Join(root, dmiDir, f)); err == nil && len(raw) <= maxDMIValue {
			if v := strings.TrimSpace(string(raw)); v != "" {
				parts = append(parts, f+"="+v)
			}
		}
	}
	var macs []string
	for _, i := range ifs {
		// Only NICs with a device behind them: veths, bridges and tunnels
		// come and go.
		if _, err := os.Stat(filepath.Join(root, netDir, i.Name, "device")); err == nil && len(i.HardwareAddr) > 0 {
			macs = append(macs, "mac="+i.HardwareAddr.String())
		}
	}
	slices.Sort(macs)
	return append(parts, macs...)
}

// cpuTimes reads the busy and total CPU time since boot from proc/stat
// under root (idle and iowait count as not busy), in clock ticks.
func cpuTimes(root string) (busy, all uint64, ok bool) {
	f, err := os.Open(filepath.Join(root, procStat))
	if err != nil {
		return 0, 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0, 0, false
	}
	fields := strings.Fields(sc.Text())
	if len(fields) < 8 || fields[0] != "cpu" {
		return 0, 0, false
	}
	for i, v := range fields[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		if i >= 8 {
			break // guest time is already in user and nice
		}
		all += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, all, all > 0
}

// CPUMeter measures the share of CPU time spent busy between readings.
type CPUMeter struct {
	root string

	mu        sync.Mutex
	busy, all uint64 // at the previous reading; all == 0: none yet
}

// NewCPUMeter reads proc/stat under root ("/" on the box).
func NewCPUMeter(root string) *CPUMeter { return &CPUMeter{root: root} }

// Percent is the busy share (0-100) since the previous call. The first
// call has no baseline (the average since boot would be the boot itself)
// and reports ok false, as does an unreadable or inconsistent proc/stat.
func (m *CPUMeter) Percent() (pct int, ok bool) {
	busy, all, read := cpuTimes(m.root)
	if !read {
		return 0, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.all != 0 && all > m.all && busy >= m.busy {
		pct, ok = min(100, int((busy-m.busy)*100/(all-m.all))), true
	}
	m.busy, m.all = busy, all
	return pct, ok
}

// MemInfo returns MemTotal and MemAvailable in KiB from proc/meminfo under
// root; zeros when it cannot be read.
func MemInfo(root string) (total, avail int64) {
	f, err := os.Open(filepath.Join(root, procMeminfo))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "MemTotal":
			total = n
		case "MemAvailable":
			avail = n
		}
	}
	return total, avail
}
