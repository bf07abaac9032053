package cdr

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

type storeTx = store.Tx

// history writes calls a0..a9 (one a minute from t0, outbound over itsp
// from 100 to 030123, answered when even) plus internal calls b0..b4
// (101 → 102, rejected) in between, in a scrambled order.
func history(t *testing.T, s *Store) {
	t.Helper()
	var recs []Record
	for i := range 10 {
		r := rec(fmt.Sprintf("a%d", i), time.Duration(i)*time.Minute, i%2 == 0)
		recs = append(recs, r)
	}
	for i := range 5 {
		recs = append(recs, Record{ID: fmt.Sprintf("b%d", i), From: "101", To: "102", Dialled: "102", Direction: "internal",
			Start: t0.Add(time.Duration(2*i)*time.Minute + 30*time.Second), End: t0.Add(time.Duration(2*i)*time.Minute + 40*time.Second),
			Result: Rejected, SIPStatus: 403, Cause: "dialplan: class of service"})
	}
	for _, i := range []int{7, 3, 14, 0, 9, 11, 1, 5, 12, 2, 8, 13, 4, 10, 6} {
		if err := s.Write(recs[i]); err != nil {
			t.Fatal(err)
		}
	}
}

func ids(rs []Record) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r.ID)
	}
	return b.String()
}

func TestQuery(t *testing.T) {
	s := openStore(t)
	history(t, s)
	tests := []struct {
		name string
		q    Query
		want string
		more bool
	}{
		{"all newest first", Query{}, "a9 b4 a8 a7 b3 a6 a5 b2 a4 a3 b1 a2 a1 b0 a0", false},
		{"limit", Query{Limit: 3}, "a9 b4 a8", true},
		{"since until", Query{Since: t0.Add(2 * time.Minute), Until: t0.Add(4 * time.Minute)}, "a3 b1 a2", false},
		{"party caller", Query{Party: "101"}, "b4 b3 b2 b1 b0", false},
		{"party callee substring", Query{Party: "0123"}, "a9 a8 a7 a6 a5 a4 a3 a2 a1 a0", false},
		{"party nobody", Query{Party: "999"}, "", false},
		{"trunk", Query{Trunk: "itsp", Limit: 2}, "a9 a8", true},
		{"trunk unknown", Query{Trunk: "its"}, "", false},
		{"result", Query{Result: Answered}, "a8 a6 a4 a2 a0", false},
		{"direction", Query{Direction: "internal", Limit: 5}, "b4 b3 b2 b1 b0", false},
		{"combined", Query{Party: "100", Result: NoAnswer, Until: t0.Add(6 * time.Minute)}, "a5 a3 a1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.Query(tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p.Records); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if (p.Next != "") != tc.more {
				t.Fatalf("next %q, want more=%v", p.Next, tc.more)
			}
		})
	}
}

