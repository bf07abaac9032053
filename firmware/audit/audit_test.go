package audit

import (
	"bytes"
	"crypto/rand"
	"encoding/csv"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

type fixedClock struct{ t time.Time }

func (c *fixedClock) Now() time.Time { return c.t }

func openLog(t *testing.T) (*Log, *store.DB, *fixedClock) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "t.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &fixedClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return New(db, clk), db, clk
}

func fill(t *testing.T, l *Log, clk *fixedClock, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		clk.t = clk.t.Add(time.Minute)
		ev := Event{Actor: "alice", Source: "192.0.2.1", Action: "account.update", Target: "bob",
			Before: map[string]any{"role": "operator", "n": i}, After: map[string]any{"role": "admin", "note": "<b>&"}}
		if i%2 == 1 {
			ev.Actor, ev.Action, ev.Outcome = "mallory", "auth.login", Denied
		}
		if err := l.Record(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestChainVerifies(t *testing.T) {
	l, _, clk := openLog(t)
	if _, err := l.Verify(); err != nil {
		t.Fatalf("empty chain: %v", err)
	}
	fill(t, l, clk, 10)
	res, err := l.Verify()
	if err != nil || res.Entries != 10 {
		t.Fatalf("Verify = %+v, %v", res, err)
	}
}

func TestTamperDetected(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(tx *store.Tx) error
	}{
		{"edit field", func(tx *store.Tx) error {
			var e Entry
			tx.Get(logBucket, seqKey(4), &e)
			e.Actor = "someone-else"
			return tx.Put(logBucket, seqKey(4), e)
		}},
		{"edit and rehash one entry", func(tx *store.Tx) error {
			var e Entry
			tx.Get(logBucket, seqKey(4), &e)
			e.Outcome = OK
			e.Hash, _ = e.digest()
			return tx.Put(logBucket, seqKey(4), e)
		}},
		{"delete middle", func(tx *store.Tx) error { return tx.Delete(logBucket, seqKey(5)) }},
		{"delete tail", func(tx *store.Tx) error { return tx.Delete(logBucket, seqKey(10)) }},
		{"delete head record", func(tx *store.Tx) error { return tx.Delete(metaBucket, headKey) }},
		{"swap entries", func(tx *store.Tx) error {
			var a, b Entry
			tx.Get(logBucket, seqKey(2), &a)
			tx.Get(logBucket, seqKey(3), &b)
			a.Seq, b.Seq = 3, 2
			tx.Put(logBucket, seqKey(3), a)
			return tx.Put(logBucket, seqKey(2), b)
		}},
		{"change redacted detail", func(tx *store.Tx) error {
			var e Entry
			tx.Get(logBucket, seqKey(1), &e)
			e.After = json.RawMessage(`{"role":"operator"}`)
			return tx.Put(logBucket, seqKey(1), e)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, db, clk := openLog(t)
			fill(t, l, clk, 10)
			if err := db.Update(tc.tamper); err != nil {
				t.Fatal(err)
			}
			if _, err := l.Verify(); !errors.Is(err, ErrTampered) {
				t.Fatalf("Verify after tamper = %v, want ErrTampered", err)
			}
		})
	}
}

func TestRedaction(t *testing.T) {
	l, _, _ := openLog(t)
	err := l.Record(Event{Actor: "a", Action: "x", After: map[string]any{
		"password": "hunter2hunter2", "nested": map[string]any{"TOTPSecret": "JBSWY3DP", "ok": "visible"},
		"list": []any{map[string]any{"api_token": "t0k"}}}})
	if err != nil {
		t.Fatal(err)
	}
	es, _ := l.Query(Filter{})
	s := string(es[0].After)
	for _, secret := range []string{"hunter2", "JBSWY3DP", "t0k"} {
		if strings.Contains(s, secret) {
			t.Errorf("secret %q in log: %s", secret, s)
		}
	}
	if !strings.Contains(s, "visible") {
		t.Errorf("non-secret dropped: %s", s)
	}
}

func TestFilterAndExport(t *testing.T) {
	l, _, clk := openLog(t)
	start := clk.t
	fill(t, l, clk, 10)
	tests := []struct {
		f    Filter
		want int
	}{
		{Filter{}, 10},
		{Filter{Actor: "mallory"}, 5},
		{Filter{Action: "auth."}, 5},
		{Filter{Outcome: Denied}, 5},
		{Filter{Since: start.Add(6 * time.Minute)}, 5},
		{Filter{Until: start.Add(3 * time.Minute)}, 2},
		{Filter{Limit: 3}, 3},
		{Filter{Actor: "nobody"}, 0},
	}
	for _, tc := range tests {
		got, err := l.Query(tc.f)
		if err != nil || len(got) != tc.want {
			t.Errorf("Query(%+v) = %d entries, %v; want %d", tc.f, len(got), err, tc.want)
		}
	}
	last, _ := l.Query(Filter{Limit: 1})
	if last[0].Seq != 10 {
		t.Errorf("Limit keeps newest, got seq %d", last[0].Seq)
	}

	var jl bytes.Buffer
	if err := l.Export(&jl, FormatJSONLines, Filter{Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(jl.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("jsonl lines = %d", len(lines))
	}
	var e Entry
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e.Actor != "alice" {
		t.Fatalf("jsonl line: %v %+v", err, e)
	}
	if d, _ := e.digest(); d != e.Hash {
		t.Errorf("exported entry does not verify")
	}

	l.Record(Event{Actor: "=cmd|' /C calc'!A0", Action: "auth.login"})
	var cb bytes.Buffer
	if err := l.Export(&cb, FormatCSV, Filter{}); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&cb).ReadAll()
	if err != nil || len(recs) != 12 {
		t.Fatalf("csv: %d records, %v", len(recs), err)
	}
	if got := recs[11][2]; !strings.HasPrefix(got, "'=") {
		t.Errorf("formula not neutralised: %q", got)
	}
	if err := l.Export(&cb, "xml", Filter{}); !errors.Is(err, ErrFormat) {
		t.Errorf("xml export err = %v", err)
	}
}

func TestFieldsBounded(t *testing.T) {
	l, _, _ := openLog(t)
	l.Record(Event{Actor: strings.Repeat("a", 10000), Action: "x\xff", After: map[string]string{"big": strings.Repeat("z", 100000)}})
	es, _ := l.Query(Filter{})
	if len(es[0].Actor) > maxField+4 || len(es[0].After) > maxChange {
		t.Errorf("fields not bounded: actor %d after %d", len(es[0].Actor), len(es[0].After))
	}
	if _, err := l.Verify(); err != nil {
		t.Fatal(err)
	}
}
