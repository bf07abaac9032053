package backup

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// MediaFunc receives a recording's audio: chunk by chunk (valid only
// during the call), then end with a nil chunk once its hash matched.
type MediaFunc func(info *MediaInfo, chunk []byte, end bool) error

const maxLabel = 256

func validateMedia(media []MediaInfo, lim Limits) error {
	if len(media) > lim.MaxMediaFiles {
		return fmt.Errorf("%w: %d recordings (max %d)", ErrTooLarge, len(media), lim.MaxMediaFiles)
	}
	var total int64
	prev := ""
	for i, mi := range media {
		cat, err := recording.CheckID(mi.ID)
		if err != nil || len(mi.ID) > lim.MaxKeyBytes {
			return fmt.Errorf("%w: manifest field media[%d].id %q", ErrFormat, i, mi.ID)
		}
		if mi.ID <= prev {
			return fmt.Errorf("%w: manifest field media[%d].id %q out of order or repeated", ErrFormat, i, mi.ID)
		}
		prev = mi.ID
		if mi.Category != cat {
			return fmt.Errorf("%w: manifest field media[%d].category %q does not match its id", ErrFormat, i, mi.Category)
		}
		c, err := codec.New(mi.Codec)
		if err != nil || c.Name() != mi.Codec || c.SampleRate() != mi.SampleRate {
			return fmt.Errorf("%w: manifest field media[%d]: codec %q at %d Hz", ErrFormat, i, mi.Codec, mi.SampleRate)
		}
		if mi.Created.IsZero() || len(mi.Label) > maxLabel {
			return fmt.Errorf("%w: manifest field media[%d]: created missing or label over %d bytes", ErrFormat, i, maxLabel)
		}
		if sum, err := hex.DecodeString(mi.SHA256); err != nil || len(sum) != sha256.Size {
			return fmt.Errorf("%w: manifest field media[%d].sha256", ErrFormat, i)
		}
		if mi.Bytes < 0 || mi.Bytes > lim.MaxMediaFileBytes {
			return fmt.Errorf("%w: recording %s of %d bytes (max %d)", ErrTooLarge, mi.ID, mi.Bytes, lim.MaxMediaFileBytes)
		}
		if total += mi.Bytes; total > lim.MaxMediaBytes {
			return fmt.Errorf("%w: recordings of more than %d bytes", ErrTooLarge, lim.MaxMediaBytes)
		}
	}
	return nil
}

// mediaHash is the SHA-256 of a recording's id and audio.
type mediaHash struct {
	h     hashWriter
	bytes int64
}

func newMediaHash(id string) *mediaHash {
	h := sha256.New()
	var l [2]byte
	binary.BigEndian.PutUint16(l[:], uint16(len(id)))
	h.Write(l[:])
	h.Write([]byte(id))
	return &mediaHash{h: h}
}

func (m *mediaHash) Write(p []byte) (int, error) {
	m.bytes += int64(len(p))
	return m.h.Write(p)
}

func (m *mediaHash) sum() string { return hex.EncodeToString(m.h.Sum(nil)) }

// writeMediaChunks frames audio from r as chunks into w and returns the
// hash and size written.
func writeMediaChunks(w io.Writer, id string, r io.Reader) (string, int64, error) {
	mh := newMediaHash(id)
	buf := make([]byte, 4+maxMediaChunk)
	for {
		n, err := io.ReadFull(r, buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf[:4], uint32(n))
			mh.Write(buf[4 : 4+n])
			if _, werr := w.Write(buf[:4+n]); werr != nil {
				return "", 0, werr
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return mh.sum(), mh.bytes, nil
		}
		if err != nil {
			return "", 0, err
		}
	}
}

func parseMedia(br *bufio.Reader, media []MediaInfo, mfn MediaFunc) error {
	buf := make([]byte, maxMediaChunk)
	var hdr [4]byte
	for i := range media {
		mi := &media[i]
		mh := newMediaHash(mi.ID)
		for mh.bytes < mi.Bytes {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return fmt.Errorf("%w: recording %s: %w", ErrCorrupt, mi.ID, err)
			}
			n := int64(binary.BigEndian.Uint32(hdr[:]))
			if n == 0 || n > maxMediaChunk || mh.bytes+n > mi.Bytes {
				return fmt.Errorf("%w: recording %s: chunk of %d bytes (1-%d, %d left)", ErrCorrupt, mi.ID, n, maxMediaChunk, mi.Bytes-mh.bytes)
			}
			if _, err := io.ReadFull(br, buf[:n]); err != nil {
				return fmt.Errorf("%w: recording %s: %w", ErrCorrupt, mi.ID, err)
			}
			mh.Write(buf[:n])
			if mfn != nil {
				if err := mfn(mi, buf[:n], false); err != nil {
					return err
				}
			}
		}
		if got := mh.sum(); got != mi.SHA256 {
			return fmt.Errorf("%w: recording %s (hash %.12s… against %.12s…)", ErrCorrupt, mi.ID, got, mi.SHA256)
		}
		if mfn != nil {
			if err := mfn(mi, nil, true); err != nil {
				return err
			}
		}
	}
	return nil
}
