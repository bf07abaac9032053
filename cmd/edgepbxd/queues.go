package main

import (
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/moh"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
)

// dialogTee tells every observer of it each dialog change: the event
// server (busy lamps, presence) and the queues (an agent on a call is not
// offered queue calls). Each observer must not block, as the B2BUA
// requires of one.
type dialogTee []call.DialogObserver

func (t dialogTee) DialogChanged(ev call.DialogEvent) {
	for _, o := range t {
		o.DialogChanged(ev)
	}
}

// queueMedia is what a waiting queue caller hears: the music library's
// class (the generated default without a library) and the prompt
// library's pips for its position.
type queueMedia struct{ lib *moh.Library }

func (m queueMedia) Music(class string, rate int) (func() []int16, error) {
	if m.lib != nil {
		s, err := m.lib.Source(class, rate)
		if err != nil {
			return nil, err
		}
		return s.Next, nil
	}
	if rate != 8000 && rate != 16000 {
		return nil, fmt.Errorf("queue music: rate %d", rate)
	}
	pcm, err := prompts.Default(prompts.MusicOnHold)
	if err != nil {
		return nil, err
	}
	return moh.NewSource(atRate(pcm, rate), rate).Next, nil
}

func (queueMedia) Position(n, rate int) []int16 { return atRate(prompts.Count(n), rate) }

// atRate converts prompt audio (prompts.Rate) to rate (8000 or 16000).
func atRate(pcm []int16, rate int) []int16 {
	if rate == prompts.Rate {
		return pcm
	}
	var d codec.Downsampler
	return d.Process(make([]int16, 0, len(pcm)/2), pcm)
}
