package siptest

import (
	"testing"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// NeedSipp returns sipp's path; when it is missing the test skips with the
// reason, or fails under CI (netnstest.NeedTool's rule).
func NeedSipp(tb testing.TB) string {
	tb.Helper()
	return netnstest.NeedTool(tb, "sipp", "sip-tester")
}
