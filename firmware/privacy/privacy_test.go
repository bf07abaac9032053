package privacy

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const rootPW = "tr7#Kq2!vm9Lw"

// box is every store that holds personal data, on one real bbolt file,
// with the registry over them. auditDB lets a test keep the audit log in
// a second file (the raw-bytes test: the audit log keeps full addresses).
type box struct {
	path  string
	key   []byte
	db    *store.DB
	clk   *fakeClock
	audit *audit.Log
	auth  *auth.Service
	cdr   *cdr.Store
	sec   *logs.Log
	conns *connlog.Log
	intr  *intrusion.Aggregator
	reg   *Registry
}

func newBox(t testing.TB, separateAudit bool, settings map[string]Policy) *box {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	b := &box{path: filepath.Join(t.TempDir(), "edgepbx.db"), key: key, clk: &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}}
	db, err := store.Open(b.path, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	b.db = db
	adb := db
	if separateAudit {
		if adb, err = store.Open(filepath.Join(t.TempDir(), "audit.db"), key); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { adb.Close() })
	}
	b.audit = audit.New(adb, b.clk)
	if b.reg, err = New(db, b.audit, b.clk); err != nil {
		t.Fatal(err)
	}
	for name, p := range settings {
		// Before the categories register: as stored by an earlier run.
		if err := db.Update(func(tx *store.Tx) error { return tx.Put(settingsBucket, name, p) }); err != nil {
			t.Fatal(err)
		}
	}
	if b.reg, err = New(db, b.audit, b.clk); err != nil {
		t.Fatal(err)
	}
	b.conns = connlog.New(db, b.clk, b.reg.Anonymiser("connections"))
	b.auth, err = auth.New(auth.Config{DB: db, Clock: b.clk, Audit: b.audit, Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 16),
		SetupCode: auth.SetupCode("AAAA-BBBB-CCCC"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Connections: b.conns, AnonymiseSource: b.reg.Anonymiser("login_history")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.auth.Claim(context.Background(), auth.Client{}, "AAAA-BBBB-CCCC", "root1", rootPW); err != nil {
		t.Fatal(err)
	}
	b.cdr = cdr.New(db)
	if b.sec, err = logs.New(db, 1000); err != nil {
		t.Fatal(err)
	}
	b.sec.Anonymise(b.reg.SourceAnonymiser("security_log"))
	if b.intr, err = intrusion.New(intrusion.Config{DB: db, Now: b.clk.Now, Mask: b.reg.IntrusionMask(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Category{CDRs{DB: db, Store: b.cdr}, SecurityLog{DB: db, Log: b.sec}, Audit{DB: db, Log: b.audit},
		LoginHistory{DB: db, Auth: b.auth}, Connections{DB: db, Log: b.conns}, Intrusion{DB: db, Agg: b.intr}} {
		if err := b.reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func (b *box) call(t testing.TB, id, from, to string) {
	t.Helper()
	now := b.clk.Now()
	if err := b.cdr.Write(cdr.Record{ID: id, From: from, To: to, Dialled: to, Direction: "outbound", Start: now, End: now.Add(time.Minute), Result: cdr.NoAnswer}); err != nil {
		t.Fatal(err)
	}
}

// fill writes one item of each category at the clock's time, about ext
// (an extension) and user (an admin account), from src.
func (b *box) fill(t testing.TB, tag, ext, user string, src netip.Addr) {
	t.Helper()
	b.call(t, "call-"+tag, ext, "+4930123456"+tag[len(tag)-1:])
	b.sec.Record(logs.Event{Time: b.clk.Now(), Kind: logs.KindRegister, Source: netip.AddrPortFrom(src, 5060).String(), User: ext})
	if err := b.sec.Flush(); err != nil {
		t.Fatal(err)
	}
	// A wrong password: login history, connection log and audit.
	if _, err := b.auth.Login(context.Background(), auth.Client{Addr: src, Port: 40000}, user, "wrong"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	b.conns.Record(connlog.Entry{Time: b.clk.Now(), Kind: connlog.SIPRegister, Source: netip.AddrPortFrom(src, 5060).String(), User: ext, Method: "REGISTER", Result: connlog.OK})
	if err := b.conns.Flush(); err != nil {
		t.Fatal(err)
	}
	// A SIP digest failure on ext from src: the intrusion report.
	b.intr.Observe(logs.Event{Time: b.clk.Now(), Kind: logs.KindAuthFailure, Source: netip.AddrPortFrom(src, 5060).String(), User: ext})
	if err := b.intr.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (b *box) sizes(t testing.TB) map[string]Size {
	t.Helper()
	o, err := b.reg.Overview()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]Size{}
	for _, c := range o.Categories {
		m[c.Name] = c.Size
	}
	return m
}

// TestRetentionEveryCategory writes data, lets the fake clock pass every
// category's retention for the old half only, sweeps, and checks that the
// old data are gone, the new kept, the sizes shrank, and the audit chain
// still verifies from its anchor.
func TestRetentionEveryCategory(t *testing.T) {
	b := newBox(t, false, map[string]Policy{"audit": {Days: 90}})
	src := netip.MustParseAddr("198.51.100.7")
	for i := range 3 {
		b.fill(t, "old"+string(rune('0'+i)), "201", "root1", src)
	}
	// CDRs keep 180 days by default: shorten to 30 so this sweep covers them.
	if err := b.reg.Set("root1", "", "cdrs", Policy{Days: 30}); err != nil {
		t.Fatal(err)
	}
	// The intrusion report keeps 180 days by default too.
	if err := b.reg.Set("root1", "", "intrusion", Policy{Days: 30}); err != nil {
		t.Fatal(err)
	}
	// 100 days later: past every retention (audit set to its 90-day floor).
	b.clk.Advance(100 * day)
	if err := b.audit.Record(audit.Event{Actor: "root1", Action: "test.recent"}); err != nil {
		t.Fatal(err)
	}
	before := b.sizes(t)
	headBefore, _ := b.audit.Head()
	res := b.reg.Sweep(b.clk.Now())
	after := b.sizes(t)
	for _, r := range res {
		if r.Error != "" {
			t.Fatalf("sweep %s: %s", r.Category, r.Error)
		}
		if r.Deleted == 0 {
			t.Errorf("%s: nothing deleted", r.Category)
		}
		if after[r.Category].Items >= before[r.Category].Items || after[r.Category].Bytes >= before[r.Category].Bytes {
			t.Errorf("%s: size %+v → %+v, want smaller", r.Category, before[r.Category], after[r.Category])
		}
	}
	// New data arrive after the sweep and are kept by the next one.
	b.fill(t, "new1", "202", "root1", src)
	b.reg.Sweep(b.clk.Now())
	if l, _ := b.cdr.Subject("201"); len(l) != 0 {
		t.Errorf("old call records left: %+v", l)
	}
	if l, _ := b.cdr.Subject("202"); len(l) != 1 {
		t.Errorf("new call record gone: %+v", l)
	}
	if l, _ := b.sec.Subject("201"); len(l) != 0 {
		t.Errorf("old security events left: %+v", l)
	}
	for _, e := range b.sec.Recent(100) {
		if e.User == "201" {
			t.Errorf("old security event left in memory: %+v", e)
		}
	}
	if l, _ := b.conns.Subject("201"); len(l) != 0 {
		t.Errorf("old connection entries left: %+v", l)
	}
	if n, _ := mustCategory(t, b.reg, "intrusion").Find(Subject{Kind: Extension, Value: "201"}); n != 0 {
		t.Errorf("old intrusion report entries left: %d", n)
	}
	if n, _ := mustCategory(t, b.reg, "intrusion").Find(Subject{Kind: Extension, Value: "202"}); n != 1 {
		t.Errorf("new intrusion report entry: %d, want 1", n)
	}
	if l, _ := b.auth.History("root1", 0); len(l) != 1 {
		t.Errorf("login history has %d entries, want the new one", len(l))
	}
	// The audit chain: old entries gone, anchor in place, still verifies
	// (from the start, as a fresh process would, and incrementally).
	an, err := b.audit.Anchor()
	if err != nil || an.Seq == 0 {
		t.Fatalf("no anchor after pruning: %+v %v", an, err)
	}
	if _, err := audit.New(b.db, b.clk).VerifyFull(); err != nil {
		t.Fatalf("chain after retention: %v", err)
	}
	if _, err := b.audit.Verify(); err != nil {
		t.Fatalf("incremental verify after retention: %v", err)
	}
	if h, ok, err := b.audit.HashAt(an.Seq); err != nil || !ok || h != an.Hash {
		t.Errorf("anchor entry %d not answered by HashAt: %v %v", an.Seq, ok, err)
	}
	if h, ok, _ := b.audit.HashAt(headBefore.Seq); !ok || h != headBefore.Hash {
		t.Errorf("the head before the sweep changed")
	}
	if an.Seq >= headBefore.Seq {
		t.Errorf("pruned up to %d, past the recent entry %d", an.Seq, headBefore.Seq)
	}
	if e, _ := b.audit.Query(audit.Filter{Action: "privacy.retention"}); len(e) != 1 || !strings.Contains(e[0].Detail, "cdrs: 3 deleted") {
		t.Errorf("retention not audited with counts: %+v", e)
	}
	// A second sweep finds nothing more, and the chain still holds.
	for _, r := range b.reg.Sweep(b.clk.Now()) {
		if r.Deleted != 0 && r.Category != "audit" {
			t.Errorf("%s: second sweep deleted %d", r.Category, r.Deleted)
		}
	}
	if _, err := audit.New(b.db, b.clk).VerifyFull(); err != nil {
		t.Fatalf("chain after a second sweep: %v", err)
	}
}

// TestAuditAnchorTamper: the sealed anchor is what lets the shortened chain
// verify; editing or deleting it with the disk in hand (no device key) is
// detected, and retention never prunes at or past the licence floor.
func TestAuditAnchorTamper(t *testing.T) {
	b := newBox(t, false, nil)
	for i := range 20 {
		if err := b.audit.Record(audit.Event{Actor: "root1", Action: "test", Detail: string(rune('a' + i))}); err != nil {
			t.Fatal(err)
		}
	}
	b.clk.Advance(400 * day)
	if err := b.audit.Record(audit.Event{Actor: "root1", Action: "test.new"}); err != nil {
		t.Fatal(err)
	}
	n, err := b.audit.Prune(b.clk.Now().Add(-365*day), 10)
	if err != nil || n == 0 {
		t.Fatalf("prune: %d %v", n, err)
	}
	an, _ := b.audit.Anchor()
	if an.Seq != 9 {
		t.Fatalf("pruned up to %d, want 9 (floor 10 kept)", an.Seq)
	}
	if _, err := audit.New(b.db, b.clk).VerifyFull(); err != nil {
		t.Fatal(err)
	}
	// A forged anchor (sealed with another key) does not open.
	forged, _ := json.Marshal(audit.Anchor{Seq: 15, Hash: "00"})
	if err := b.db.Update(func(tx *store.Tx) error { return tx.Put("audit.meta", "anchor", forged) }); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.New(b.db, b.clk).VerifyFull(); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("forged anchor: %v", err)
	}
	if err := b.db.Update(func(tx *store.Tx) error { return tx.Delete("audit.meta", "anchor") }); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.New(b.db, b.clk).VerifyFull(); !errors.Is(err, audit.ErrTampered) {
		t.Fatalf("deleted anchor: %v", err)
	}
}

// TestAnonymisedStorage sets truncate and hash modes and checks the raw
// bbolt file: the full addresses are nowhere in it.
func TestAnonymisedStorage(t *testing.T) {
	b := newBox(t, true, map[string]Policy{
		"connections":   {Days: 30, Anonymise: Truncate},
		"security_log":  {Days: 90, Anonymise: Truncate},
		"login_history": {Days: 14, Anonymise: Hash},
		"intrusion":     {Days: 180, Anonymise: Truncate},
	})
	v4 := netip.MustParseAddr("198.51.100.77")
	v6 := netip.MustParseAddr("2001:db8:1234:5678::9")
	b.fill(t, "a1", "201", "root1", v4)
	b.fill(t, "a2", "201", "nobody", v6)
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	for _, full := range []string{"198.51.100.77", "2001:db8:1234:5678::9", "2001:db8:1234:5678:0:0:0:9"} {
		if bytes.Contains(raw, []byte(full)) {
			t.Errorf("the store file holds the full address %s", full)
		}
	}
	for _, kept := range []string{"198.51.100.0/24", "2001:db8:1234::/48", `"source":"h`, `"k":"198.51.100.0"`, `"k":"2001:db8:1234::"`} {
		if !bytes.Contains(raw, []byte(kept)) {
			t.Errorf("the store file lacks the anonymised form %s", kept)
		}
	}
}

func TestHashKeyRotates(t *testing.T) {
	b := newBox(t, false, map[string]Policy{"connections": {Days: 30, Anonymise: Hash}})
	anon := b.reg.Anonymiser("connections")
	a := netip.MustParseAddr("198.51.100.77")
	now := b.clk.Now()
	h1, h2 := anon(a, now), anon(a, now.Add(time.Hour))
	if h1 != h2 || !strings.HasPrefix(h1, "h") || strings.Contains(h1, "198.51") {
		t.Fatalf("same address, same period: %q %q", h1, h2)
	}
	if anon(netip.MustParseAddr("198.51.100.78"), now) == h1 {
		t.Fatal("two addresses hash alike")
	}
	later := now.Add(31 * day)
	if anon(a, later) == h1 {
		t.Fatal("the key did not rotate with the retention period")
	}
	// Two periods on, the first key is deleted by the sweep.
	b.clk.Advance(61 * day)
	b.reg.Sweep(b.clk.Now())
	first := keyName("connections", periodOf(now, 30))
	var keys []string
	_ = b.db.View(func(tx *store.Tx) error {
		return tx.ForEach(keysBucket, func(k string, _ []byte) error {
			if strings.HasPrefix(k, "connections/") {
				keys = append(keys, k)
			}
			return nil
		})
	})
	if len(keys) > 3 || len(keys) == 0 || keys[0] == first {
		t.Errorf("hash keys after the sweep: %v (first period's %s must be gone; previous, current, next kept)", keys, first)
	}
}

// TestSubjectExportAndForget: find, export and delete everything about an
// extension and about an admin account; the audit entry says what went
// but names neither the subject nor the data.
func TestSubjectExportAndForget(t *testing.T) {
	b := newBox(t, false, nil)
	src := netip.MustParseAddr("192.0.2.10")
	b.fill(t, "s1", "301", "alice", src)
	b.fill(t, "s2", "302", "bob", src)
	b.call(t, "in-1", "+4989555301", "301")

	ext := Subject{Kind: Extension, Value: "301"}
	found, err := b.reg.Find(ext)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, f := range found {
		got[f.Category] = f.Items
	}
	if got["cdrs"] != 2 || got["security_log"] != 1 || got["connections"] != 1 || got["intrusion"] != 1 {
		t.Fatalf("found %v", got)
	}
	ex, err := b.reg.Export("root1", "192.0.2.1", ext)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(ex)
	if !bytes.Contains(js, []byte("+4989555301")) || !bytes.Contains(js, []byte(`"sip.register"`)) {
		t.Fatalf("export lacks the subject's data: %s", js)
	}
	if bytes.Contains(js, []byte("302")) {
		t.Fatalf("export holds another subject's data: %s", js)
	}
	fg, err := b.reg.Forget("root1", "192.0.2.1", ext)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"cdrs", "security_log", "connections", "intrusion"} {
		if n, _ := mustCategory(t, b.reg, c).Find(ext); n != 0 {
			t.Errorf("%s still holds %d items about the subject", c, n)
		}
	}
	if n, _ := mustCategory(t, b.reg, "cdrs").Find(Subject{Kind: Extension, Value: "302"}); n != 1 {
		t.Errorf("another subject's call records went too")
	}
	if n, _ := mustCategory(t, b.reg, "intrusion").Find(Subject{Kind: Extension, Value: "302"}); n != 1 {
		t.Errorf("another subject's intrusion report entry went too")
	}
	// The admin account: login history and connection log; the audit log keeps its entries.
	user := Subject{Kind: User, Value: "alice"}
	fu, err := b.reg.Forget("root1", "192.0.2.1", user)
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, f := range fu.Deleted {
		if f.Category == "audit" && f.Kept {
			kept = true
		}
	}
	if !kept {
		t.Errorf("audit entries not reported as kept: %+v", fu)
	}
	if h, _ := b.auth.History("alice", 0); len(h) != 0 {
		t.Errorf("login history about alice left: %+v", h)
	}
	es, _ := b.audit.Query(audit.Filter{Action: "privacy.forget"})
	if len(es) != 2 {
		t.Fatalf("forget audited %d times, want 2", len(es))
	}
	e := es[0]
	if !strings.Contains(e.Detail, fg.Reference) || !strings.Contains(e.Detail, "cdrs: 2 deleted") || e.Target != "extension" {
		t.Errorf("forget audit entry: %+v", e)
	}
	if strings.Contains(e.Detail+e.Target, "301") || strings.Contains(e.Detail, "+4989") {
		t.Errorf("forget audit entry names the subject or its data: %+v", e)
	}
	// Really deleted: not in the file's bytes either (freed pages zeroed).
	raw, err := os.ReadFile(b.path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("+4989555301")) {
		t.Errorf("the forgotten number is still in the store file's bytes")
	}
	if _, err := b.reg.Export("root1", "", Subject{Kind: "ip", Value: "1"}); !errors.Is(err, ErrSubject) {
		t.Errorf("bad subject kind: %v", err)
	}
	if _, err := b.reg.Forget("root1", "", Subject{Kind: Number, Value: "1'; drop"}); !errors.Is(err, ErrSubject) {
		t.Errorf("bad subject value: %v", err)
	}
}

func mustCategory(t *testing.T, r *Registry, name string) Category {
	c, err := r.category(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSettings(t *testing.T) {
	b := newBox(t, false, nil)
	for _, tc := range []struct {
		name string
		cat  string
		p    Policy
		ok   bool
	}{
		{"cdr keep forever", "cdrs", Policy{Days: 0}, true},
		{"cdr masking", "cdrs", Policy{Days: 180, MaskNumbersAfterDays: 30}, true},
		{"cdr no ip mode", "cdrs", Policy{Days: 180, Anonymise: Hash}, false},
		{"audit too short", "audit", Policy{Days: 30}, false},
		{"login history forever", "login_history", Policy{Days: 0}, false},
		{"login history 7 hashed", "login_history", Policy{Days: 7, Anonymise: Hash}, true},
		{"connections truncate", "connections", Policy{Days: 30, Anonymise: Truncate}, true},
		{"masking where no numbers", "connections", Policy{Days: 30, MaskNumbersAfterDays: 3}, false},
		{"unknown mode", "connections", Policy{Days: 30, Anonymise: "rot13"}, false},
		{"too long", "security_log", Policy{Days: 366}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := b.reg.Policy(tc.cat)
			err := b.reg.Set("root1", "", tc.cat, tc.p)
			if (err == nil) != tc.ok {
				t.Fatalf("Set: %v", err)
			}
			after, _ := b.reg.Policy(tc.cat)
			if !tc.ok && after != before {
				t.Fatalf("a refused setting changed %+v to %+v", before, after)
			}
		})
	}
	// The login history days are the auth policy's too.
	if p, _ := b.auth.Policy(); p.HistoryDays != 7 {
		t.Errorf("auth policy history days %d, want 7", p.HistoryDays)
	}
	if !Deletes(Policy{Days: 0}, Policy{Days: 30}) || !Deletes(Policy{Days: 60}, Policy{Days: 30}) || Deletes(Policy{Days: 30}, Policy{Days: 60}) ||
		!Deletes(Policy{Days: 30}, Policy{Days: 30, MaskNumbersAfterDays: 5}) {
		t.Error("Deletes")
	}
}

func TestCDRMasking(t *testing.T) {
	b := newBox(t, false, nil)
	b.call(t, "m1", "201", "+493012345678")
	b.clk.Advance(10 * day)
	b.call(t, "m2", "201", "+493012345679")
	if err := b.reg.Set("root1", "", "cdrs", Policy{Days: 180, MaskNumbersAfterDays: 7}); err != nil {
		t.Fatal(err)
	}
	res := b.reg.Sweep(b.clk.Now())
	for _, r := range res {
		if r.Category == "cdrs" && r.Masked != 1 {
			t.Fatalf("masked %d records, want 1", r.Masked)
		}
	}
	l, _ := b.cdr.Subject("201")
	if len(l) != 2 || l[0].To != "+xxxxxxxxx678" || !l[0].Masked || l[1].To != "+493012345679" || l[0].From != "201" {
		t.Fatalf("records after masking: %+v", l)
	}
}

// TestIntrusionSubject: the intrusion report's lists name an extension;
// export lists its entries, forget removes them from the store file's
// bytes and keeps the day's totals and the other subjects.
func TestIntrusionSubject(t *testing.T) {
	b := newBox(t, false, nil)
	src := netip.MustParseAddr("192.0.2.10")
	for i, user := range []string{"victim-7781", "victim-7781", "other-5550"} {
		b.intr.Observe(logs.Event{Time: b.clk.Now().Add(time.Duration(i) * time.Minute), Kind: logs.KindAuthFailure,
			Source: netip.AddrPortFrom(src, 5060).String(), User: user})
	}
	b.clk.Advance(day) // yesterday's figures too: one day in memory, one only stored
	b.intr.Observe(logs.Event{Time: b.clk.Now(), Kind: logs.KindAuthFailure, Source: "192.0.2.11:5060", User: "victim-7781"})
	if err := b.intr.Flush(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(b.path)
	if err != nil || !bytes.Contains(raw, []byte("victim-7781")) {
		t.Fatalf("the store file lacks the subject before forget (%v): the check below could not fail", err)
	}
	s := Subject{Kind: Extension, Value: "victim-7781"}
	ex, err := b.reg.Export("root1", "192.0.2.1", s)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(ex.Categories["intrusion"])
	if want := `[{"date":"2026-03-01","list":"extensions","count":2},{"date":"2026-03-02","list":"extensions","count":1}]`; string(js) != want {
		t.Fatalf("export %s, want %s", js, want)
	}
	fg, err := b.reg.Forget("root1", "192.0.2.1", s)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fg.Deleted {
		if f.Category == "intrusion" && f.Items != 2 {
			t.Errorf("intrusion: %d items deleted, want 2", f.Items)
		}
	}
	rep, err := b.intr.Report("2026-03-01", "2026-03-02")
	if err != nil {
		t.Fatal(err)
	}
	if d := rep.Days[0]; d.AuthFailures != 3 || len(d.AttackedExtensions) != 1 || d.AttackedExtensions[0].Key != "other-5550" {
		t.Errorf("day after forget: failures %d, extensions %+v; want 3 and other-5550 only", d.AuthFailures, d.AttackedExtensions)
	}
	if err := b.db.Close(); err != nil {
		t.Fatal(err)
	}
	if raw, err = os.ReadFile(b.path); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("victim-7781")) {
		t.Error("the forgotten extension is still in the store file's bytes")
	}
	if !bytes.Contains(raw, []byte("other-5550")) {
		t.Error("another subject's entry went too")
	}
}
