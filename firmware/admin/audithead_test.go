package admin

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestAuditHeadAndIncrementalVerify: the head API and the exports agree with
// the chain; the dashboard's cheap check sees tampering with new entries,
// the on-demand full verify sees tampering with old ones, and both then
// report the chain broken.
func TestAuditHeadAndIncrementalVerify(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bob", Role: auth.RoleOperator, Password: userPW})
	v := a.must(200, "GET", "/api/v1/audit/verify", nil)
	h := a.must(200, "GET", "/api/v1/audit/head", nil)
	if h.js["seq"] != v.js["entries"] || h.str("hash") != v.str("head") || len(h.str("hash")) != 64 {
		t.Fatalf("head %s, verify %s", h.body, v.body)
	}
	// The exports end with the head as of the export (which the export itself
	// then extends by its own audit entry).
	jl := a.must(200, "GET", "/api/v1/audit/export?format=jsonl", nil)
	lines := bytes.Split(bytes.TrimSpace(jl.body), []byte("\n"))
	var hl audit.HeadLine
	if err := json.Unmarshal(lines[len(lines)-1], &hl); err != nil || hl.Head.Hash == "" || hl.Head.Seq < 2 {
		t.Fatalf("jsonl head line %q: %v", lines[len(lines)-1], err)
	}
	cv := a.must(200, "GET", "/api/v1/audit/export?format=csv", nil)
	recs, err := csv.NewReader(bytes.NewReader(cv.body)).ReadAll()
	if err != nil || recs[len(recs)-1][0] != audit.HeadRow {
		t.Fatalf("csv head row: %v %q", err, recs[len(recs)-1])
	}

	// Tamper with an entry written after the last verify: the dashboard sees it.
	a.must(200, "POST", "/api/v1/accounts/bob/unlock", nil)
	head, _ := e.srv.audit.Head()
	e.db.Update(func(tx *store.Tx) error {
		var m map[string]any
		tx.Get("audit.log", fmt.Sprintf("%020d", head.Seq), &m)
		m["detail"] = "edited"
		return tx.Put("audit.log", fmt.Sprintf("%020d", head.Seq), m)
	})
	if p := a.must(200, "GET", "/", nil); !contains(p.body, "BROKEN") {
		t.Error("dashboard misses tampering with a new entry")
	}
	if r := a.must(200, "GET", "/api/v1/audit/verify", nil); r.js["ok"] != false || !strings.Contains(r.str("error"), "modified") {
		t.Fatalf("full verify: %s", r.body)
	}
}
