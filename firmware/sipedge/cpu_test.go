package sipedge

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clockTick is USER_HZ, the unit of utime/stime in /proc/<pid>/stat; it is
// 100 on every Linux architecture we build for.
const clockTick = 10 * time.Millisecond

// procCPU returns utime+stime of process pid from /proc/<pid>/stat.
func procCPU(pid string) (time.Duration, int, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	if err != nil {
		return 0, 0, false
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:])
	// After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15).
	if len(f) < 13 {
		return 0, 0, false
	}
	pgrp, _ := strconv.Atoi(string(f[2]))
	ut, _ := strconv.ParseInt(string(f[11]), 10, 64)
	st, _ := strconv.ParseInt(string(f[12]), 10, 64)
	return time.Duration(ut+st) * clockTick, pgrp, true
}

// selfCPU is the CPU time of this test process (the edge runs in it; sipp
// is a child process and is not counted until waited for).
func selfCPU(t testing.TB) time.Duration {
	d, _, ok := procCPU("self")
	if !ok {
		t.Fatal("read /proc/self/stat")
	}
	return d
}

// groupCPU sums the CPU time of the live processes in process group pgid
// (Kamailio's main process and its forked workers).
func groupCPU(t testing.TB, pgid int) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var sum time.Duration
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if d, pg, ok := procCPU(e.Name()); ok && pg == pgid {
			sum += d
		}
	}
	return sum
}

// udpRcvbufErrors is the host's count of UDP datagrams dropped for a full
// receive buffer (/proc/net/snmp). It is host-wide: a delta over one sipp
// run counts that run's drops at either end (plus anyone else's on the box).
func udpRcvbufErrors(t testing.TB) int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, n := range names {
			if n == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	t.Fatal("no Udp RcvbufErrors in /proc/net/snmp")
	return 0
}
