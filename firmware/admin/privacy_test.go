package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/privacy"
)

// TestConnectionLogFromLogin: real logins through the API (a failure, a
// success, a logout and a refused token) land in the connection log with
// source, port, user, method and result, and the API filters and bounds it.
func TestConnectionLogFromLogin(t *testing.T) {
	e, _ := claimed(t)
	c := e.client("198.51.100.20")
	if r := c.login("root1", "wrong-password-1"); r.code != 401 {
		t.Fatalf("wrong password: %d", r.code)
	}
	op := e.client("198.51.100.20")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	op.must(200, "POST", "/api/v1/logout", nil)
	tok := e.client("198.51.100.21")
	tok.token = "not-a-token"
	if r := tok.do("GET", "/api/v1/me", nil); r.code != 401 {
		t.Fatalf("bad token: %d", r.code)
	}
	adm := e.client("192.0.2.50")
	adm.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	r := adm.must(200, "GET", "/api/v1/connections?limit=10", nil)
	entries, _ := r.js["entries"].([]any)
	var seen []string
	for _, x := range entries {
		m := x.(map[string]any)
		seen = append(seen, m["kind"].(string)+" "+m["result"].(string)+" "+m["source"].(string))
		if m["source"] == "198.51.100.20" && strings.HasPrefix(m["kind"].(string), "admin.login") && m["port"] != float64(40000) {
			t.Errorf("port missing: %v", m)
		}
	}
	got := strings.Join(seen, "\n")
	for _, want := range []string{"admin.login_failed failed 198.51.100.20", "admin.login ok 198.51.100.20", "admin.logout ok 198.51.100.20",
		"api.token_failed failed 198.51.100.21", "admin.login ok 192.0.2.50"} {
		if !strings.Contains(got, want) {
			t.Errorf("connection log lacks %q:\n%s", want, got)
		}
	}
	r = adm.must(200, "GET", "/api/v1/connections?kind=admin.login_failed", nil)
	if n := len(r.js["entries"].([]any)); n != 1 {
		t.Errorf("filtered to %d entries, want 1: %s", n, r.body)
	}
	for _, bad := range []string{"limit=501", "since=yesterday", "colour=red", "user=" + strings.Repeat("u", 200)} {
		if r := adm.do("GET", "/api/v1/connections?"+bad, nil); r.code != 400 || !strings.Contains(r.hdr.Get("Content-Type"), "problem+json") {
			t.Errorf("%s: %d %s", bad, r.code, r.body)
		}
	}
}

// TestPrivacySettingsAPI: every category is listed with its setting and
// size; shortening a retention needs re-authentication, lengthening does
// not; refusals name the field and change nothing; changes are audited.
func TestPrivacySettingsAPI(t *testing.T) {
	e, c := claimed(t)
	r := c.must(200, "GET", "/api/v1/privacy", nil)
	cats, _ := r.js["categories"].([]any)
	names := map[string]bool{}
	for _, x := range cats {
		m := x.(map[string]any)
		names[m["name"].(string)] = m["personal_data"].(bool)
		if _, ok := m["size"].(map[string]any); !ok {
			t.Errorf("%v: no size", m["name"])
		}
	}
	for _, n := range []string{"cdrs", "audit", "login_history", "connections"} {
		if !names[n] {
			t.Errorf("category %s missing or not marked personal: %v", n, names)
		}
	}
	if r := c.do("PUT", "/api/v1/privacy/cdrs", map[string]any{"days": 30}); r.code != 422 || !strings.Contains(string(r.body), "current_password") {
		t.Fatalf("shorter retention without re-authentication: %d %s", r.code, r.body)
	}
	if p, _ := e.priv.Policy("cdrs"); p.Days != 180 {
		t.Fatalf("a refused change applied: %+v", p)
	}
	c.must(200, "PUT", "/api/v1/privacy/cdrs", map[string]any{"days": 30, "current_password": adminPW})
	c.must(200, "PUT", "/api/v1/privacy/cdrs", map[string]any{"days": 60})
	r = c.do("PUT", "/api/v1/privacy/connections", map[string]any{"days": 30, "anonymise": "rot13"})
	if r.code != 400 || !strings.Contains(string(r.body), "anonymise") {
		t.Fatalf("bad mode: %d %s", r.code, r.body)
	}
	c.must(404, "PUT", "/api/v1/privacy/nonsense", map[string]any{"days": 30})
	if p, _ := e.priv.Policy("cdrs"); p.Days != 60 {
		t.Fatalf("cdrs policy %+v, want 60 days", p)
	}
	if !e.auditHas("privacy.settings", "ok") || !e.auditHas("privacy.settings", "failed") {
		t.Error("settings changes not audited")
	}
	page := c.must(200, "GET", "/privacy", nil)
	if !strings.Contains(string(page.body), "Call records") || !strings.Contains(string(page.body), "Login history") || strings.Contains(string(page.body), "<script>") {
		t.Errorf("privacy page: %s", page.body)
	}
}

