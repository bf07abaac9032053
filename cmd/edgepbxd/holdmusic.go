package main

import (
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/callrec"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// holdMusic implements call.HoldMusic: the music library's default class
// (the generated music without a library), injected by the relay into
// the held party's leg in the codec it answered the hold with. There is
// no per-extension class setting yet: the default class is what every
// held party hears.
type holdMusic struct{ music queueMedia }

// Play implements call.HoldMusic.
func (h holdMusic) Play(m *media.Call, side media.Side, ans media.Remote, _ call.Identity) (func(), string) {
	pt, c, why := injectCodec(ans)
	if c == nil {
		return nil, why
	}
	next, err := h.music.Music("", c.SampleRate())
	if err != nil {
		return nil, "music library: " + err.Error()
	}
	in, err := m.Inject(side, pt, c.ClockRate(), &framePayloads{next: next, c: c})
	if err != nil {
		return nil, err.Error()
	}
	return in.Stop, ""
}

// injectCodec is the first format of an answer the box can encode: the
// held phone accepts any format of its answer. nil and why: none (a
// passthrough codec such as Opus or G.729: the held party hears silence
// as before).
func injectCodec(ans media.Remote) (uint8, codec.Codec, string) {
	names := ans.PayloadNames()
	for _, f := range ans.Formats {
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 || n > 127 {
			continue
		}
		if c, err := codec.New(names[uint8(n)]); err == nil {
			return uint8(n), c, ""
		}
	}
	return 0, nil, "codec " + clipNote(ans.VoiceCodec()) + " cannot be encoded by the box"
}

func clipNote(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	if s == "" {
		s = "(none)"
	}
	return strconv.Quote(s)
}

// framePayloads encodes a 20 ms PCM frame source (moh.Source.Next) as
// media.Payloads; it never ends.
type framePayloads struct {
	next func() []int16
	c    codec.Codec
}

func (p *framePayloads) Next(dst []byte) ([]byte, bool) { return p.c.Encode(dst, p.next()), true }

// recordingNotice plays the recording notice prompt (the prompt library's
// upload in "en", else the generated two beeps) to both parties of a
// call whose recording just started (callrec.Config.Announce), in the
// call's codec. It returns at once: the injections end by themselves.
func recordingNotice(lib *prompts.Library, log *slog.Logger) func(callrec.Call) {
	return func(c callrec.Call) {
		m, ok := c.Media.(*media.Call)
		if !ok {
			return
		}
		cc, err := codec.New(c.Codec)
		if err != nil {
			return // callrec records only codecs the box decodes
		}
		// The legs share payload numbers end to end; the lowest that names
		// the call's codec.
		pt, found := uint8(0), false
		for _, n := range slices.Sorted(maps.Keys(c.Formats)) {
			if x, err := codec.New(c.Formats[n]); err == nil && x.Name() == cc.Name() {
				pt, found = n, true
				break
			}
		}
		if !found {
			log.Info("callrec: no announcement", "call", c.ID, "codec", c.Codec, "why", "no payload type")
			return
		}
		pcm, err := lib.Get("en", prompts.RecordingNotice, cc.SampleRate())
		if err != nil {
			log.Warn("callrec: no announcement", "call", c.ID, "err", err)
			return
		}
		for _, side := range []media.Side{media.A, media.B} {
			enc, _ := codec.New(c.Codec) // G.722 keeps state: one per leg
			pl, err := prompts.NewPlayer(pcm, enc.SampleRate(), enc, false)
			if err == nil {
				src := &afterHeard{m: m, side: side, until: time.Now().Add(noticeWait), play: pl,
					silence: make([]int16, enc.FrameSamples()), enc: enc}
				_, err = m.Inject(side, pt, enc.ClockRate(), src)
			}
			if err != nil && !errors.Is(err, media.ErrInjectClosed) {
				log.Warn("callrec: announcement", "call", c.ID, "side", side.String(), "err", err)
			}
		}
	}
}

// afterHeard plays silence until the party's phone has sent a packet (at
// the answer the caller's phone may not have taken the box's SDP and
// keys yet and drops what comes before), at most until until, then play.
// The injection mutes the other party meanwhile, so the notice is still
// the first thing both hear.
type afterHeard struct {
	m       *media.Call
	side    media.Side
	until   time.Time
	play    media.Payloads
	silence []int16
	enc     codec.Codec
	started int // lead frames sent since the party was heard
}

func (a *afterHeard) Next(dst []byte) ([]byte, bool) {
	if a.started == 0 && !a.m.Heard(a.side) && time.Now().Before(a.until) {
		return a.enc.Encode(dst, a.silence), true
	}
	// A phone starts sending before its player runs: a short lead of
	// silence more, so the first beep is not clipped.
	if a.started < noticeLead {
		a.started++
		return a.enc.Encode(dst, a.silence), true
	}
	return a.play.Next(dst)
}

// noticeLead is the silence, in 20 ms frames, between a party's first
// packet and the recording notice.
const noticeLead = 25

// noticeWait bounds the wait for a party's first packet before the
// recording notice plays to it.
const noticeWait = 3 * time.Second
