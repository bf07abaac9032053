// Package recording stores what the box records (voicemail, call
// recordings) encrypted at rest, enforces retention and a disk quota, and
// turns a leg's RTP into a recording (jitter buffer, decode, concealment,
// re-encode, seal).
//
// File format (version 1), all integers big-endian:
//
//	header   "EPBXREC" 0x01 | key id (8) | salt (32) | chunk size (4)
//	chunk*   length (4, top bit = final) | AES-256-GCM ciphertext
//
// The file key is HKDF-SHA256(data key, salt, "edgepbx recording v1"): a
// fresh random salt per file, so every file has its own key and the GCM
// nonce can be the chunk counter. The nonce is the 64-bit chunk index and
// the final flag; the additional data is the whole header. Reordered,
// dropped, duplicated or appended chunks, a cut file, a changed header or
// a flipped final bit all fail authentication. Chunk 0 holds the metadata
// (so even the codec and the label are not readable without the key);
// audio follows; the final chunk may be empty. Deleting a file overwrites
// its salt first: without it the file key cannot be derived again, even
// from blocks the file system did not reuse yet.
package recording

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	magic      = "EPBXREC\x01"
	headerSize = 8 + 8 + 32 + 4
	saltOffset = 16
	hkdfInfo   = "edgepbx recording v1"
	finalBit   = 1 << 31
	// DefaultChunkSize is 1 s of G.711 or G.722: the most a crash loses.
	DefaultChunkSize = 8000
	maxChunkSize     = 1 << 20
	maxMetaString    = 256
)

// Errors of the reader. Every error a Reader returns wraps one of these.
var (
	ErrFormat    = errors.New("recording: not a recording file")
	ErrKey       = errors.New("recording: sealed under an unknown key")
	ErrAuth      = errors.New("recording: authentication failed (damaged or tampered)")
	ErrTruncated = errors.New("recording: ends without its final chunk (cut short)")
	ErrTrailing  = errors.New("recording: data after the final chunk")
)

// KeyID names a data key without revealing it.
type KeyID [8]byte

// Keys supplies the data keys recordings are sealed under. The box's
// key hierarchy (init/keys) has a "media" purpose; edgepbxd receives it
// from PID 1 at start and wraps it in StaticKey. A rotation would return a
// new Current and keep the old ones for Lookup.
type Keys interface {
	Current() (KeyID, []byte, error)
	Lookup(KeyID) ([]byte, error)
}

// StaticKey is a Keys of one 32-byte data key.
func StaticKey(key []byte) (Keys, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("recording: data key of %d bytes, want 32", len(key))
	}
	k := staticKey{key: append([]byte(nil), key...)}
	sum := sha256.Sum256(append([]byte("edgepbx media key id\x00"), key...))
	copy(k.id[:], sum[:])
	return k, nil
}

type staticKey struct {
	id  KeyID
	key []byte
}

func (k staticKey) Current() (KeyID, []byte, error) { return k.id, k.key, nil }
func (k staticKey) Lookup(id KeyID) ([]byte, error) {
	if id != k.id {
		return nil, ErrKey
	}
	return k.key, nil
}

// Meta describes a recording; it is stored encrypted in chunk 0.
type Meta struct {
	Codec      string    // rtpmap name of the stored audio: PCMU, PCMA, G722
	SampleRate int       // PCM rate of that codec
	Created    time.Time // start of the recording
	Category   string    // retention category (voicemail, call, ...)
	Label      string    // free text for the UI (mailbox, parties), at most 256 bytes
}

func (m Meta) marshal() ([]byte, error) {
	for _, s := range []string{m.Codec, m.Category, m.Label} {
		if len(s) > maxMetaString {
			return nil, fmt.Errorf("recording: metadata string of %d bytes, limit %d", len(s), maxMetaString)
		}
	}
	out := []byte{1} // meta version
	out = binary.BigEndian.AppendUint32(out, uint32(m.SampleRate))
	out = binary.BigEndian.AppendUint64(out, uint64(m.Created.UnixNano()))
	for _, s := range []string{m.Codec, m.Category, m.Label} {
		out = binary.BigEndian.AppendUint16(out, uint16(len(s)))
		out = append(out, s...)
	}
	return out, nil
}

