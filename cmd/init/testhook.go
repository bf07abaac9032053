//go:build testhook

package main

import (
	"bufio"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/init/shutdown"
	"github.com/edgepbx/edgepbx/init/update"
)

// Test hook commands, read as lines from /dev/console. Only images built
// for tests (-tags testhook) contain this file.
const (
	hookKill     = "edgepbx-test: kill edgepbxd"
	hookPoweroff = "edgepbx-test: poweroff"
	hookStats    = "edgepbx-test: stats"
)

// rssKiB reads VmRSS from /proc/<pid>/status; -1 when unknown.
func rssKiB(pid string) int {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// netRevertAfter lets a test image shorten the network confirmation
// window with edgepbx.test.netrevert=DURATION (5 s–120 s) on the kernel
// command line, so the QEMU test of a revert need not wait 120 s.
func netRevertAfter(b *box) time.Duration {
	cl, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return netconf.DefaultRevertAfter
	}
	for _, f := range strings.Fields(string(cl)) {
		if v, ok := strings.CutPrefix(f, "edgepbx.test.netrevert="); ok {
			d, err := time.ParseDuration(v)
			if err == nil && d >= 5*time.Second && d <= netconf.DefaultRevertAfter {
				b.log.Warn("TEST BUILD: network revert window shortened", "after", d)
				return d
			}
		}
	}
	return netconf.DefaultRevertAfter
}

// trialTimes lets a test image shorten a trial boot with
// edgepbx.test.trial=HEALTHYFOR/DEADLINE (e.g. 20s/3m; each 5 s–the
// default) on the kernel command line, so the QEMU update test need not
// wait 5 minutes for the commit.
func trialTimes(b *box) (healthyFor, deadline time.Duration) {
	cl, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return update.DefaultHealthyFor, update.DefaultTrialDeadline
	}
	fields := strings.Fields(string(cl))
	slices.Reverse(fields) // the last one given wins, as for the kernel's own parameters
	for _, f := range fields {
		v, ok := strings.CutPrefix(f, "edgepbx.test.trial=")
		if !ok {
			continue
		}
		h, d, _ := strings.Cut(v, "/")
		hf, err1 := time.ParseDuration(h)
		dl, err2 := time.ParseDuration(d)
		if err1 == nil && err2 == nil && hf >= 5*time.Second && hf <= update.DefaultHealthyFor &&
			dl > hf && dl <= update.DefaultTrialDeadline {
			b.log.Warn("TEST BUILD: trial boot shortened", "healthy_for", hf, "deadline", dl)
			return hf, dl
		}
	}
	return update.DefaultHealthyFor, update.DefaultTrialDeadline
}

// testDaemonArgs lets a test image start an edgepbxd that never becomes
// ready: with edgepbx.test.nosip on the kernel command line its SIP
// listener is put on an address the box does not have (TEST-NET-1), so
// it fails to listen and is restarted, again and again. The update test
// signs such an image to prove a trial that never gets healthy rolls back.
func testDaemonArgs(b *box) []string {
	cl, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return nil
	}
	if slices.Contains(strings.Fields(string(cl)), "edgepbx.test.nosip") {
		b.log.Warn("TEST BUILD: edgepbxd's SIP listener on an address the box does not have")
		return []string{"--sip", "192.0.2.1:5060"}
	}
	return nil
}

// hangWhenReady lets a test image hang: with edgepbx.test.hang on the
// kernel command line, edgepbxd is stopped (SIGSTOP) as soon as it first
// reports ready. Its health reports stop, PID 1 stops petting the
// watchdog and the hardware resets the box: the update test signs such an
// image to prove a trial that hangs rolls back by itself.
func hangWhenReady(b *box) {
	cl, err := os.ReadFile("/proc/cmdline")
	if err != nil || !slices.Contains(strings.Fields(string(cl)), "edgepbx.test.hang") {
		return
	}
	b.log.Warn("TEST BUILD: edgepbxd will hang once ready (edgepbx.test.hang)")
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-b.ctx.Done():
				return
			case <-tick.C:
			}
			if h, _, seen := b.health.snapshot(); !seen || !h.Ready {
				continue
			}
			err := b.sup.Signal(daemonName, syscall.SIGSTOP)
			b.say("TEST BUILD: edgepbxd hung once ready (err %v)", err)
			return
		}
	}()
}

func startTestHook(b *box) {
	hangWhenReady(b)
	f, err := os.OpenFile("/dev/console", os.O_RDONLY|syscall.O_NOCTTY, 0)
	if err != nil {
		b.log.Warn("test hook: console", "err", err)
		return
	}
	b.log.Warn("TEST BUILD: console test hook enabled")
	// Lines that are not hook commands go to the console confirmations
	// (factory reset from the kernel command line).
	other := make(chan string, 8)
	b.consoleIn = other
	go func() {
		r := bufio.NewReaderSize(f, 256)
		for {
			line, err := r.ReadSlice('\n')
			if err == bufio.ErrBufferFull {
				continue // an overlong line is skipped piece by piece
			}
			if err != nil {
				b.log.Warn("test hook: console closed", "err", err)
				return
			}
			switch l := strings.TrimSpace(string(line)); l {
			case hookKill:
				err := b.sup.Signal(daemonName, syscall.SIGKILL)
				b.log.Info("test hook: killed edgepbxd", "err", err)
			case hookPoweroff:
				b.request(shutdown.Poweroff)
			case hookStats:
				daemon := -1
				if st, ok := b.sup.Status(daemonName); ok && st.Running {
					daemon = rssKiB(strconv.Itoa(st.Pid))
				}
				b.say("stats pid1_rss_kib=%d edgepbxd_rss_kib=%d", rssKiB("self"), daemon)
			default:
				if slotHook(b, l) {
					continue
				}
				select {
				case other <- l:
				default:
				}
			}
		}
	}()
}
