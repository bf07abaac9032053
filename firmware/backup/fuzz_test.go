package backup

import (
	"bytes"
	"testing"
	"time"
)

// FuzzParse feeds the decrypted-format parser arbitrary bytes: it must
// return a manifest or an error, never panic, and never hand fn a record
// outside the limits.
func FuzzParse(f *testing.F) {
	var good bytes.Buffer
	m := &Manifest{Format: FormatVersion, Serial: "S1", InstallID: "i1", Firmware: "1.0", Schema: 1,
		Created: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	bh := newBucketHash("cdr.records")
	bh.add([]byte("k1"), []byte(`{"a":1}`))
	bh.add([]byte("k2"), []byte(`"x"`))
	m.Buckets = []BucketInfo{bh.info()}
	if err := writeHeader(&good, m); err != nil {
		f.Fatal(err)
	}
	good.Write(frame([]byte("k1"), []byte(`{"a":1}`)))
	good.Write(frame([]byte("k2"), []byte(`"x"`)))
	f.Add(good.Bytes())
	f.Add(good.Bytes()[:len(good.Bytes())-3])
	f.Add([]byte(magic + "\x00\x00\x00\x02{}"))
	f.Add([]byte("garbage"))
	lim := DefaultLimits()
	lim.MaxValueBytes, lim.MaxKeys, lim.MaxDataBytes = 1024, 16, 4096
	f.Fuzz(func(t *testing.T, data []byte) {
		var n int64
		m, err := Parse(bytes.NewReader(data), lim, func(b, k string, v []byte) error {
			n++
			if len(k) == 0 || len(k) > lim.MaxKeyBytes || len(v) > lim.MaxValueBytes {
				t.Fatalf("record outside limits: %q %d", k, len(v))
			}
			return nil
		})
		if err == nil {
			var keys int64
			for _, b := range m.Buckets {
				keys += b.Keys
			}
			if keys != n {
				t.Fatalf("manifest says %d keys, parser gave %d", keys, n)
			}
		}
	})
}
