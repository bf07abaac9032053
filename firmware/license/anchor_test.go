package license_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// auditLog opens a real audit log in a store of its own with n entries;
// tag makes the entries (and so the hashes) differ between logs.
func auditLog(t *testing.T, b *box, n int, tag string) *audit.Log {
	t.Helper()
	db := storetest.Open(t, nil)
	l := audit.New(db, b.clock)
	record(t, l, n, tag)
	return l
}

func record(t *testing.T, l *audit.Log, n int, tag string) {
	t.Helper()
	for i := range n {
		if err := l.Record(audit.Event{Actor: "admin", Action: "extension.create", Target: fmt.Sprintf("%s-%d", tag, i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// adminGet calls licensed's admin API over the real TLS listener.
func (e *env) adminDo(t *testing.T, method, path string, v any) {
	t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.token)
	res, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s", method, path, res.Status)
	}
	if v != nil {
		if err := json.NewDecoder(res.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAuditAnchor: each check-in anchors the box's (real) audit chain head
// with a real licensed; a log that grows or stays put is fine, a log
// rewritten (same seq, other hash) or cut short (lower seq) is flagged in
// the signed answer and shown on the box as a warning that never degrades.
// The flag stays until the vendor clears it through the admin API.
func TestAuditAnchor(t *testing.T) {
	tests := []struct {
		name    string
		change  func(t *testing.T, b *box, cur *audit.Log) *audit.Log
		flagged bool
	}{
		{"unchanged", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { return cur }, false},
		{"grown", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { record(t, cur, 3, "a2"); return cur }, false},
		{"rewritten", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { return auditLog(t, b, 5, "b") }, true},
		// Past the old head: only the re-sent anchored entry (AuditPrev) tells.
		{"rewritten and grown", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { return auditLog(t, b, 8, "b") }, true},
		{"truncated", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { return auditLog(t, b, 2, "a") }, true},
		{"wiped", func(t *testing.T, b *box, cur *audit.Log) *audit.Log { return auditLog(t, b, 0, "a") }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var cur atomic.Pointer[audit.Log]
			b := e.newBox(func(c *license.Config) {
				c.AuditHead = func() (license.Anchor, error) {
					h, err := cur.Load().Head()
					if err != nil {
						return license.Anchor{}, err
					}
					return license.AnchorFromHead(h.Seq, h.Hash)
				}
				c.AuditAt = func(seq uint64) (license.Anchor, bool, error) {
					h, found, err := cur.Load().HashAt(seq)
					if err != nil || !found {
						return license.Anchor{}, found, err
					}
					a, err := license.AnchorFromHead(seq, h)
					return a, true, err
				}
			})
			cur.Store(auditLog(t, b, 5, "a"))
			first, _ := cur.Load().Head()
			if st := e.mustCheck(b); st.AuditRollback != nil || hasReason(st, license.ReasonAuditChain) {
				t.Fatalf("first anchor flagged: %+v", st)
			}
			e.advance(b, day)
			cur.Store(tt.change(t, b, cur.Load()))
			now, _ := cur.Load().Head()
			st := e.mustCheck(b)

			// The vendor's record, read through the admin API.
			var logs []phonehome.AnchorLog
			e.adminDo(t, "GET", "/admin/licences/LIC-1/anchors", &logs)
			if len(logs) != 1 || logs[0].InstallID != "inst-7f3a" || logs[0].Serial != "EPX-0001" {
				t.Fatalf("anchor logs %+v", logs)
			}
			got := logs[0]
			if a := got.Anchors[0]; a.Seq != 5 || a.Hash != first.Hash[:32] {
				t.Fatalf("first anchor %+v, head %+v", a, first)
			}
			want := 2
			if tt.name == "unchanged" {
				want = 1 // the same head again only refreshes the last anchor
			}
			if len(got.Anchors) != want {
				t.Fatalf("%d anchors, want %d: %+v", len(got.Anchors), want, got.Anchors)
			}
			if a := got.Anchors[len(got.Anchors)-1]; a.Seq != now.Seq || (now.Seq > 0 && a.Hash != now.Hash[:32]) || !a.Seen.Equal(e.srvClock.Now()) {
				t.Fatalf("last anchor %+v, head %+v", a, now)
			}

			if !tt.flagged {
				if st.AuditRollback != nil || hasReason(st, license.ReasonAuditChain) || got.Flag != nil || st.Mode != license.ModeFull {
					t.Fatalf("consistent log flagged: state %+v, server %+v", st, got.Flag)
				}
				return
			}
			if st.AuditRollback == nil || st.AuditRollback.Seq != 5 || got.Flag == nil || got.Flag.Seq != 5 {
				t.Fatalf("rollback not reported at seq 5: state %+v, server %+v", st.AuditRollback, got.Flag)
			}
			if !hasReason(st, license.ReasonAuditChain) || st.Mode != license.ModeWarning || !strings.Contains(st.Banner, "audit chain anchor mismatch at seq 5") {
				t.Fatalf("no warning: mode %s banner %q", st.Mode, st.Banner)
			}
			checkGates(t, b.m, false) // a security event, not a licence problem

			// Sticky: a later, growing log is still flagged until the vendor clears it.
			e.advance(b, day)
			record(t, cur.Load(), 1, "later")
			if st := e.mustCheck(b); st.AuditRollback == nil || st.AuditRollback.Seq != 5 {
				t.Fatalf("flag dropped on the next check-in: %+v", st.AuditRollback)
			}
			e.adminDo(t, "POST", "/admin/licences/LIC-1/anchors/inst-7f3a/clear", nil)
			e.advance(b, day)
			if st := e.mustCheck(b); st.AuditRollback != nil || hasReason(st, license.ReasonAuditChain) {
				t.Fatalf("flag kept after the vendor cleared it: %+v", st.AuditRollback)
			}
		})
	}
}

// TestAnchorWire: the wire form round-trips and rejects everything but the
// one canonical spelling.
func TestAnchorWire(t *testing.T) {
	head := strings.Repeat("ab", 32)
	a, err := license.AnchorFromHead(42, head)
	if err != nil {
		t.Fatal(err)
	}
	if a.HashHex() != head[:32] || a.String() != "42.q6urq6urq6urq6urq6urqw" {
		t.Fatalf("anchor %s / %s", a, a.HashHex())
	}
	if z, err := license.AnchorFromHead(0, ""); err != nil || z.String() != "0" {
		t.Fatalf("empty log anchor %q, %v", z, err)
	}
	for _, bad := range []struct {
		seq  uint64
		hash string
	}{{0, head}, {1, ""}, {1, "zz"}, {1, head[:30]}} {
		if _, err := license.AnchorFromHead(bad.seq, bad.hash); err == nil {
			t.Errorf("AnchorFromHead(%d, %q) accepted", bad.seq, bad.hash)
		}
	}
	tests := []struct {
		in string
		ok bool
	}{
		{"42.q6urq6urq6urq6urq6urqw", true},
		{"0", true},
		{"18446744073709551615.q6urq6urq6urq6urq6urqw", true},
		{"18446744073709551616.q6urq6urq6urq6urq6urqw", false}, // overflows
		{"042.q6urq6urq6urq6urq6urqw", false},
		{"+42.q6urq6urq6urq6urq6urqw", false},
		{"42", false},
		{"42.", false},
		{"0.q6urq6urq6urq6urq6urqw", false},
		{"42.q6urq6urq6urq6urq6urqx", false}, // non-zero padding bits
		{"42.q6urq6urq6urq6urq6urqw==", false},
		{"42.q6urq6urq6urq6urq6ur", false},
		{"42.q6urq6urq6urq6urq6ur/w", false},
		{"", false},
		{"4 2.q6urq6urq6urq6urq6urqw", false},
		{"42.q6urq6urq6urq6urq6ur\nqw", false}, // the decoder would skip the newline
	}
	for _, tt := range tests {
		got, err := license.ParseAnchor(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got.String() != tt.in) {
			t.Errorf("ParseAnchor(%q) = %s, %v; want ok=%v", tt.in, got, err, tt.ok)
		}
	}
}

// FuzzParseAnchor: the server decodes the anchor of untrusted requests. It
// must not panic, and what it accepts has exactly one spelling.
func FuzzParseAnchor(f *testing.F) {
	for _, s := range []string{"42.q6urq6urq6urq6urq6urqw", "0", "18446744073709551615.AAAAAAAAAAAAAAAAAAAAAA", "1.", "00", "9.////"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := license.ParseAnchor(s)
		if err != nil {
			return
		}
		if a.String() != s {
			t.Fatalf("accepted %q, canonical %q", s, a)
		}
		if b, err := license.ParseAnchor(a.String()); err != nil || b != a {
			t.Fatalf("round trip %q: %v", s, err)
		}
	})
}
