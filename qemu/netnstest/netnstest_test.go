package netnstest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnavailableRule runs a test that lacks a tool in a child process of
// this test binary, with and without CI: outside CI it must skip and say
// why, under CI it must fail, so a CI run never passes by skipping.
func TestUnavailableRule(t *testing.T) {
	if os.Getenv("NETNSTEST_CHILD") != "" {
		t.Skip("child only")
	}
	for _, tt := range []struct {
		ci       string
		wantFail bool
		want     string
	}{
		{ci: "", wantFail: false, want: "--- SKIP: TestNeedToolChild"},
		{ci: "true", wantFail: true, want: "--- FAIL: TestNeedToolChild"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestNeedToolChild$", "-test.v")
		cmd.Env = append(os.Environ(), "NETNSTEST_CHILD=1", "CI="+tt.ci)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tt.wantFail {
			t.Errorf("CI=%q: failed=%v, want %v\n%s", tt.ci, failed, tt.wantFail, out)
		}
		reason := "needs edgepbx-no-such-tool (Debian package edgepbx-none)"
		if !strings.Contains(string(out), tt.want) || !strings.Contains(string(out), reason) {
			t.Errorf("CI=%q: output lacks %q with the reason %q:\n%s", tt.ci, tt.want, reason, out)
		}
	}
}

// TestNeedToolChild is TestUnavailableRule's child; run alone it does
// nothing.
func TestNeedToolChild(t *testing.T) {
	if os.Getenv("NETNSTEST_CHILD") == "" {
		return
	}
	NeedTool(t, "edgepbx-no-such-tool", "edgepbx-none")
	t.Error("NeedTool returned for a missing tool")
}
