package backup

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// The plaintext inside the age stream:
//
//	"EDGEPBX-BACKUP\n"
//	u32 length, manifest JSON (strict)
//	for each bucket of the manifest, in order, Keys records of
//	    u16 key length, key, u32 value length, value
//	for each recording of the manifest's media (format 2 only), in order,
//	    chunks of u32 length (1-maxMediaChunk), audio, summing to its bytes
//	end of stream (a trailing byte is an error)
//
// Keys are strictly increasing inside a bucket (bbolt's order), so a
// duplicate cannot overwrite a value validated before it. Each bucket's
// SHA-256 covers its name and its framed records; a recording's covers its
// id and its audio (the codec's bytes, not sealed: the age stream is the
// only encryption, so the backup restores under another box's media key).
const (
	magic = "EDGEPBX-BACKUP\n"
	// FormatVersion is the layout above without media; a parser refuses
	// any other than it and FormatMedia.
	FormatVersion = 1
	// FormatMedia is the layout with recordings after the buckets; a
	// firmware that predates it refuses such a backup by its version.
	FormatMedia = 2
	// FormatMusic is either layout with the music-on-hold records
	// (musicBucket) among the buckets. A firmware that predates it would
	// otherwise restore those records into its store as an unknown bucket
	// (up to 256 MiB nobody reads); by the version it refuses the backup
	// and says why.
	FormatMusic   = 3
	maxManifest   = 1 << 20
	maxMediaChunk = 64 << 10
)

// Limits bound what a backup may hold; a file outside them is refused
// before anything changes. The same limits apply when a backup is made, so
// a box never writes a backup it would refuse to restore.
type Limits struct {
	MaxFileBytes   int64 // the encrypted file
	MaxDataBytes   int64 // sum of keys and values
	MaxBuckets     int
	MaxKeys        int64 // per bucket
	MaxKeyBytes    int
	MaxValueBytes  int
	MaxTotalKeys   int64
	MaxNameLength  int
	MaxFieldLength int
	// MaxRemoteFiles bounds a listing of a remote target (all entries of
	// the directory or under the prefix, backups or not): a target that
	// answers without end is refused.
	MaxRemoteFiles int
	// Recordings (voicemail, call recordings) of a backup with media.
	MaxMediaFiles     int
	MaxMediaFileBytes int64
	MaxMediaBytes     int64
}

// DefaultLimits fit a box with 1 million CDRs and some headroom.
func DefaultLimits() Limits {
	return Limits{
		MaxFileBytes:   2 << 30,
		MaxDataBytes:   2 << 30,
		MaxBuckets:     256,
		MaxKeys:        8 << 20,
		MaxKeyBytes:    1024,
		MaxValueBytes:  8 << 20,
		MaxTotalKeys:   16 << 20,
		MaxNameLength:  64,
		MaxFieldLength: 128,
		MaxRemoteFiles: 100_000,
		// 30 min of G.722 is 14.4 MB; call recordings may run longer.
		MaxMediaFiles:     100_000,
		MaxMediaFileBytes: 64 << 20,
		MaxMediaBytes:     2 << 30,
	}
}

// Refusals. Every one of them is returned before the store changes.
var (
	ErrFormat     = errors.New("backup: not a valid backup")
	ErrCorrupt    = errors.New("backup: content does not match its manifest")
	ErrTooLarge   = errors.New("backup: exceeds a size limit")
	ErrSchema     = errors.New("backup: schema not compatible with this firmware")
	ErrWrongKey   = errors.New("backup: wrong key or passphrase")
	ErrNoKey      = errors.New("backup: no backup key configured")
	ErrBoxLocal   = errors.New("backup: holds data that belongs to a box, never restored")
	ErrBadRequest = errors.New("backup: invalid request")
)

// Manifest describes a backup. It travels inside the encryption, so it is
// as confidential and as tamper-evident as the data.
type Manifest struct {
	Format    int          `json:"format"`
	Serial    string       `json:"serial"`
	InstallID string       `json:"install_id"`
	Firmware  string       `json:"firmware"`
	Schema    int          `json:"schema"`
	Created   time.Time    `json:"created"`
	Buckets   []BucketInfo `json:"buckets"`
	Media     []MediaInfo  `json:"media,omitempty"`
}

// MediaInfo is one recording's entry in the manifest: its id (kept on
// restore, so the voicemail records that name it find it), its metadata
// and the size and hash of its audio.
type MediaInfo struct {
	ID         string    `json:"id"`
	Category   string    `json:"category"`
	Codec      string    `json:"codec"`
	SampleRate int       `json:"sample_rate"`
	Created    time.Time `json:"created"`
	Label      string    `json:"label"`
	Bytes      int64     `json:"bytes"`
	SHA256     string    `json:"sha256"`
}

// BucketInfo is one bucket's entry in the manifest.
type BucketInfo struct {
	Name   string `json:"name"`
	Keys   int64  `json:"keys"`
	Bytes  int64  `json:"bytes"` // keys plus values
	SHA256 string `json:"sha256"`
}

