package siptest

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// leakWait bounds how long CheckGoroutines waits for goroutines to end: a
// hang, not a performance limit (a cold machine may be slow to unwind).
const leakWait = 30 * time.Second

// CheckGoroutines fails tb if goroutines started after this call are still
// running when tb ends. Call it first in the test: its check is a cleanup
// registered before the others, so it runs after them (cleanups run last
// registered first), once the test's servers are closed. It waits up to
// leakWait for them to end and reports each survivor's stack. Goroutines
// are told apart by id, so ones that were running before are never
// blamed, and the check needs no goleak dependency.
func CheckGoroutines(tb testing.TB) {
	tb.Helper()
	before := goroutineStacks()
	tb.Cleanup(func() {
		var left map[string]string
		for deadline := time.Now().Add(leakWait); ; time.Sleep(10 * time.Millisecond) {
			left = map[string]string{}
			for id, st := range goroutineStacks() {
				if _, ok := before[id]; !ok && !ignoredGoroutine(st) {
					left[id] = st
				}
			}
			if len(left) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(left) > 0 {
			var b strings.Builder
			for _, st := range left {
				b.WriteString(st)
				b.WriteString("\n\n")
			}
			tb.Errorf("%d goroutines started by the test still run after it:\n%s", len(left), b.String())
		}
	})
}

// ignoredGoroutine: the check's own goroutine and the testing package's.
func ignoredGoroutine(stack string) bool {
	return strings.Contains(stack, "siptest.goroutineStacks") ||
		strings.Contains(stack, "testing.(*T).Run") || strings.Contains(stack, "testing.tRunner") ||
		strings.Contains(stack, "testing.runCleanup")
}

// goroutineStacks returns every goroutine's stack by its id.
func goroutineStacks() map[string]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	out := map[string]string{}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		head, _, _ := bytes.Cut(g, []byte("\n"))
		// "goroutine 42 [running]:"
		f := strings.Fields(string(head))
		if len(f) >= 2 && f[0] == "goroutine" {
			out[f[1]] = string(g)
		}
	}
	return out
}
