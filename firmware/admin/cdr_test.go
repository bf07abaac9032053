package admin

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
)

// trunkList is a fixed trunk state (edgepbxd's trunk manager is tested
// with real registrars in cmd/edgepbxd).
type trunkList []TrunkState

func (l trunkList) TrunkStates() []TrunkState { return l }

func writeCalls(t *testing.T, e *env, n int) time.Time {
	t.Helper()
	t0 := time.Date(2026, 5, 3, 8, 0, 0, 0, time.UTC)
	s := cdr.New(e.db)
	for i := range n {
		r := cdr.Record{ID: fmt.Sprintf("call-%02d", i), From: "1001", To: "030555", Dialled: "030555", Direction: "outbound",
			Trunk: "itsp", Start: t0.Add(time.Duration(i) * time.Minute), End: t0.Add(time.Duration(i)*time.Minute + 50*time.Second),
			Result: cdr.Busy, SIPStatus: 486, Codec: "PCMA/8000"}
		if i%3 == 0 {
			r.Result, r.SIPStatus, r.Answer, r.Cause, r.SRTPCaller, r.SRTPCallee = cdr.Answered, 0, r.Start.Add(5*time.Second), "caller BYE", true, true
		}
		if i == 4 {
			r.From, r.To, r.Dialled, r.Direction, r.Trunk = "1002", "1001", "1001", "internal", ""
			r.Cause = "<script>alert(1)</script>"
		}
		if err := s.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	return t0
}

func TestCDRAPI(t *testing.T) {
	e, admin := claimed(t)
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op1", Role: auth.RoleOperator, Password: userPW})
	op := e.client("192.0.2.51")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})
	writeCalls(t, e, 12)

	ids := func(r resp) string {
		var out []string
		recs, _ := r.js["records"].([]any)
		for _, x := range recs {
			out = append(out, x.(map[string]any)["id"].(string))
		}
		return strings.Join(out, " ")
	}
	r := op.must(200, "GET", "/api/v1/cdr?limit=3", nil)
	if ids(r) != "call-11 call-10 call-09" || r.str("next") == "" {
		t.Fatalf("first page %s", r.body)
	}
	r = op.must(200, "GET", "/api/v1/cdr?limit=3&cursor="+url.QueryEscape(r.str("next")), nil)
	if ids(r) != "call-08 call-07 call-06" {
		t.Fatalf("second page %s", r.body)
	}
	r = op.must(200, "GET", "/api/v1/cdr?result=answered&since=2026-05-03T08:02:00Z&until=2026-05-03T08:10:00Z", nil)
	if ids(r) != "call-09 call-06 call-03" || r.str("next") != "" {
		t.Fatalf("filtered %s", r.body)
	}
	r = op.must(200, "GET", "/api/v1/cdr?party=1002", nil)
	if ids(r) != "call-04" {
		t.Fatalf("party %s", r.body)
	}
	for _, bad := range []string{"limit=5000", "result=maybe", "since=2026-13-01", "party=%27%20OR%201%3D1", "cursor=zz", "order=asc", "limit=1&limit=2",
		"party=" + strings.Repeat("1", 3000)} {
		if r := op.do("GET", "/api/v1/cdr?"+bad, nil); r.code != 400 || !strings.Contains(r.hdr.Get("Content-Type"), "problem+json") {
			t.Errorf("%s: %d %s", bad, r.code, r.body)
		}
	}

	// Export: CSV and JSON lines, filters apply, the limit does not, audited.
	r = op.must(200, "GET", "/api/v1/cdr/export?format=csv&direction=outbound&limit=1", nil)
	if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") || !strings.Contains(r.hdr.Get("Content-Disposition"), "attachment") {
		t.Fatalf("csv headers %v", r.hdr)
	}
	rows, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(rows) != 12 || rows[0][0] != "id" || rows[1][0] != "call-11" {
		t.Fatalf("csv %d rows %v: %s", len(rows), err, r.body)
	}
	r = op.must(200, "GET", "/api/v1/cdr/export?format=jsonl&party=1002", nil)
	if lines := strings.Split(strings.TrimSpace(string(r.body)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"id":"call-04"`) {
		t.Fatalf("jsonl %s", r.body)
	}
	if r := op.do("GET", "/api/v1/cdr/export?format=xlsx", nil); r.code != 400 {
		t.Fatalf("format xlsx: %d", r.code)
	}
	if !e.auditHas("cdr.export", "ok") {
		t.Fatal("export not audited")
	}

	// Retention: readable by operators, set by admins only, bounded, audited.
	if r := op.must(200, "GET", "/api/v1/cdr/retention", nil); r.js["days"] != float64(cdr.DefaultRetentionDays) {
		t.Fatalf("default retention %s", r.body)
	}
	op.must(403, "PUT", "/api/v1/cdr/retention", cdr.Retention{Days: 1})
	admin.must(400, "PUT", "/api/v1/cdr/retention", cdr.Retention{Days: 99999})
	// Shorter: deletes records, so it needs the current password.
	admin.must(422, "PUT", "/api/v1/cdr/retention", cdr.Retention{Days: 90})
	admin.must(200, "PUT", "/api/v1/cdr/retention", map[string]any{"days": 90, "current_password": adminPW})
	if r := op.must(200, "GET", "/api/v1/cdr/retention", nil); r.js["days"] != 90.0 {
		t.Fatalf("retention %s", r.body)
	}
	if !e.auditHas("cdr.retention", "ok") {
		t.Fatal("retention change not audited")
	}
}

func TestCallsPage(t *testing.T) {
	e, admin := claimed(t)
	e.srv.trunks = (trunkList{
		{Name: "itsp", Auth: "register", Transport: "udp", Registrar: "sip.example:5060", State: "registered", Expires: time.Date(2026, 5, 4, 11, 0, 0, 0, time.UTC)},
		{Name: "backup", Auth: "register", Transport: "tls", Registrar: "backup.example:5061", State: "failed", LastError: "register: 403 Forbidden"},
		{Name: "carrier", Auth: "ip", State: "ip", Peers: []string{"198.51.100.0/24"}},
	})
	// Without calls and trunks the page still renders.
	page := admin.must(200, "GET", "/calls", nil)
	for _, want := range []string{"No calls match", `aria-current="page">Calls`, "198.51.100.0/24", "registered", "403 Forbidden", "2026-05-04 11:00:00"} {
		if !contains(page.body, want) {
			t.Errorf("empty page lacks %q", want)
		}
	}
	writeCalls(t, e, 60)
	page = admin.must(200, "GET", "/calls?trunk=itsp&result=busy", nil)
	body := string(page.body)
	if strings.Contains(body, "call-") { // ids are not shown; rows are
		t.Fatal("page shows call ids")
	}
	if n := strings.Count(body, `<td><time datetime="2026-05-03`); n != 39 { // 59 itsp calls, 2 in 3 busy, minus call-04 (internal)
		t.Errorf("%d rows", n)
	}
	if !strings.Contains(body, "export?format=csv") || !strings.Contains(body, "result=busy") || strings.Contains(body, "Older calls") {
		t.Error("export links lack the filter, or a second page is offered")
	}
	page = admin.must(200, "GET", "/calls", nil)
	if !contains(page.body, "Older calls") {
		t.Error("no link to older calls")
	}
	page = admin.must(200, "GET", "/calls?party=1002", nil)
	if contains(page.body, "<script>alert") || !contains(page.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("cause not escaped: %s", page.body)
	}
	if r := admin.do("GET", "/calls?limit=0", nil); r.code != 400 {
		t.Errorf("bad filter on the page: %d", r.code)
	}
	if r := admin.must(200, "GET", "/api/v1/trunks/status", nil); !contains(r.body, `"state": "failed"`) || !contains(r.body, `"last_error": "register: 403 Forbidden"`) {
		t.Errorf("trunk status %s", r.body)
	}
}