var (
	nameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)
	fieldRE = regexp.MustCompile(`^[A-Za-z0-9._+-]*$`)
)

func (m *Manifest) validate(lim Limits) error {
	if m.Format != FormatVersion && m.Format != FormatMedia && m.Format != FormatMusic {
		return fmt.Errorf("%w: format version %d, this firmware reads %d, %d and %d", ErrFormat, m.Format, FormatVersion, FormatMedia, FormatMusic)
	}
	if m.Format != FormatMusic && slices.ContainsFunc(m.Buckets, func(b BucketInfo) bool { return b.Name == musicBucket }) {
		return fmt.Errorf("%w: format version %d with music-on-hold records", ErrFormat, m.Format)
	}
	if m.Format == FormatVersion && len(m.Media) > 0 {
		return fmt.Errorf("%w: format version %d with media", ErrFormat, m.Format)
	}
	for name, v := range map[string]string{"serial": m.Serial, "install_id": m.InstallID, "firmware": m.Firmware} {
		if v == "" || len(v) > lim.MaxFieldLength || !fieldRE.MatchString(v) {
			return fmt.Errorf("%w: manifest field %s is empty, too long or has characters outside A-Z a-z 0-9 . _ + -", ErrFormat, name)
		}
	}
	if m.Schema < 1 {
		return fmt.Errorf("%w: manifest field schema %d", ErrFormat, m.Schema)
	}
	if m.Created.IsZero() {
		return fmt.Errorf("%w: manifest field created is missing", ErrFormat)
	}
	if len(m.Buckets) > lim.MaxBuckets {
		return fmt.Errorf("%w: %d buckets (max %d)", ErrTooLarge, len(m.Buckets), lim.MaxBuckets)
	}
	var keys, bytes int64
	prev := ""
	for i, b := range m.Buckets {
		if len(b.Name) > lim.MaxNameLength || !nameRE.MatchString(b.Name) {
			return fmt.Errorf("%w: manifest field buckets[%d].name %q", ErrFormat, i, b.Name)
		}
		if b.Name <= prev {
			return fmt.Errorf("%w: manifest field buckets[%d].name %q out of order or repeated", ErrFormat, i, b.Name)
		}
		prev = b.Name
		if b.Keys < 0 || b.Bytes < 0 {
			return fmt.Errorf("%w: manifest bucket %s: negative size", ErrFormat, b.Name)
		}
		if b.Keys > lim.MaxKeys {
			return fmt.Errorf("%w: bucket %s has %d keys (max %d)", ErrTooLarge, b.Name, b.Keys, lim.MaxKeys)
		}
		if sum, err := hex.DecodeString(b.SHA256); err != nil || len(sum) != sha256.Size {
			return fmt.Errorf("%w: manifest field buckets[%d].sha256", ErrFormat, i)
		}
		keys += b.Keys
		bytes += b.Bytes
		if keys > lim.MaxTotalKeys || bytes > lim.MaxDataBytes {
			return fmt.Errorf("%w: %d keys, %d bytes (max %d keys, %d bytes)", ErrTooLarge, keys, bytes, lim.MaxTotalKeys, lim.MaxDataBytes)
		}
	}
	return validateMedia(m.Media, lim)
}

// bucketHash accumulates one bucket's framed records.
type bucketHash struct {
	name  string
	h     hashWriter
	keys  int64
	bytes int64
}

type hashWriter interface {
	io.Writer
	Sum([]byte) []byte
}

func newBucketHash(name string) *bucketHash {
	h := sha256.New()
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(name)))
	h.Write(l[:])
	h.Write([]byte(name))
	return &bucketHash{name: name, h: h}
}

func frame(key, val []byte) []byte {
	out := make([]byte, 0, 6+len(key)+len(val))
	out = binary.BigEndian.AppendUint16(out, uint16(len(key)))
	out = append(out, key...)
	out = binary.BigEndian.AppendUint32(out, uint32(len(val)))
	return append(out, val...)
}

func (b *bucketHash) add(key, val []byte) {
	var hdr [6]byte
	binary.BigEndian.PutUint16(hdr[:2], uint16(len(key)))
	b.h.Write(hdr[:2])
	b.h.Write(key)
	binary.BigEndian.PutUint32(hdr[2:], uint32(len(val)))
	b.h.Write(hdr[2:])
	b.h.Write(val)
	b.keys++
	b.bytes += int64(len(key) + len(val))
}

func (b *bucketHash) info() BucketInfo {
	return BucketInfo{Name: b.name, Keys: b.keys, Bytes: b.bytes, SHA256: hex.EncodeToString(b.h.Sum(nil))}
}

// writeHeader writes the magic and the manifest.
func writeHeader(w io.Writer, m *Manifest) error {
	raw, err := jsonMarshal(m)
	if err != nil {
		return err
	}
	if len(raw) > maxManifest {
		return fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(raw))
	}
	var l [4]byte
	binary.BigEndian.PutUint32(l[:], uint32(len(raw)))
	if _, err := io.WriteString(w, magic); err != nil {
		return err
	}
	if _, err := w.Write(l[:]); err != nil {
		return err
	}
	_, err = w.Write(raw)
	return err
}

