package prompts

import (
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
)

// Player cuts PCM into a leg's 20 ms payloads in the leg's codec: prompts,
// greetings, recorded messages, music on hold. One per leg and direction;
// not safe for concurrent use.
type Player struct {
	pcm   []int16 // at the codec's rate
	pos   int
	loop  bool
	c     codec.Codec
	frame []int16
}

// NewPlayer converts pcm (at rate 8000 or 16000) to c's rate once and
// returns a player; loop restarts it at the end (music on hold).
func NewPlayer(pcm []int16, rate int, c codec.Codec, loop bool) (*Player, error) {
	if rate != 8000 && rate != 16000 {
		return nil, fmt.Errorf("prompts: player input rate %d: only 8000 or 16000", rate)
	}
	switch {
	case rate > c.SampleRate():
		var d codec.Downsampler
		pcm = d.Process(make([]int16, 0, len(pcm)/2), pcm)
	case rate < c.SampleRate():
		var u codec.Upsampler
		pcm = u.Process(make([]int16, 0, 2*len(pcm)), pcm)
	}
	return &Player{pcm: pcm, loop: loop && len(pcm) > 0, c: c, frame: make([]int16, c.FrameSamples())}, nil
}

// Done reports whether a non-looping player has played everything.
func (p *Player) Done() bool { return !p.loop && p.pos >= len(p.pcm) }

// Next appends the next 20 ms payload to dst; false when Done. The last
// frame is padded with silence.
func (p *Player) Next(dst []byte) ([]byte, bool) {
	if p.Done() {
		return dst, false
	}
	for i := range p.frame {
		if p.pos >= len(p.pcm) {
			if !p.loop {
				p.frame[i] = 0
				continue
			}
			p.pos = 0
		}
		p.frame[i] = p.pcm[p.pos]
		p.pos++
	}
	return p.c.Encode(dst, p.frame), true
}