// TestSubjectRequestAPI: find, export and forget an extension through the
// API; forgetting needs re-authentication and leaves an audit entry with
// counts, not the subject.
func TestSubjectRequestAPI(t *testing.T) {
	e, c := claimed(t)
	now := e.clock.Now()
	store := cdr.New(e.db)
	for i, to := range []string{"+4930555301", "302"} {
		if err := store.Write(cdr.Record{ID: "c" + to, From: "301", To: to, Dialled: to, Direction: "outbound", Start: now.Add(time.Duration(i) * time.Minute),
			End: now.Add(time.Duration(i+1) * time.Minute), Result: cdr.NoAnswer}); err != nil {
			t.Fatal(err)
		}
	}
	e.conns.Record(connlog.Entry{Kind: connlog.SIPRegister, Source: "192.0.2.77:5060", User: "301", Method: "REGISTER", Result: connlog.OK})
	subj := privacy.Subject{Kind: privacy.Extension, Value: "301"}
	r := c.must(200, "POST", "/api/v1/privacy/subjects/find", subj)
	if !strings.Contains(r.str("status"), "cdrs 2") || !strings.Contains(r.str("status"), "connections 1") {
		t.Fatalf("find: %s", r.body)
	}
	r = c.must(200, "POST", "/api/v1/privacy/subjects/export", subj)
	if !strings.Contains(string(r.body), "+4930555301") || !strings.Contains(r.hdr.Get("Content-Disposition"), "attachment") {
		t.Fatalf("export: %s", r.body)
	}
	if r := c.do("POST", "/api/v1/privacy/subjects/forget", SubjectRequest{Subject: subj}); r.code != 422 {
		t.Fatalf("forget without re-authentication: %d %s", r.code, r.body)
	}
	if l, _ := store.Subject("301"); len(l) != 2 {
		t.Fatal("a refused forget deleted data")
	}
	req := SubjectRequest{Subject: subj}
	req.Password = adminPW
	r = c.must(200, "POST", "/api/v1/privacy/subjects/forget", req)
	if l, _ := store.Subject("301"); len(l) != 0 {
		t.Fatalf("call records left: %+v", l)
	}
	if p, _ := e.conns.Query(connlog.Filter{User: "301"}); len(p.Entries) != 0 {
		t.Fatalf("connection entries left: %+v", p.Entries)
	}
	es, _ := e.srv.audit.Query(audit.Filter{Action: "privacy.forget", Outcome: "ok"})
	if len(es) != 1 || !strings.Contains(es[0].Detail, r.str("reference")) || strings.Contains(es[0].Detail+es[0].Target, "301") {
		t.Fatalf("forget audit: %+v", es)
	}
	if r := c.do("POST", "/api/v1/privacy/subjects/find", map[string]any{"kind": "ip", "value": "x"}); r.code != 400 {
		t.Fatalf("bad kind: %d", r.code)
	}
}
