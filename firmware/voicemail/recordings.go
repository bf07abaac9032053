package voicemail

import (
	"errors"
	"fmt"
	"io"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
)

// Category is the recordings category of voicemail (its retention and
// quota are the recording store's).
const Category = "voicemail"

// maxAudioBytes bounds a message read back: 10 min of 64 kbit/s audio.
const maxAudioBytes = 10 * 60 * 8000

// Recordings stores voicemail audio in the media engine's recording
// store: sealed at rest under the media data key (AES-256-GCM chunks, a
// per-file key, crypto-erasing delete), inside its quota. Audio is kept
// as G.711 A-law (8 kHz legs) or G.722 (16 kHz legs).
type Recordings struct {
	Store *recording.Store
}

func storageCodec(rate int) (codec.Codec, error) {
	switch rate {
	case 8000:
		return codec.New("PCMA")
	case 16000:
		return codec.New("G722")
	}
	return nil, fmt.Errorf("voicemail: no storage codec for %d Hz", rate)
}

// Create implements Audio.
func (r Recordings) Create(label string, rate int) (AudioWriter, error) {
	c, err := storageCodec(rate)
	if err != nil {
		return nil, err
	}
	f, err := r.Store.Create(Category, recording.Meta{Codec: c.Name(), SampleRate: rate, Label: label})
	if err != nil {
		return nil, err
	}
	return &recWriter{s: r.Store, f: f, c: c}, nil
}

type recWriter struct {
	s   *recording.Store
	f   *recording.File
	c   codec.Codec
	buf []byte
}

func (w *recWriter) ID() string { return w.f.ID() }

func (w *recWriter) Write(pcm []int16) error {
	w.buf = w.c.Encode(w.buf[:0], pcm)
	_, err := w.f.Write(w.buf)
	return err
}

func (w *recWriter) Close() error { return w.f.Close() }

func (w *recWriter) Abort() {
	_ = w.f.Close()
	_ = w.s.Delete(w.f.ID())
}

// Read implements Audio.
func (r Recordings) Read(id string) (int, []int16, error) {
	rc, err := r.Store.Open(id)
	if errors.Is(err, recording.ErrNotFound) {
		return 0, nil, fmt.Errorf("%w: %w", ErrAudioGone, err)
	}
	if err != nil {
		return 0, nil, err
	}
	defer rc.Close()
	m := rc.Meta()
	c, err := codec.New(m.Codec)
	if err != nil || c.SampleRate() != m.SampleRate {
		return 0, nil, fmt.Errorf("voicemail: recording %s: codec %q at %d Hz", id, m.Codec, m.SampleRate)
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxAudioBytes+1))
	if err != nil {
		return 0, nil, err
	}
	if len(b) > maxAudioBytes {
		return 0, nil, fmt.Errorf("voicemail: recording %s longer than a message may be", id)
	}
	return m.SampleRate, c.Decode(make([]int16, 0, 2*len(b)), b), nil
}

// Remove implements Audio: the recording is crypto-erased.
func (r Recordings) Remove(id string) error { return r.Store.Delete(id) }

// Stored implements Audio.
func (r Recordings) Stored() map[string]bool {
	out := map[string]bool{}
	for _, e := range r.Store.List(Category) {
		out[e.ID] = true
	}
	return out
}