func unmarshalMeta(b []byte) (Meta, error) {
	bad := fmt.Errorf("%w: malformed metadata", ErrFormat)
	if len(b) < 13 || b[0] != 1 {
		return Meta{}, bad
	}
	m := Meta{
		SampleRate: int(binary.BigEndian.Uint32(b[1:5])),
		Created:    time.Unix(0, int64(binary.BigEndian.Uint64(b[5:13]))).UTC(),
	}
	b = b[13:]
	var strs [3]string
	for i := range strs {
		if len(b) < 2 {
			return Meta{}, bad
		}
		n := int(binary.BigEndian.Uint16(b))
		if n > maxMetaString || len(b) < 2+n {
			return Meta{}, bad
		}
		strs[i] = string(b[2 : 2+n])
		b = b[2+n:]
	}
	if len(b) != 0 {
		return Meta{}, bad
	}
	m.Codec, m.Category, m.Label = strs[0], strs[1], strs[2]
	return m, nil
}

func fileAEAD(key, salt []byte) (cipher.AEAD, error) {
	fk, err := hkdf.Key(sha256.New, key, salt, hkdfInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("recording: derive file key: %w", err)
	}
	block, err := aes.NewCipher(fk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func nonce(dst *[12]byte, index uint64, final bool) {
	binary.BigEndian.PutUint64(dst[:8], index)
	var f uint32
	if final {
		f = 1
	}
	binary.BigEndian.PutUint32(dst[8:], f)
}

// Writer seals a recording as it is written. Not safe for concurrent use.
type Writer struct {
	w         io.Writer
	aead      cipher.AEAD
	header    []byte
	index     uint64
	buf       []byte // plaintext of the chunk being filled
	chunkSize int
	out       []byte
	closed    bool
	err       error
}

// NewWriter writes the header and the metadata chunk to w and returns a
// Writer for the audio. chunkSize 0 means DefaultChunkSize.
func NewWriter(w io.Writer, keys Keys, meta Meta, chunkSize int) (*Writer, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < 64 || chunkSize > maxChunkSize {
		return nil, fmt.Errorf("recording: chunk size %d outside 64..%d", chunkSize, maxChunkSize)
	}
	id, key, err := keys.Current()
	if err != nil {
		return nil, fmt.Errorf("recording: media key: %w", err)
	}
	mb, err := meta.marshal()
	if err != nil {
		return nil, err
	}
	hdr := make([]byte, 0, headerSize)
	hdr = append(hdr, magic...)
	hdr = append(hdr, id[:]...)
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	hdr = append(hdr, salt...)
	hdr = binary.BigEndian.AppendUint32(hdr, uint32(chunkSize))
	aead, err := fileAEAD(key, salt)
	if err != nil {
		return nil, err
	}
	wr := &Writer{w: w, aead: aead, header: hdr, chunkSize: chunkSize,
		buf: make([]byte, 0, chunkSize), out: make([]byte, 0, 4+chunkSize+aead.Overhead())}
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("recording: write header: %w", err)
	}
	if err := wr.seal(mb, false); err != nil {
		return nil, err
	}
	return wr, nil
}

func (w *Writer) seal(plain []byte, final bool) error {
	var n [12]byte
	nonce(&n, w.index, final)
	w.index++
	w.out = w.out[:4]
	w.out = w.aead.Seal(w.out, n[:], plain, w.header)
	l := uint32(len(w.out) - 4)
	if final {
		l |= finalBit
	}
	binary.BigEndian.PutUint32(w.out, l)
	if _, err := w.w.Write(w.out); err != nil {
		if errors.Is(err, ErrQuota) && !final {
			// Refused before anything was written: the chunk's index is
			// free again, so Close can still end the file cleanly.
			w.index--
		}
		w.err = fmt.Errorf("recording: write chunk %d: %w", w.index, err)
		return w.err
	}
	return nil
}

// Write buffers audio bytes and seals every full chunk.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.closed {
		return 0, errors.New("recording: write after close")
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), w.chunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == w.chunkSize {
			if err := w.seal(w.buf, false); err != nil {
				return n - len(p), err
			}
			w.buf = w.buf[:0]
		}
	}
	return n, nil
}

