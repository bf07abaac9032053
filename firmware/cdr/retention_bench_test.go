package cdr

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// fillRecords writes n answered-call records, one a minute from start,
// in large transactions (Write's one transaction per call would make the
// setup, not the sweep, the slow part).
func fillRecords(tb testing.TB, s *Store, start time.Time, n int) {
	tb.Helper()
	const batch = 20000
	for i := 0; i < n; i += batch {
		err := s.db.Update(func(tx *store.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				t := start.Add(time.Duration(j) * time.Minute)
				r := Record{ID: fmt.Sprintf("call-%07d", j), From: "201", To: "+4930123456" + fmt.Sprint(j%10), Dialled: "004930123456",
					Direction: "outbound", Start: t, Answer: t.Add(5 * time.Second), End: t.Add(65 * time.Second), Duration: time.Minute,
					Result: Answered, Codec: "PCMA", MOS: 4.3}
				if err := tx.Put(bucket, key(r.Start, r.ID), r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkRetentionSweep1M is the retention sweep of one million call
// records, all past the retention (one op = deleting all of them in
// batches of purgeBatch per transaction); scrub-s is the zeroing of the
// freed pages that follows (firmware/privacy runs it after a sweep that
// deleted something). Run with -benchtime=1x.
func BenchmarkRetentionSweep1M(b *testing.B) {
	const n = 1_000_000
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := openStore(b)
		fillRecords(b, s, start, n)
		before, _ := s.db.Pages()
		b.StartTimer()
		got, err := s.Purge(start.Add(n * time.Minute))
		b.StopTimer()
		if err != nil || got != n {
			b.Fatalf("purged %d, %v", got, err)
		}
		t0 := time.Now()
		sc, err := s.db.Scrub()
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "scrub-s")
		b.ReportMetric(float64(sc.Zeroed), "pages-zeroed")
		after, _ := s.db.Pages()
		size, _ := s.db.BucketSize(bucket)
		if size.Keys != 0 {
			b.Fatalf("%d records left", size.Keys)
		}
		b.ReportMetric(float64(before.InUse), "pages-in-use-before")
		b.ReportMetric(float64(after.InUse), "pages-in-use-after")
		b.ReportMetric(float64(after.Free+after.Pending), "pages-free-after")
	}
}
