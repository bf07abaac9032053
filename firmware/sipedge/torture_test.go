package sipedge

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// tortureDir finds RFC 4475's messages shipped in the sipgo module.
func tortureDir(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/emiago/sipgo").Output()
	if err != nil {
		t.Fatalf("locate sipgo module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "sip", "testdata", "torture")
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("RFC 4475 corpus not found (run go mod download): %v", err)
	}
	return dir
}

// outcome of stage 2 for one torture message.
const (
	parseErr = -1 // the (strict) parser refuses it: dropped
	dropped  = -2 // a response we must not process
	passes   = 0  // valid: goes on to policy/auth
)

// Expected outcomes, following RFC 4475's "should" for a registrar/UAS.
var tortureWant = map[string]int{
	// §3.1.1 valid messages: parsed and passed on.
	"valid/dblreq": passes, "valid/esc01": passes, "valid/esc02": passes, "valid/escnull": passes,
	"valid/intmeth": passes, "valid/longreq": passes, "valid/lwsdisp": passes, "valid/mpart01": passes,
	"valid/noreason": passes, "valid/semiuri": passes, "valid/transports": passes, "valid/unreason": passes,
	"valid/wsinv": passes,
	// §3.1.2 invalid messages.
	"invalid/badinv01": parseErr, "invalid/clerr": parseErr, "invalid/ncl": parseErr,
	"invalid/scalar02": parseErr, "invalid/scalarlg": parseErr, "invalid/quotbal": parseErr,
	"invalid/ltgtruri": parseErr, "invalid/lwsruri": parseErr, "invalid/lwsstart": parseErr,
	"invalid/trws": parseErr, "invalid/escruri": 400, "invalid/baddate": 400,
	"invalid/regbadct": parseErr, "invalid/badaspec": parseErr, "invalid/baddn": parseErr,
	"invalid/badvers": 505, "invalid/mismatch01": 400, "invalid/mismatch02": 400,
	"invalid/bigcode": parseErr, "invalid/test": parseErr,
	// §3.2 transaction layer.
	"invalid/badbranch": 400,
	// §3.3 application layer.
	"invalid/insuf": 400, "invalid/unkscm": 416, "invalid/novelsc": parseErr, "invalid/unksm2": 400,
	"invalid/bext01": 420, "invalid/invut": 415, "invalid/regaut01": passes, // → 401 at stage 5
	"invalid/multi01": 400, "invalid/mcl01": 400, "invalid/bcast": dropped, "invalid/zeromf": 483,
	"invalid/cparam01": passes, "invalid/cparam02": passes, "invalid/regescrt": passes,
	"invalid/sdp01": passes, // an INVITE we answer after auth
	// §3.5: RFC 2543 request (no branch): accepted.
	"invalid/inv2543": passes,
}

func stage2(p *sip.Parser, v *Validator, data []byte) int {
	m, err := p.ParseSIP(data)
	if err != nil {
		return parseErr
	}
	switch msg := m.(type) {
	case *sip.Request:
		vd := v.Check(msg)
		if vd.Drop {
			return dropped
		}
		return vd.Status
	case *sip.Response:
		if !CheckResponse(msg) {
			return dropped
		}
	}
	return passes
}

func TestTorture(t *testing.T) {
	dir := tortureDir(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.dat"))
	if len(files) != 50 {
		t.Fatalf("want 13 valid + 37 invalid torture messages, found %d", len(files))
	}
	p, v := NewParser(65535), newValidator()
	for _, f := range files {
		name := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(filepath.Base(f), ".dat")
		t.Run(name, func(t *testing.T) {
			want, ok := tortureWant[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if got := stage2(p, v, data); got != want {
				t.Fatalf("got %d, want %d", got, want)
			}
		})
	}
}

func FuzzValidate(f *testing.F) {
	dir := tortureDir(f)
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*.dat"))
	for _, fn := range files {
		if b, err := os.ReadFile(fn); err == nil {
			f.Add(b)
		}
	}
	p, v := NewParser(8192), newValidator()
	f.Fuzz(func(t *testing.T, data []byte) {
		got := stage2(p, v, data)
		if got != parseErr && got != dropped && got != passes && (got < 400 || got > 599) {
			t.Fatalf("stage 2 gave status %d", got)
		}
	})
}

func FuzzReadFilter(f *testing.F) {
	f.Add([]byte("OPTIONS sip:a SIP/2.0\r\nUser-Agent: friendly-scanner\r\n\r\n"))
	f.Add([]byte("user-agent:x\nfoo"))
	s := newGuard(GuardConfig{RateWindow: 1e9, RateLimit: 1 << 30, FloodBan: 1, FailWindow: 1, MaxFailsPerSource: 1, MaxFailsPerUser: 1, AuthBan: 1, MaxTracked: 16}, newBans(), func(netip.Addr) bool { return false }, nil)
	flt := newReadFilter(newBans(), s, []string{"friendly-scanner"}, 4096, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		out := flt.Check(srcAddr("127.0.0.1"), "UDP", data)
		if out != nil && len(data) > 4096 {
			t.Fatal("oversize passed")
		}
		if out != nil && strings.Contains(strings.ToLower(string(userAgent(data))), "friendly-scanner") {
			t.Fatal("scanner passed")
		}
	})
}
