package recording

import (
	"errors"
	"fmt"
	"io"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// MaxReadAudio bounds what ReadAudio decodes: 30 minutes of G.722.
const MaxReadAudio = 30 * 60 * 8000

// ReadAudio opens a recording and decodes it to PCM at its Meta's rate,
// for playback to a leg (prompts.NewPlayer) or a download. A recording
// cut short (power loss while recording) returns its audio together with
// an error wrapping ErrTruncated; any other error returns no audio. The
// caller audits who listened.
func (s *Store) ReadAudio(id string) ([]int16, Meta, error) {
	r, err := s.Open(id)
	if err != nil {
		return nil, Meta{}, err
	}
	defer r.Close()
	meta := r.Meta()
	c, err := codec.New(meta.Codec)
	if err != nil {
		return nil, meta, fmt.Errorf("recording %s: %w", id, err)
	}
	raw, rerr := io.ReadAll(io.LimitReader(r, MaxReadAudio+1))
	if len(raw) > MaxReadAudio {
		return nil, meta, fmt.Errorf("recording %s: longer than the %d bytes ReadAudio decodes", id, MaxReadAudio)
	}
	if rerr != nil && !errors.Is(rerr, ErrTruncated) {
		return nil, meta, rerr
	}
	return c.Decode(make([]int16, 0, len(raw)*c.SampleRate()/8000), raw), meta, rerr
}

// ExportWAV returns a recording as a 16-bit PCM WAV file (the download
// format of the UI), with ReadAudio's errors.
func (s *Store) ExportWAV(id string) ([]byte, Meta, error) {
	pcm, meta, err := s.ReadAudio(id)
	if pcm == nil && err != nil {
		return nil, meta, err
	}
	return wav.Encode(meta.SampleRate, pcm), meta, err
}
