package recording

import (
	"errors"
	"fmt"
	"io"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/jitter"
)

// RecorderConfig describes the legs of one recording.
type RecorderConfig struct {
	// Tracks are the rtpmap names of the recorded streams: one (a
	// voicemail) or two (both directions of a call, mixed to mono).
	Tracks []string
	// Jitter sizes each track's buffer; zero means jitter.DefaultConfig.
	Jitter jitter.Config
	// Label is free text stored encrypted with the recording.
	Label string
}

// MaxTracks is the most streams one recording mixes.
const MaxTracks = 2

// maxGap bounds the silence inserted for a timestamp jump (DTX): 1 s.
const maxGap = 8000

// RecorderStats sums the tracks' jitter counters.
type RecorderStats struct {
	jitter.Stats
	Frames uint64 // 20 ms frames written
	Bytes  uint64 // audio bytes handed to the file (before sealing)
}

type track struct {
	dec     codec.Codec
	jb      *jitter.Buffer
	conceal jitter.Concealer
	up      codec.Upsampler
	fifo    []int16 // decoded PCM at the recording rate, not yet mixed
	scratch []int16
	lastLen int // samples of the last good packet (at the codec's rate)
	nextTS  uint32
	haveTS  bool
	started bool
}

// Recorder turns up to two RTP streams into one sealed recording: jitter
// buffer, decode, concealment of losses, mix, re-encode in the storage
// codec, seal. Drive it with Packet as packets arrive and Tick every
// 20 ms; not safe for concurrent use (one goroutine per leg or a reactor).
type Recorder struct {
	w      io.WriteCloser
	store  codec.Codec
	rate   int
	frame  int
	tracks []*track
	mixed  []int32
	pcm    []int16
	enc    []byte
	frames uint64
	bytes  uint64
	err    error
}

// StorageFormat is the codec a recording of these tracks is stored in:
// the tracks' own codec when they agree, G.722 (16 kHz) when any track is
// wideband, else PCMU.
func StorageFormat(tracks []string) (codec.Codec, error) {
	if len(tracks) == 0 || len(tracks) > MaxTracks {
		return nil, fmt.Errorf("recording: %d tracks, want 1..%d", len(tracks), MaxTracks)
	}
	var names []string
	for _, t := range tracks {
		c, err := codec.New(t)
		if err != nil {
			return nil, err
		}
		names = append(names, c.Name())
	}
	switch {
	case len(names) == 1 || names[0] == names[1]:
		return codec.New(names[0])
	case names[0] == "G722" || names[1] == "G722":
		return codec.New("G722")
	}
	return codec.New("PCMU")
}

// NewRecorder starts a recording in category.
func (s *Store) NewRecorder(category string, cfg RecorderConfig) (*Recorder, error) {
	sc, err := StorageFormat(cfg.Tracks)
	if err != nil {
		return nil, err
	}
	f, err := s.Create(category, Meta{Codec: sc.Name(), SampleRate: sc.SampleRate(), Label: cfg.Label})
	if err != nil {
		return nil, err
	}
	r, err := newRecorder(f, sc, cfg)
	if err != nil {
		f.Close()
		s.Delete(f.ID())
		return nil, err
	}
	return r, nil
}

// NewStreamRecorder records into any writer (for example a Writer over a
// network stream); the caller picks meta with StorageFormat.
func NewStreamRecorder(w io.WriteCloser, cfg RecorderConfig) (*Recorder, error) {
	sc, err := StorageFormat(cfg.Tracks)
	if err != nil {
		return nil, err
	}
	return newRecorder(w, sc, cfg)
}

func newRecorder(w io.WriteCloser, sc codec.Codec, cfg RecorderConfig) (*Recorder, error) {
	jc := cfg.Jitter
	if jc == (jitter.Config{}) {
		jc = jitter.DefaultConfig()
	}
	r := &Recorder{w: w, store: sc, rate: sc.SampleRate(), frame: sc.FrameSamples()}
	for _, name := range cfg.Tracks {
		dec, err := codec.New(name)
		if err != nil {
			return nil, err
		}
		jb, err := jitter.New(jc)
		if err != nil {
			return nil, err
		}
		r.tracks = append(r.tracks, &track{dec: dec, jb: jb, lastLen: dec.FrameSamples()})
	}
	r.mixed = make([]int32, r.frame)
	return r, nil
}

