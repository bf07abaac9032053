package call

import (
	"testing"

	"github.com/edgepbx/edgepbx/firmware/cdr"
)

// TestSippPRACK: a sipp caller requiring 100rel and a sipp callee sending
// a reliable 183 with early media (RFC 3262). The box PRACKs the callee's
// 183 (RAck 1 <CSeq> INVITE; the callee answers only then), relays the
// early media to the caller in its own reliable 183 (Require: 100rel,
// RSeq), answers the caller's PRACK and sends the 200 only after it. Both
// scenarios check every header they depend on and must end successfully.
func TestSippPRACK(t *testing.T) {
	h := startHarness(t)
	addr, uas := sippUASRun(t, "uas_100rel.xml", "-m", "1")
	h.dir.set("102", addr)
	sippUAC(t, "uac_100rel.xml", "102", h.addr, 1, 1, 1, "-d", "200")
	if err := <-uas; err != nil {
		t.Fatal(err)
	}
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || e.rec.Cause != "caller BYE" {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, false)
}
