package sipedge

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
)

// sippBuffer is sipp's socket buffer size. Its default (64 KiB) overflows
// when 500 answers arrive in a burst; every dropped answer then costs that
// call a 500 ms retransmission, and the measured rate becomes a count of
// drops at sipp rather than a property of the server under test.
const sippBuffer = 4 << 20

// runSipp runs a scenario against addr and fails on any failed call.
func runSipp(t testing.TB, scenario, addr string, calls, rate, limit int) time.Duration {
	t.Helper()
	took, _ := runSippCPU(t, scenario, addr, calls, rate, limit)
	return took
}

// runSippCPU is runSipp that also returns sipp's own CPU time: on two
// cores the load generator can be the bottleneck, for either server.
func runSippCPU(t testing.TB, scenario, addr string, calls, rate, limit int) (time.Duration, time.Duration) {
	t.Helper()
	dir := t.TempDir()
	sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", scenario))
	cmd := exec.Command(siptest.NeedSipp(t), "-sf", sc, "-i", "127.0.0.1", "-s", "101",
		"-au", "101", "-ap", testPassword, "-m", fmt.Sprint(calls), "-r", fmt.Sprint(rate),
		"-l", fmt.Sprint(limit), "-buff_size", fmt.Sprint(sippBuffer), "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err", addr)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		errs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		t.Fatalf("sipp %s: %v\n%s\nerror logs: %v", scenario, err, tail(out), errs)
	}
	return took, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func tail(b []byte) []byte {
	if len(b) > 3000 {
		return b[len(b)-3000:]
	}
	return b
}

// TestSippRegisterMD5: sipp's [authentication] only speaks MD5; the box is
// set to offer MD5 alone here. SHA-256 is covered with sipgo's client
// (TestSipgoClientSHA256) and our own raw client (TestRegisterDigest).
func TestSippRegisterMD5(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgMD5} })
	runSipp(t, "register.xml", s.udp.String(), 3, 10, 3)
	if n := s.log.Recent(100); len(n) < 6 {
		t.Fatalf("want 3 registers and 3 unregisters logged, got %d events", len(n))
	}
	if b := s.Location().Lookup(s.now(), "101"); len(b) != 0 {
		t.Fatalf("sipp unregistered, bindings left: %+v", b)
	}
}

// BenchmarkSippRegister measures REGISTERs with digest auth per second
// (each op is one challenged REGISTER: two requests).
func BenchmarkSippRegister(b *testing.B) {
	s := startServer(b, func(c *pbxconfig.SIP) {
		c.Algorithms = []string{AlgMD5}
		c.Allowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.MaxContacts = 100
	})
	n := b.N
	if n < 10000 {
		n = 10000 // sipp start-up dominates shorter runs
	}
	b.ResetTimer()
	c0 := selfCPU(b)
	took := runSipp(b, "register1.xml", s.udp.String(), n, 20000, 500)
	b.ReportMetric(float64(n)/took.Seconds(), "registers/s")
	b.ReportMetric(float64((selfCPU(b)-c0).Microseconds())/float64(n), "cpu-us/reg")
}