// ID returns the recording's store ID ("" for a stream recorder).
func (r *Recorder) ID() string {
	if f, ok := r.w.(*File); ok {
		return f.ID()
	}
	return ""
}

// Packet buffers one RTP packet of track (index into Config.Tracks).
// Rejected packets (late, duplicate, oversize) are counted, not errors of
// the recording.
func (r *Recorder) Packet(trk int, seq uint16, ts uint32, marker bool, payload []byte) {
	if trk < 0 || trk >= len(r.tracks) {
		return
	}
	r.tracks[trk].jb.Push(seq, ts, marker, payload)
}

// fill makes t.fifo hold at least n samples at the recording rate, from
// the jitter buffer (one packet per step), concealment or silence.
func (r *Recorder) fill(t *track, n int) {
	for len(t.fifo) < n {
		fr, ok := t.jb.Pop()
		if !ok || fr.Underrun {
			// Still filling, or the sender paused: silence keeps this
			// track in time with the other.
			for len(t.fifo) < n {
				t.fifo = append(t.fifo, 0)
			}
			return
		}
		t.started = true
		t.scratch = t.scratch[:0]
		if fr.Lost {
			t.scratch = t.conceal.Lost(t.scratch, t.lastLen)
			t.nextTS += uint32(t.lastLen * 8000 / t.dec.SampleRate())
		} else {
			if t.haveTS {
				if gap := fr.Timestamp - t.nextTS; gap > 0 && gap <= maxGap {
					for range int(gap) * t.dec.SampleRate() / 8000 {
						t.scratch = append(t.scratch, 0)
					}
				}
			}
			start := len(t.scratch)
			t.scratch = t.dec.Decode(t.scratch, fr.Payload)
			got := t.scratch[start:]
			if len(got) > 0 {
				t.lastLen = len(got)
				t.conceal.Good(got)
			}
			t.nextTS, t.haveTS = fr.Timestamp+uint32(len(got)*8000/t.dec.SampleRate()), true
		}
		t.fifo = r.toRate(t, t.fifo, t.scratch)
	}
}

func (r *Recorder) toRate(t *track, dst, pcm []int16) []int16 {
	if t.dec.SampleRate() == r.rate {
		return append(dst, pcm...)
	}
	return t.up.Process(dst, pcm) // only 8k -> 16k happens: see StorageFormat
}

// Tick writes the next 20 ms. Once the recording stopped (quota, I/O
// error) it returns that error and writes nothing more.
func (r *Recorder) Tick() error {
	if r.err != nil {
		return r.err
	}
	started := false
	for _, t := range r.tracks {
		if t.started || t.jb.Len() > 0 {
			started = true
		}
	}
	if !started {
		return nil
	}
	clear(r.mixed)
	for _, t := range r.tracks {
		r.fill(t, r.frame)
		for i, s := range t.fifo[:r.frame] {
			r.mixed[i] += int32(s)
		}
		t.fifo = append(t.fifo[:0], t.fifo[r.frame:]...)
	}
	r.pcm = r.pcm[:0]
	for _, v := range r.mixed {
		r.pcm = append(r.pcm, int16(max(-32768, min(32767, v))))
	}
	r.enc = r.store.Encode(r.enc[:0], r.pcm)
	if _, err := r.w.Write(r.enc); err != nil {
		r.err = err
		return err
	}
	r.frames++
	r.bytes += uint64(len(r.enc))
	return nil
}

// Stats returns the counters.
func (r *Recorder) Stats() RecorderStats {
	var s RecorderStats
	for _, t := range r.tracks {
		js := t.jb.Stats()
		s.Received += js.Received
		s.Played += js.Played
		s.Lost += js.Lost
		s.Late += js.Late
		s.Duplicates += js.Duplicates
		s.Skipped += js.Skipped
		s.Underruns += js.Underruns
		s.Oversize += js.Oversize
		s.Resyncs += js.Resyncs
		s.Probation += js.Probation
	}
	s.Frames, s.Bytes = r.frames, r.bytes
	return s
}

// Close plays out what is still buffered, then seals and closes the file.
func (r *Recorder) Close() error {
	for range 64 { // bounded: at most the jitter capacity
		pending := false
		for _, t := range r.tracks {
			if t.jb.Len() > 0 {
				pending = true
			}
		}
		if !pending || r.err != nil {
			break
		}
		r.Tick()
	}
	err := r.w.Close()
	if r.err != nil && !errors.Is(r.err, ErrQuota) {
		return r.err // an I/O error: the file may be cut
	}
	return err
}
