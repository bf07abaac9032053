package phonehome_test

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// TestAnchorBounds: the anchors kept per box are bounded (the newest
// MaxAnchors), boxes are kept apart by install id, an unknown licence keeps
// none, and an admin cannot clear a flag of a box that has no anchors.
func TestAnchorBounds(t *testing.T) {
	forEachBackend(t, testAnchorBounds)
}

func testAnchorBounds(t *testing.T, b backend) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s, _ := newTestServer(t, b, &now)
	if err := s.PutLicence(phonehome.Licence{ID: "L1", ValidUntil: now.AddDate(1, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	answer := func(lic, install string, seq uint64) *license.Response {
		t.Helper()
		a := license.Anchor{Seq: seq}
		a.Hash[0] = byte(seq)
		req := &license.Request{V: 1, Nonce: strings.Repeat("ab", 16), Serial: "S1", InstallID: install,
			Fingerprint: license.Fingerprint("hw"), Firmware: "2.0.0", LicenceID: lic, Audit: a.String()}
		if err := req.Validate(); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Answer(req, 100)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	const n = phonehome.MaxAnchors + 5
	for i := uint64(1); i <= n; i++ {
		if r := answer("L1", "I1", i); r.AuditRollback {
			t.Fatalf("growing log flagged at %d: %s", i, r.AuditReason)
		}
	}
	answer("L1", "I2", 3)      // another box of the licence: its own record
	answer("L9", "I1", 1)      // unknown licence: nothing kept
	r := answer("L1", "I1", 7) // behind the newest anchor, even though 7 itself was dropped
	if !r.AuditRollback || r.AuditSeq != n {
		t.Fatalf("cut-short log: %+v", r)
	}
	logs, err := s.Anchors("L1")
	if err != nil || len(logs) != 2 {
		t.Fatalf("anchor logs %+v, %v", logs, err)
	}
	if got := logs[0].Anchors; len(got) != phonehome.MaxAnchors || got[0].Seq != n-phonehome.MaxAnchors+2 || got[len(got)-1].Seq != 7 {
		t.Fatalf("kept %d anchors, %d..%d", len(got), got[0].Seq, got[len(got)-1].Seq)
	}
	if logs[1].InstallID != "I2" || len(logs[1].Anchors) != 1 || logs[1].Flag != nil {
		t.Fatalf("second box %+v", logs[1])
	}
	if l, err := s.Anchors("L9"); err != nil || len(l) != 0 {
		t.Fatalf("unknown licence kept anchors %+v, %v", l, err)
	}
	if err := s.ClearAuditFlag("L1", "I3"); err == nil {
		t.Fatal("cleared the flag of a box without anchors")
	}
}
