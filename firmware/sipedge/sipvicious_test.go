package sipedge

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

func sipvicious(t *testing.T, tool string, args ...string) string {
	t.Helper()
	bin := netnstest.NeedTool(t, tool, "sipvicious")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+cmd.Dir) // sipvicious keeps sessions in ~/.sipvicious
	out, _ := cmd.CombinedOutput()                  // exit status says nothing useful
	if ctx.Err() != nil {
		t.Fatalf("%s did not finish:\n%s", tool, out)
	}
	return string(out)
}

// TestSvwarScannerDropped: svwar announces itself as friendly-scanner; it
// gets no answer at all and finds nothing.
func TestSvwarScannerDropped(t *testing.T) {
	s := startServer(t, nil)
	out := sipvicious(t, "svwar", "-e100-110", "-p", strconv.Itoa(s.udp.Port), "-b", "127.0.0.12", "-t", "0.05", "--maximumtime=3", "127.0.0.1")
	if strings.Contains(out, "| 101 ") || strings.Contains(out, "reqauth") {
		t.Fatalf("svwar found an extension:\n%s", out)
	}
	if s.filter.Counters.Scanner.Load() == 0 {
		t.Fatalf("no scanner drops counted; svwar said:\n%s", out)
	}
}

// TestSvwarEnumerationFails: even with the User-Agent filter off, svwar's
// known/unknown comparison finds nothing because the answers are identical.
func TestSvwarEnumerationFails(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.ScannerUserAgents = nil })
	out := sipvicious(t, "svwar", "-e100-110", "-p", strconv.Itoa(s.udp.Port), "-b", "127.0.0.13", "-t", "0.05", "--maximumtime=3", "127.0.0.1")
	if strings.Contains(out, "| 101 ") || strings.Contains(out, "| 102 ") {
		t.Fatalf("svwar enumerated extensions:\n%s", out)
	}
	t.Logf("svwar:\n%s", out)
	if s.filter.Counters.Passed.Load() == 0 {
		t.Fatalf("svwar's requests never reached the server:\n%s", out)
	}
}

// TestSvcrackThrottled: svcrack with the right password fourth in its
// dictionary is throttled for the extension after three failures (403,
// whatever it tries next) and never learns it; it is not banned (one
// extension tried: it could be a phone with a wrong password).
// (svcrack 0.3.3 --reusenonce crashes on a KeyError before sending anything,
// so nonce reuse is covered by TestNonceReplayRejected.)
func TestSvcrackThrottled(t *testing.T) {
	// svcrack understands one MD5 challenge only.
	s := startServer(t, func(c *pbxconfig.SIP) { c.ScannerUserAgents = nil; c.Algorithms = []string{AlgMD5} })
	dict := filepath.Join(t.TempDir(), "dict.txt")
	os.WriteFile(dict, []byte("1234\npassword\n101\n"+testPassword+"\nqwerty\n"), 0o600)
	out := sipvicious(t, "svcrack", "-u", "101", "-d", dict, "-p", strconv.Itoa(s.udp.Port),
		"-b", "127.0.0.14", "-t", "0.05", "--maximumtime=3", "127.0.0.1")
	if strings.Contains(out, testPassword) {
		t.Fatalf("svcrack found the password:\n%s", out)
	}
	// svcrack 0.3.3 ignores -b for its source address: any loopback /32.
	th := s.guard.Throttles(time.Now())
	if len(th) != 1 || th[0].User != "101" || !th[0].Source.Addr().IsLoopback() || th[0].Source.Bits() != 32 {
		t.Fatalf("svcrack not throttled (%+v); it said:\n%s", th, out)
	}
	if c := s.Counters(); c["auth_ok"] != 0 || c["guard_throttled"] == 0 {
		t.Fatalf("counters %v", c)
	}
}
