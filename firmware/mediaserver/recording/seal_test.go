package recording

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

func testKeys(t testing.TB) Keys {
	t.Helper()
	k := make([]byte, 32)
	for i := range k {
		k[i] = byte(i * 7)
	}
	keys, err := StaticKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func seal(t testing.TB, keys Keys, data []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, keys, Meta{Codec: "PCMU", SampleRate: 8000, Created: time.Unix(1700000000, 5), Category: "voicemail", Label: "box 201"}, chunk)
	if err != nil {
		t.Fatal(err)
	}
	// Uneven writes across chunk boundaries.
	for off := 0; off < len(data); {
		n := min(len(data)-off, 1+off%97)
		if _, err := w.Write(data[off : off+n]); err != nil {
			t.Fatal(err)
		}
		off += n
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(keys Keys, file []byte) ([]byte, Meta, error) {
	r, err := NewReader(bytes.NewReader(file), keys)
	if err != nil {
		return nil, Meta{}, err
	}
	out, err := io.ReadAll(r)
	return out, r.Meta(), err
}

func TestSealRoundTrip(t *testing.T) {
	keys := testKeys(t)
	for _, n := range []int{0, 1, 63, 64, 65, 1000, 4096} {
		data := make([]byte, n)
		rand.Read(data)
		file := seal(t, keys, data, 64)
		got, meta, err := open(keys, file)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes: %v (got %d bytes)", n, err, len(got))
		}
		want := Meta{Codec: "PCMU", SampleRate: 8000, Created: time.Unix(1700000000, 5).UTC(), Category: "voicemail", Label: "box 201"}
		if meta != want {
			t.Errorf("meta %+v, want %+v", meta, want)
		}
	}
}

// chunks splits a sealed file into its header and chunk records.
func chunks(file []byte) ([]byte, [][]byte) {
	hdr := file[:headerSize]
	var out [][]byte
	for rest := file[headerSize:]; len(rest) > 0; {
		l := int(binary.BigEndian.Uint32(rest) &^ finalBit)
		out = append(out, rest[:4+l])
		rest = rest[4+l:]
	}
	return hdr, out
}

func join(hdr []byte, cs ...[]byte) []byte {
	out := append([]byte(nil), hdr...)
	for _, c := range cs {
		out = append(out, c...)
	}
	return out
}

// Every kind of tampering is detected; none yields different audio.
func TestSealTamper(t *testing.T) {
	keys := testKeys(t)
	data := make([]byte, 300)
	rand.Read(data)
	file := seal(t, keys, data, 100) // meta, 3 full audio chunks, empty final
	hdr, cs := chunks(file)
	if len(cs) != 5 {
		t.Fatalf("%d chunks", len(cs))
	}
	other, _ := StaticKey(make([]byte, 32))
	cases := []struct {
		name string
		file []byte
		keys Keys
		want error
	}{
		{"wrong key", file, other, ErrKey},
		{"magic", flip(file, 0), keys, ErrFormat},
		{"key id", flip(file, 9), keys, ErrKey},
		{"salt", flip(file, 20), keys, ErrAuth},
		{"chunk size", flip(file, 51), keys, ErrAuth},
		{"ciphertext", flip(file, headerSize+len(cs[0])+10), keys, ErrAuth},
		{"tag", flip(file, headerSize+len(cs[0])+len(cs[1])-1), keys, ErrAuth},
		{"final bit set early", join(hdr, cs[0], setFinal(cs[1])), keys, ErrAuth},
		{"final bit cleared", join(hdr, cs[0], cs[1], cs[2], cs[3], clearFinal(cs[4])), keys, ErrAuth},
		{"reordered", join(hdr, cs[0], cs[2], cs[1], cs[3], cs[4]), keys, ErrAuth},
		{"chunk dropped", join(hdr, cs[0], cs[1], cs[3], cs[4]), keys, ErrAuth},
		{"chunk repeated", join(hdr, cs[0], cs[1], cs[1], cs[2], cs[3], cs[4]), keys, ErrAuth},
		{"cut at a chunk boundary", join(hdr, cs[0], cs[1], cs[2]), keys, ErrTruncated},
		{"cut inside a chunk", file[:len(file)-5], keys, ErrTruncated},
		{"appended", append(append([]byte(nil), file...), 0), keys, ErrTrailing},
		{"final repeated", join(hdr, cs[0], cs[1], cs[2], cs[3], cs[4], cs[4]), keys, ErrTrailing},
		{"header only", hdr, keys, ErrTruncated},
		{"huge length", join(hdr, []byte{0x7f, 0xff, 0xff, 0xff}), keys, ErrAuth},
		{"chunk from another file", join(hdr, cs[0], firstAudio(t, keys)), keys, ErrAuth},
	}
	for _, c := range cases {
		got, _, err := open(c.keys, c.file)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if !bytes.HasPrefix(data, got) {
			t.Errorf("%s: returned audio that was never written", c.name)
		}
	}
}

func firstAudio(t *testing.T, keys Keys) []byte {
	_, cs := chunks(seal(t, keys, make([]byte, 100), 100))
	return cs[1]
}

func flip(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x01
	return out
}

func setFinal(c []byte) []byte {
	out := append([]byte(nil), c...)
	out[0] |= 0x80
	return out
}

func clearFinal(c []byte) []byte {
	out := append([]byte(nil), c...)
	out[0] &^= 0x80
	return out
}

func TestStaticKey(t *testing.T) {
	if _, err := StaticKey(make([]byte, 16)); err == nil {
		t.Error("16-byte key accepted")
	}
	a, _ := StaticKey(bytes.Repeat([]byte{1}, 32))
	b, _ := StaticKey(bytes.Repeat([]byte{2}, 32))
	ia, _, _ := a.Current()
	ib, _, _ := b.Current()
	if ia == ib {
		t.Error("two keys share an id")
	}
	if _, err := NewWriter(io.Discard, a, Meta{Label: string(make([]byte, 300))}, 0); err == nil {
		t.Error("300-byte label accepted")
	}
	// Writes after a failing writer report the error.
	w, err := NewWriter(&failAfter{n: headerSize + 100}, a, Meta{}, 64)
	if err != nil {
		t.Fatal(err)
	}
	var werr error
	for range 10 {
		if _, werr = w.Write(make([]byte, 64)); werr != nil {
			break
		}
	}
	if werr == nil || w.Close() == nil {
		t.Error("write error not reported")
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}
