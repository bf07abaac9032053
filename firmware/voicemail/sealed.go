package voicemail

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// SealedFiles stores audio as AES-256-GCM chunks under a data key (the
// media key of init/keys): a file is useless without the key, a chunk
// cannot be moved, reordered, dropped from the end or moved to another
// file (its place and the file's path are in the associated data).
//
// Layout: magic "EPVM1\n", rate (uint32), nonce prefix (8 random bytes),
// then chunks of uint32 length + ciphertext. The last chunk is sealed as
// last, so a truncated file does not open.
type SealedFiles struct {
	aead cipher.AEAD
	// MaxBytes bounds a file read back (default 32 MiB: > 3 min at 16 kHz).
	MaxBytes int64
}

const (
	sealedMagic = "EPVM1\n"
	chunkPCM    = 8000 // samples per chunk
)

// ErrSealed wraps every file that does not open.
var ErrSealed = errors.New("voicemail: sealed audio does not open")

// NewSealedFiles uses a 32-byte key.
func NewSealedFiles(key []byte) (*SealedFiles, error) {
	if len(key) != 32 {
		return nil, errors.New("voicemail: audio key must be 32 bytes")
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &SealedFiles{aead: a, MaxBytes: 32 << 20}, nil
}

func (f *SealedFiles) nonce(prefix []byte, n uint32) []byte {
	nonce := make([]byte, 12)
	copy(nonce, prefix)
	binary.BigEndian.PutUint32(nonce[8:], n)
	return nonce
}

func chunkAD(path string, n uint32, last bool) []byte {
	return []byte("edgepbx voicemail v1|" + filepath.Base(path) + "|" + strconv.FormatUint(uint64(n), 10) + "|" + strconv.FormatBool(last))
}

// Create implements Audio.
func (f *SealedFiles) Create(path string, rate int) (AudioWriter, error) {
	if rate <= 0 || rate > 48000 {
		return nil, fmt.Errorf("voicemail: rate %d", rate)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".rec-*")
	if err != nil {
		return nil, err
	}
	w := &sealedWriter{f: f, path: path, tmp: tmp, bw: bufio.NewWriter(tmp), prefix: make([]byte, 8)}
	if _, err := rand.Read(w.prefix); err != nil {
		w.Abort()
		return nil, err
	}
	hdr := append([]byte(sealedMagic), 0, 0, 0, 0)
	binary.BigEndian.PutUint32(hdr[len(sealedMagic):], uint32(rate))
	hdr = append(hdr, w.prefix...)
	if _, err := w.bw.Write(hdr); err != nil {
		w.Abort()
		return nil, err
	}
	return w, nil
}

type sealedWriter struct {
	f      *SealedFiles
	path   string
	tmp    *os.File
	bw     *bufio.Writer
	prefix []byte
	n      uint32
	buf    []int16
	err    error
}

func (w *sealedWriter) Write(pcm []int16) error {
	if w.err != nil {
		return w.err
	}
	w.buf = append(w.buf, pcm...)
	for len(w.buf) > chunkPCM { // keep at least one sample for the last chunk
		w.seal(w.buf[:chunkPCM], false)
		w.buf = append(w.buf[:0], w.buf[chunkPCM:]...)
	}
	return w.err
}

func (w *sealedWriter) seal(pcm []int16, last bool) {
	if w.err != nil {
		return
	}
	plain := make([]byte, 2*len(pcm))
	for i, v := range pcm {
		binary.LittleEndian.PutUint16(plain[2*i:], uint16(v))
	}
	ct := w.f.aead.Seal(nil, w.f.nonce(w.prefix, w.n), plain, chunkAD(w.path, w.n, last))
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(ct)))
	if _, err := w.bw.Write(l[:]); err != nil {
		w.err = err
		return
	}
	if _, err := w.bw.Write(ct); err != nil {
		w.err = err
	}
	w.n++
}

func (w *sealedWriter) Close() error {
	w.seal(w.buf, true)
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	if w.err == nil {
		w.err = w.tmp.Sync()
	}
	if err := w.tmp.Close(); w.err == nil {
		w.err = err
	}
	if w.err == nil {
		w.err = os.Rename(w.tmp.Name(), w.path)
	}
	if w.err != nil {
		os.Remove(w.tmp.Name())
		return w.err
	}
	if d, err := os.Open(filepath.Dir(w.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (w *sealedWriter) Abort() {
	w.tmp.Close()
	os.Remove(w.tmp.Name())
	w.err = errors.New("aborted")
}

// Read implements Audio.
func (f *SealedFiles) Read(path string) (int, []int16, error) {
	fh, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer fh.Close()
	return f.decode(io.LimitReader(fh, f.MaxBytes+1), path)
}

// decode reads a sealed file from r; path is its name as sealed.
func (f *SealedFiles) decode(r io.Reader, path string) (int, []int16, error) {
	br := bufio.NewReader(r)
	hdr := make([]byte, len(sealedMagic)+4+8)
	if _, err := io.ReadFull(br, hdr); err != nil || string(hdr[:len(sealedMagic)]) != sealedMagic {
		return 0, nil, fmt.Errorf("%w: header", ErrSealed)
	}
	rate := int(binary.BigEndian.Uint32(hdr[len(sealedMagic):]))
	if rate <= 0 || rate > 48000 {
		return 0, nil, fmt.Errorf("%w: rate", ErrSealed)
	}
	prefix := hdr[len(sealedMagic)+4:]
	var pcm []int16
	var total int64
	maxCT := int64(2*chunkPCM + f.aead.Overhead())
	for n := uint32(0); ; n++ {
		var l [4]byte
		if _, err := io.ReadFull(br, l[:]); err != nil {
			return 0, nil, fmt.Errorf("%w: truncated", ErrSealed)
		}
		size := int64(binary.BigEndian.Uint32(l[:]))
		total += size + 4
		if size < int64(f.aead.Overhead()) || size > maxCT || total > f.MaxBytes {
			return 0, nil, fmt.Errorf("%w: chunk size", ErrSealed)
		}
		ct := make([]byte, size)
		if _, err := io.ReadFull(br, ct); err != nil {
			return 0, nil, fmt.Errorf("%w: truncated", ErrSealed)
		}
		last := false
		plain, err := f.aead.Open(nil, f.nonce(prefix, n), ct, chunkAD(path, n, false))
		if err != nil {
			plain, err = f.aead.Open(nil, f.nonce(prefix, n), ct, chunkAD(path, n, true))
			last = true
		}
		if err != nil || len(plain)%2 != 0 {
			return 0, nil, fmt.Errorf("%w: chunk %d", ErrSealed, n)
		}
		for i := 0; i < len(plain); i += 2 {
			pcm = append(pcm, int16(binary.LittleEndian.Uint16(plain[i:])))
		}
		if last {
			if _, err := br.ReadByte(); err != io.EOF {
				return 0, nil, fmt.Errorf("%w: data after the last chunk", ErrSealed)
			}
			return rate, pcm, nil
		}
	}
}
