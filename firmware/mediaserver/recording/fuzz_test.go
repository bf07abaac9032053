package recording

import (
	"bytes"
	"io"
	"testing"
)

// FuzzReader: arbitrary files, and valid files with arbitrary bytes XORed
// in, never panic, never allocate past the chunk bound, and never return
// audio that was not sealed.
func FuzzReader(f *testing.F) {
	keys := testKeys(f)
	data := bytes.Repeat([]byte("sealed audio "), 40)
	valid := seal(f, keys, data, 100)
	f.Add([]byte{}, 0)
	f.Add([]byte{1}, headerSize+10)
	f.Add(valid, 0)
	f.Fuzz(func(t *testing.T, mask []byte, at int) {
		// Mode 1: the input as a file of its own.
		if r, err := NewReader(bytes.NewReader(mask), keys); err == nil {
			io.Copy(io.Discard, r)
		}
		// Mode 2: the valid file with the input XORed in at an offset, or
		// cut there when the mask is empty.
		file := append([]byte(nil), valid...)
		if at < 0 {
			at = -at
		}
		at %= len(file) + 1
		if len(mask) == 0 {
			file = file[:at]
		}
		for i, m := range mask {
			if at+i < len(file) {
				file[at+i] ^= m
			}
		}
		r, err := NewReader(bytes.NewReader(file), keys)
		if err != nil {
			return
		}
		got, err := io.ReadAll(r)
		if !bytes.HasPrefix(data, got) {
			t.Fatalf("returned audio that was never sealed")
		}
		if err == nil && !bytes.Equal(got, data) {
			t.Fatalf("changed file read without error")
		}
	})
}