// TestQueryPages walks every page with the cursor: each record exactly
// once, in order, also with filters, and a write meanwhile of a newer call
// does not shift the pages.
func TestQueryPages(t *testing.T) {
	s := openStore(t)
	history(t, s)
	for _, base := range []Query{{}, {Trunk: "itsp"}, {Result: Rejected}, {Since: t0.Add(3 * time.Minute)}} {
		all, err := s.Query(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, limit := range []int{1, 2, 4, 100} {
			s := openStore(t)
			history(t, s)
			q := base
			q.Limit = limit
			var got []Record
			for pages := 0; ; pages++ {
				if pages > 20 {
					t.Fatal("cursor does not advance")
				}
				p, err := s.Query(q)
				if err != nil {
					t.Fatal(err)
				}
				if len(p.Records) > limit {
					t.Fatalf("page of %d, limit %d", len(p.Records), limit)
				}
				got = append(got, p.Records...)
				if pages == 0 {
					// A call ending between pages is not seen by later pages.
					if err := s.Write(rec("new", time.Hour, true)); err != nil {
						t.Fatal(err)
					}
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
			if ids(got) != ids(all.Records) {
				t.Fatalf("%+v limit %d: pages %q, want %q", base, limit, ids(got), ids(all.Records))
			}
		}
	}
	if _, err := s.Query(Query{Cursor: "not-a-cursor"}); !errors.Is(err, ErrQuery) {
		t.Fatalf("bad cursor: %v", err)
	}
	if _, err := s.Query(Query{Limit: MaxLimit + 1}); !errors.Is(err, ErrQuery) {
		t.Fatalf("limit above max: %v", err)
	}
}

func TestExport(t *testing.T) {
	s := openStore(t)
	history(t, s)
	evil := rec("evil", 30*time.Minute, false)
	evil.From, evil.Cause = "=cmd|' /C calc'!A0", "@SUM(1+1)"
	if err := s.Write(evil); err != nil {
		t.Fatal(err)
	}

	var jb bytes.Buffer
	n, err := s.Export(&jb, FormatJSONLines, Query{Direction: "outbound", Limit: 1, Cursor: "ignored"})
	if err != nil || n != 11 {
		t.Fatalf("jsonl: %d records, %v", n, err)
	}
	sc := bufio.NewScanner(&jb)
	var got []Record
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got = append(got, r)
	}
	if ids(got) != "evil a9 a8 a7 a6 a5 a4 a3 a2 a1 a0" || got[2].Duration != 80*time.Second || got[2].MOS != 4.2 {
		t.Fatalf("jsonl records %q %+v", ids(got), got)
	}

	var cb bytes.Buffer
	if n, err := s.Export(&cb, FormatCSV, Query{Since: t0.Add(8 * time.Minute)}); err != nil || n != 4 {
		t.Fatalf("csv: %d records, %v", n, err)
	}
	rows, err := csv.NewReader(&cb).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 5 || strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		t.Fatalf("csv rows %q", rows)
	}
	if rows[1][0] != "evil" || rows[1][5] != "'=cmd|' /C calc'!A0" || rows[1][12] != "'@SUM(1+1)" {
		t.Fatalf("formula cells not defused: %q", rows[1])
	}
	if rows[4][0] != "a8" || rows[4][4] != "80" || rows[4][10] != "answered" || rows[4][16] != "4.2" || rows[4][2] == "" {
		t.Fatalf("csv row %q", rows[4])
	}
	if _, err := s.Export(&cb, "xml", Query{}); !errors.Is(err, ErrQuery) {
		t.Fatalf("unknown format: %v", err)
	}
}

func TestRetention(t *testing.T) {
	s := openStore(t)
	history(t, s)
	if r, err := s.Retention(); err != nil || r.Days != DefaultRetentionDays {
		t.Fatalf("default retention %+v %v", r, err)
	}
	// Keep forever: nothing goes.
	if err := s.SetRetention(Retention{Days: 0}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ApplyRetention(t0.AddDate(1, 0, 0)); err != nil || n != 0 {
		t.Fatalf("keep forever purged %d, %v", n, err)
	}
	for _, bad := range []int{-1, MaxRetentionDays + 1} {
		if err := s.SetRetention(Retention{Days: bad}); !errors.Is(err, ErrRetention) {
			t.Fatalf("retention %d: %v", bad, err)
		}
	}
	if err := s.SetRetention(Retention{Days: 30}); err != nil {
		t.Fatal(err)
	}
	// 30 days after a4 started: a0..a3, b0, b1 are older.
	n, err := s.ApplyRetention(t0.AddDate(0, 0, 30).Add(4 * time.Minute))
	if err != nil || n != 6 {
		t.Fatalf("purged %d, %v; want 6", n, err)
	}
	p, err := s.Query(Query{})
	if err != nil || ids(p.Records) != "a9 b4 a8 a7 b3 a6 a5 b2 a4" {
		t.Fatalf("left %q %v", ids(p.Records), err)
	}
}

// TestPurgeBatches deletes more than one write transaction's worth.
func TestPurgeBatches(t *testing.T) {
	s := openStore(t)
	const total = purgeBatch*2 + 7
	err := s.db.Update(func(tx *storeTx) error {
		for i := range total {
			r := rec(fmt.Sprintf("c%d", i), time.Duration(i)*time.Second, false)
			if err := tx.Put(bucket, key(r.Start, r.ID), r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n, err := s.Purge(t0.Add((total - 3) * time.Second))
	if err != nil || n != total-3 {
		t.Fatalf("purged %d, %v; want %d", n, err, total-3)
	}
	p, _ := s.Query(Query{})
	if len(p.Records) != 3 {
		t.Fatalf("%d left", len(p.Records))
	}
}

func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want Query
		err  bool
	}{
		{"", Query{}, false},
		{"since=2026-05-01&until=2026-05-01", Query{Since: t0.Add(-9 * time.Hour), Until: t0.Add(15 * time.Hour)}, false},
		{"since=2026-05-01T09:00:00%2B02:00", Query{Since: t0.Add(-2 * time.Hour)}, false},
		{"party=%2B4930&trunk=itsp-1&result=no_answer&direction=inbound&limit=50", Query{Party: "+4930", Trunk: "itsp-1", Result: NoAnswer, Direction: "inbound", Limit: 50}, false},
		{"party=+1001+", Query{Party: "1001"}, false}, // '+' is a space in a query; trimmed
		{"format=csv&party=", Query{}, false},
		{"cursor=" + encodeCursor(key(t0, "x")), Query{Cursor: encodeCursor(key(t0, "x"))}, false},
		{"since=yesterday", Query{}, true},
		{"since=1900-01-01", Query{}, true},
		{"since=2026-05-02&until=2026-05-01", Query{}, true},
		{"party=1001%3Cscript%3E", Query{}, true},
		{"party=" + strings.Repeat("1", 65), Query{}, true},
		{"trunk=a/b", Query{}, true},
		{"result=won", Query{}, true},
		{"direction=sideways", Query{}, true},
		{"limit=0", Query{}, true},
		{"limit=1001", Query{}, true},
		{"limit=ten", Query{}, true},
		{"cursor=AAAA", Query{}, true},
		{"cursor=" + encodeCursor("zzzzzzzzzzzzzzzz/x"), Query{}, true},
		{"cursor=" + encodeCursor(key(t0, "x/y")), Query{}, true},
		{"limit=1&limit=2", Query{}, true},
		{"sort=asc", Query{}, true},
		{"party=" + strings.Repeat("x", 300), Query{}, true},
	}
	for _, tc := range tests {
		v, err := url.ParseQuery(tc.raw)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseQuery(v)
		if tc.err {
			if !errors.Is(err, ErrQuery) {
				t.Errorf("%q: err %v, want ErrQuery", tc.raw, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.raw, err)
			continue
		}
		if !got.Since.Equal(tc.want.Since) || !got.Until.Equal(tc.want.Until) {
			t.Errorf("%q: since %v until %v, want %v %v", tc.raw, got.Since, got.Until, tc.want.Since, tc.want.Until)
		}
		got.Since, got.Until, tc.want.Since, tc.want.Until = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.raw, got, tc.want)
		}
	}
}

// FuzzParseQuery: any query string either parses into a Query the store
// accepts, or is refused with ErrQuery; never a panic.
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"", "since=2026-05-01&until=2026-05-02&party=100&trunk=itsp&result=answered&limit=10",
		"cursor=" + encodeCursor(key(t0, "abc")), "limit=-1", "since=2262-04-12T00:00:00Z", "party=%00", "cursor=%FF%FE"} {
		f.Add(s)
	}
	s := openStore(f)
	if err := s.Write(rec("x", 0, true)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseQuery(v)
		if err != nil {
			if !errors.Is(err, ErrQuery) {
				t.Fatalf("%q: error without ErrQuery: %v", raw, err)
			}
			return
		}
		if q.Limit < 0 || q.Limit > MaxLimit || len(q.Party) > 64 || len(q.Trunk) > 32 {
			t.Fatalf("%q: out of bounds %+v", raw, q)
		}
		if _, err := s.Query(q); err != nil {
			t.Fatalf("%q: parsed query refused by the store: %v", raw, err)
		}
	})
}

// BenchmarkQuery is a filtered newest-first page over 20,000 records.
func BenchmarkQuery(b *testing.B) {
	s := openStore(b)
	err := s.db.Update(func(tx *storeTx) error {
		for i := range 20000 {
			r := rec(fmt.Sprintf("c%d", i), time.Duration(i)*time.Second, i%3 == 0)
			if i%10 == 0 {
				r.From = "1042"
			}
			if err := tx.Put(bucket, key(r.Start, r.ID), r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, q := range []Query{{Limit: 100}, {Party: "1042", Result: Answered, Limit: 100}} {
		b.Run(fmt.Sprintf("party=%s", q.Party), func(b *testing.B) {
			for b.Loop() {
				if p, err := s.Query(q); err != nil || len(p.Records) != 100 {
					b.Fatal(len(p.Records), err)
				}
			}
		})
	}
}
