package backup

import (
	"bytes"
	"encoding/binary"
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
	// The same with two recordings after the bucket (format 2): one of
	// two chunks, one empty.
	audio := bytes.Repeat([]byte{0xd5, 0x55}, 700)
	mh := newMediaHash("voicemail/1-0123456789abcdef.rec")
	mh.Write(audio)
	empty := newMediaHash("call/2-0123456789abcdef.rec")
	m.Format = FormatMedia
	m.Media = []MediaInfo{
		{ID: "call/2-0123456789abcdef.rec", Category: "call", Codec: "G722", SampleRate: 16000,
			Created: m.Created, Bytes: 0, SHA256: empty.sum()},
		{ID: "voicemail/1-0123456789abcdef.rec", Category: "voicemail", Codec: "PCMA", SampleRate: 8000,
			Created: m.Created, Label: "201", Bytes: int64(len(audio)), SHA256: mh.sum()},
	}
	var media bytes.Buffer
	if err := writeHeader(&media, m); err != nil {
		f.Fatal(err)
	}
	media.Write(frame([]byte("k1"), []byte(`{"a":1}`)))
	media.Write(frame([]byte("k2"), []byte(`"x"`)))
	media.Write([]byte{0, 0, 2, 0})
	media.Write(audio[:512])
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(audio)-512))
	media.Write(l[:])
	media.Write(audio[512:])
	f.Add(media.Bytes())
	f.Add(media.Bytes()[:media.Len()-7])
	if pm, err := ParseMedia(bytes.NewReader(media.Bytes()), DefaultLimits(), nil, nil); err != nil || len(pm.Media) != 2 {
		f.Fatalf("media seed does not parse: %v", err)
	}
	f.Add([]byte(magic + "\x00\x00\x00\x02{}"))
	f.Add([]byte("garbage"))
	lim := DefaultLimits()
	lim.MaxValueBytes, lim.MaxKeys, lim.MaxDataBytes = 1024, 16, 4096
	lim.MaxMediaFiles, lim.MaxMediaFileBytes, lim.MaxMediaBytes = 4, 4096, 8192
	f.Fuzz(func(t *testing.T, data []byte) {
		var n int64
		got := map[string]int64{}
		ends := map[string]bool{}
		m, err := ParseMedia(bytes.NewReader(data), lim, func(b, k string, v []byte) error {
			n++
			if len(k) == 0 || len(k) > lim.MaxKeyBytes || len(v) > lim.MaxValueBytes {
				t.Fatalf("record outside limits: %q %d", k, len(v))
			}
			return nil
		}, func(mi *MediaInfo, chunk []byte, end bool) error {
			if ends[mi.ID] {
				t.Fatalf("recording %s after its end", mi.ID)
			}
			if end {
				if got[mi.ID] != mi.Bytes {
					t.Fatalf("recording %s ended at %d of %d bytes", mi.ID, got[mi.ID], mi.Bytes)
				}
				ends[mi.ID] = true
				return nil
			}
			if len(chunk) == 0 || len(chunk) > maxMediaChunk {
				t.Fatalf("chunk of %d bytes", len(chunk))
			}
			if got[mi.ID] += int64(len(chunk)); got[mi.ID] > lim.MaxMediaFileBytes {
				t.Fatalf("recording %s beyond the limit", mi.ID)
			}
			return nil
		})
		if err == nil {
			if len(ends) != len(m.Media) {
				t.Fatalf("manifest lists %d recordings, parser ended %d", len(m.Media), len(ends))
			}
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
