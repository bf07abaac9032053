package main

import (
	"log/slog"
	"maps"
	"slices"
	"strconv"

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
				_, err = m.Inject(side, pt, enc.ClockRate(), pl)
			}
			if err != nil {
				log.Warn("callrec: announcement", "call", c.ID, "side", side.String(), "err", err)
			}
		}
	}
}
