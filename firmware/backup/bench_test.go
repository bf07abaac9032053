package backup

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
)

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// benchBox is a box with 1,000 extensions and EDGEPBX_BENCH_CDRS call
// records (default 1,000,000), written in large transactions in cdr's key
// layout (cdr.Write commits one record per transaction).
func benchBox(b *testing.B) *box {
	b.Helper()
	n := 1_000_000
	if v := os.Getenv("EDGEPBX_BENCH_CDRS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	bx := newBox(b, "BENCH1")
	ext, err := sipedge.LoadExtensions(bx.db, realm)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 1000 {
		if err := ext.Set(strconv.Itoa(1000+i), "bench-password-"+strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	const batch = 50_000
	for i := 0; i < n; i += batch {
		err := bx.db.Update(func(tx *store.Tx) error {
			for j := i; j < min(i+batch, n); j++ {
				st := start.Add(time.Duration(j) * 30 * time.Second)
				r := cdr.Record{ID: fmt.Sprintf("%032x", j), From: strconv.Itoa(1000 + j%1000), To: "+4930123456" + strconv.Itoa(j%100),
					Dialled: "004930123456" + strconv.Itoa(j%100), Direction: "outbound", Trunk: "itsp", Start: st,
					Answer: st.Add(3 * time.Second), End: st.Add(90 * time.Second), Duration: 87 * time.Second,
					Result: cdr.Answered, Cause: "caller BYE", Codec: "PCMA", SRTPCaller: true, MOS: 4.3}
				raw, err := json.Marshal(r)
				if err != nil {
					return err
				}
				if err := tx.PutRaw("cdr.records", fmt.Sprintf("%016x/%s", uint64(st.UnixNano()), r.ID), raw); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return bx
}

// BenchmarkBackup reports the time and size of one backup (to an X25519
// recipient) and of its restore into another box.
func BenchmarkBackup(b *testing.B) {
	src := benchBox(b)
	fi, err := os.Stat(src.db.Path())
	if err != nil {
		b.Fatal(err)
	}
	id, _, err := src.backup.GenerateKey(Actor{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("write", func(b *testing.B) {
		var size int64
		for b.Loop() {
			var cw countWriter
			if _, err := src.backup.Write(&cw, Encryption{}); err != nil {
				b.Fatal(err)
			}
			size = cw.n
		}
		b.ReportMetric(float64(size)/(1<<20), "backup-MiB")
		b.ReportMetric(float64(fi.Size())/(1<<20), "db-MiB")
	})
	path := filepath.Join(b.TempDir(), "bench.age")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := src.backup.Write(f, Encryption{}); err != nil {
		b.Fatal(err)
	}
	f.Close()
	dst := newBox(b, "BENCH2")
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			if _, err := dst.backup.Restore(path, Decryption{Identity: id}, Actor{Name: "bench"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("inspect", func(b *testing.B) {
		for b.Loop() {
			if _, err := dst.backup.Inspect(path, Decryption{Identity: id}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
