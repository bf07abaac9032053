package cdr

import (
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

func openStore(t testing.TB) *Store {
	t.Helper()
	return New(storetest.Open(t, make([]byte, 32)))
}

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

func rec(id string, start time.Duration, answered bool) Record {
	r := Record{ID: id, From: "100", To: "030123", Dialled: "030123", Direction: "outbound", Trunk: "itsp",
		Start: t0.Add(start), End: t0.Add(start + 90*time.Second), Result: NoAnswer, SIPStatus: 480,
		Codec: "PCMA/8000", SRTPCaller: true}
	if answered {
		r.Result, r.SIPStatus, r.Answer, r.MOS, r.Cause = Answered, 0, t0.Add(start+10*time.Second), 4.2, "caller BYE"
	}
	return r
}

func TestWriteAndRange(t *testing.T) {
	s := openStore(t)
	for i, r := range []Record{rec("c", 2*time.Hour, true), rec("a", 0, true), rec("b", time.Hour, false), rec("d", 3*time.Hour, false)} {
		if err := s.Write(r); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	tests := []struct {
		from, to time.Duration
		limit    int
		want     string
	}{
		{0, 4 * time.Hour, 0, "abcd"},
		{time.Hour, 3 * time.Hour, 0, "bc"}, // end exclusive
		{30 * time.Minute, 5 * time.Hour, 2, "bc"},
		{5 * time.Hour, 6 * time.Hour, 0, ""},
	}
	for _, tc := range tests {
		got, err := s.Range(t0.Add(tc.from), t0.Add(tc.to), tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var ids string
		for _, r := range got {
			ids += r.ID
		}
		if ids != tc.want {
			t.Errorf("range %v–%v: %q, want %q", tc.from, tc.to, ids, tc.want)
		}
	}
	got, _ := s.Range(t0, t0.Add(time.Minute), 0)
	if len(got) != 1 || got[0].Duration != 80*time.Second || got[0].MOS != 4.2 || !got[0].SRTPCaller || got[0].Codec != "PCMA/8000" {
		t.Fatalf("record %+v", got)
	}
}

func TestWriteRejectsAndClips(t *testing.T) {
	s := openStore(t)
	bad := []func(*Record){
		func(r *Record) { r.ID = "" },
		func(r *Record) { r.ID = "a/b" },
		func(r *Record) { r.End = r.Start.Add(-time.Second) },
		func(r *Record) { r.Result = "maybe" },
		func(r *Record) { r.Answer = time.Time{} }, // answered without answer time
		func(r *Record) { r.Answer = r.End.Add(time.Second) },
		func(r *Record) { r.MOS = -1 },
	}
	for i, f := range bad {
		r := rec("x", 0, true)
		f(&r)
		if err := s.Write(r); err == nil {
			t.Errorf("case %d accepted", i)
		}
	}
	r := rec("long", 0, false)
	r.From = strings.Repeat("é", 200) + "\xff"
	if err := s.Write(r); err != nil {
		t.Fatal(err)
	}
	got, _ := s.Range(t0, t0.Add(time.Minute), 0)
	if len(got) != 1 || len(got[0].From) > maxField {
		t.Fatalf("not clipped: %d bytes", len(got[0].From))
	}
}