// RecordFunc receives each record of a backup; val is only valid during the
// call.
type RecordFunc func(bucket, key string, val []byte) error

// Parse reads a decrypted backup strictly: the manifest, then every record,
// checking each bucket's count, size and hash and that nothing follows. fn
// sees records before their bucket's hash is checked, so a caller that
// changes anything must run Parse once to validate and again to apply
// (inside a transaction that the second run's error rolls back).
func Parse(r io.Reader, lim Limits, fn RecordFunc) (*Manifest, error) {
	return ParseMedia(r, lim, fn, nil)
}

// ParseMedia is Parse that also hands each recording's audio to mfn (nil:
// checked and skipped): chunk by chunk, then once with end set after its
// size and hash matched the manifest. As with fn, a caller that changes
// anything validates with a first run.
func ParseMedia(r io.Reader, lim Limits, fn RecordFunc, mfn MediaFunc) (*Manifest, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head := make([]byte, len(magic)+4)
	if _, err := io.ReadFull(br, head); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrFormat, err)
	}
	if string(head[:len(magic)]) != magic {
		return nil, fmt.Errorf("%w: bad magic", ErrFormat)
	}
	n := binary.BigEndian.Uint32(head[len(magic):])
	if n > maxManifest {
		return nil, fmt.Errorf("%w: manifest of %d bytes (max %d)", ErrTooLarge, n, maxManifest)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, fmt.Errorf("%w: manifest: %w", ErrFormat, err)
	}
	var m Manifest
	if err := strictjson.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrFormat, err)
	}
	if err := m.validate(lim); err != nil {
		return nil, err
	}
	key := make([]byte, 0, lim.MaxKeyBytes)
	val := make([]byte, 0, 4096)
	var hdr [4]byte
	for _, b := range m.Buckets {
		bh := newBucketHash(b.Name)
		var prev []byte
		for i := int64(0); i < b.Keys; i++ {
			if _, err := io.ReadFull(br, hdr[:2]); err != nil {
				return nil, fmt.Errorf("%w: bucket %s record %d: %w", ErrCorrupt, b.Name, i, err)
			}
			kl := int(binary.BigEndian.Uint16(hdr[:2]))
			if kl == 0 || kl > lim.MaxKeyBytes {
				return nil, fmt.Errorf("%w: bucket %s record %d: key of %d bytes (1-%d)", ErrTooLarge, b.Name, i, kl, lim.MaxKeyBytes)
			}
			key = key[:kl]
			if _, err := io.ReadFull(br, key); err != nil {
				return nil, fmt.Errorf("%w: bucket %s record %d: %w", ErrCorrupt, b.Name, i, err)
			}
			if prev != nil && bytes.Compare(key, prev) <= 0 {
				return nil, fmt.Errorf("%w: bucket %s record %d: keys out of order or repeated", ErrCorrupt, b.Name, i)
			}
			prev = append(prev[:0], key...)
			if _, err := io.ReadFull(br, hdr[:4]); err != nil {
				return nil, fmt.Errorf("%w: bucket %s record %d: %w", ErrCorrupt, b.Name, i, err)
			}
			vl := binary.BigEndian.Uint32(hdr[:4])
			if vl > uint32(lim.MaxValueBytes) {
				return nil, fmt.Errorf("%w: bucket %s record %d: value of %d bytes (max %d)", ErrTooLarge, b.Name, i, vl, lim.MaxValueBytes)
			}
			if bh.bytes+int64(kl)+int64(vl) > b.Bytes {
				return nil, fmt.Errorf("%w: bucket %s is larger than its manifest says", ErrCorrupt, b.Name)
			}
			if cap(val) < int(vl) {
				val = make([]byte, vl)
			}
			val = val[:vl]
			if _, err := io.ReadFull(br, val); err != nil {
				return nil, fmt.Errorf("%w: bucket %s record %d: %w", ErrCorrupt, b.Name, i, err)
			}
			bh.add(key, val)
			if fn != nil {
				if err := fn(b.Name, string(key), val); err != nil {
					return nil, err
				}
			}
		}
		if got := bh.info(); got != b {
			return nil, fmt.Errorf("%w: bucket %s (%d keys, %d bytes, hash %.12s… against %d, %d, %.12s…)",
				ErrCorrupt, b.Name, got.Keys, got.Bytes, got.SHA256, b.Keys, b.Bytes, b.SHA256)
		}
	}
	if err := parseMedia(br, m.Media, mfn); err != nil {
		return nil, err
	}
	if _, err := br.ReadByte(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("%w: end: %w", ErrCorrupt, err)
		}
		return nil, fmt.Errorf("%w: data after the last bucket", ErrCorrupt)
	}
	return &m, nil
}