// Close seals the buffered rest as the final chunk. It does not close the
// underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if errors.Is(w.err, ErrQuota) {
		// Stopped by the quota: the audio up to the refused chunk is
		// kept, and the file gets its (empty) final chunk.
		return w.seal(nil, true)
	}
	if w.err != nil {
		return w.err
	}
	return w.seal(w.buf, true)
}

// Reader opens a sealed recording. Read returns only authenticated audio;
// a cut file yields its audio and then ErrTruncated instead of io.EOF.
type Reader struct {
	r      *bufio.Reader
	aead   cipher.AEAD
	header []byte
	meta   Meta
	max    int
	index  uint64
	plain  []byte // the unread rest of the current chunk
	pbuf   []byte // backing store of plain
	ct     []byte
	done   bool
	err    error
}

// NewReader reads and checks the header and the metadata chunk.
func NewReader(r io.Reader, keys Keys) (*Reader, error) {
	br := bufio.NewReaderSize(r, 32<<10)
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(br, hdr); err != nil {
		return nil, fmt.Errorf("%w: short header", ErrFormat)
	}
	if string(hdr[:8]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	var id KeyID
	copy(id[:], hdr[8:16])
	key, err := keys.Lookup(id)
	if err != nil {
		return nil, fmt.Errorf("%w: key id %x", ErrKey, id)
	}
	cs := int(binary.BigEndian.Uint32(hdr[48:52]))
	if cs < 64 || cs > maxChunkSize {
		return nil, fmt.Errorf("%w: chunk size %d", ErrFormat, cs)
	}
	aead, err := fileAEAD(key, hdr[saltOffset:saltOffset+32])
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: br, aead: aead, header: hdr, max: cs + aead.Overhead()}
	mb, final, err := rd.next()
	if err != nil {
		return nil, err
	}
	if final {
		return nil, fmt.Errorf("%w: no audio chunk", ErrFormat)
	}
	if rd.meta, err = unmarshalMeta(mb); err != nil {
		return nil, err
	}
	return rd, nil
}

// Meta returns the recording's metadata.
func (r *Reader) Meta() Meta { return r.meta }

// next reads and opens one chunk.
func (r *Reader) next() ([]byte, bool, error) {
	var lb [4]byte
	if _, err := io.ReadFull(r.r, lb[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, ErrTruncated
		}
		return nil, false, fmt.Errorf("%w: chunk %d: %v", ErrTruncated, r.index, err)
	}
	l := binary.BigEndian.Uint32(lb[:])
	final := l&finalBit != 0
	l &^= finalBit
	if int(l) > r.max || int(l) < r.aead.Overhead() {
		return nil, false, fmt.Errorf("%w: chunk %d of %d bytes", ErrAuth, r.index, l)
	}
	if cap(r.ct) < int(l) {
		r.ct = make([]byte, l)
	}
	r.ct = r.ct[:l]
	if _, err := io.ReadFull(r.r, r.ct); err != nil {
		return nil, false, fmt.Errorf("%w: chunk %d cut", ErrTruncated, r.index)
	}
	var n [12]byte
	nonce(&n, r.index, final)
	plain, err := r.aead.Open(r.pbuf[:0], n[:], r.ct, r.header)
	if err != nil {
		return nil, false, fmt.Errorf("%w: chunk %d", ErrAuth, r.index)
	}
	r.pbuf = plain
	r.index++
	return plain, final, nil
}

// Read returns decrypted audio bytes.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		plain, final, err := r.next()
		if err != nil {
			r.err = err
			r.plain = r.plain[:0]
			return 0, err
		}
		r.plain = plain
		if final {
			r.done = true
			if _, err := r.r.ReadByte(); err == nil {
				r.err = ErrTrailing // checked before the last audio is handed out
				r.plain = r.plain[:0]
				return 0, r.err
			}
		}
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}
