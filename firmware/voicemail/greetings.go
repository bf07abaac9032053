package voicemail

import (
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bounds of an uploaded greeting (the strict WAV parser enforces them).
const (
	// MaxGreetingUpload is the largest WAV accepted: 60 s of 48 kHz
	// 16-bit stereo and headroom.
	MaxGreetingUpload = 12 << 20
	greetingRate      = 16000 // uploads are kept at 16 kHz (G.722 at rest)
)

// ErrGreeting wraps every reason a greeting upload is refused.
var ErrGreeting = errors.New("voicemail: greeting refused")

// SetGreetingWAV replaces ext's greeting name (unavailable, busy, name)
// with an uploaded WAV file: parsed by the strict WAV parser (size,
// chunks and duration bounded), stored sealed like messages. also (an
// audit entry) is written in the same transaction as the mailbox.
func (s *Service) SetGreetingWAV(ext, name string, upload []byte, also ...func(*store.Tx) error) (time.Duration, error) {
	if !s.has(ext) {
		return 0, ErrNoMailbox
	}
	if !ValidGreeting(name) {
		return 0, fmt.Errorf("%w: no greeting %q (unavailable, busy or name)", ErrGreeting, name)
	}
	limit := maxGreeting
	if name == GreetingName {
		limit = maxName
	}
	pcm, _, err := wav.Parse(upload, wav.Options{Rate: greetingRate, MaxBytes: MaxGreetingUpload, MaxAudio: limit})
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrGreeting, err)
	}
	dur := time.Duration(len(pcm)) * time.Second / greetingRate
	if dur < minMessage {
		return 0, fmt.Errorf("%w: shorter than %v", ErrGreeting, minMessage)
	}
	w, err := s.cfg.Audio.Create("mailbox "+ext+", greeting "+name+" (uploaded)", greetingRate)
	if err != nil {
		return 0, fmt.Errorf("voicemail: greeting: %w", err)
	}
	if err := w.Write(pcm); err != nil {
		w.Abort()
		return 0, fmt.Errorf("voicemail: greeting: %w", err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("voicemail: greeting: %w", err)
	}
	old := ""
	if _, err := s.update(ext, func(b *Mailbox) error {
		if b.Greetings == nil {
			b.Greetings = map[string]string{}
		}
		old, b.Greetings[name] = b.Greetings[name], w.ID()
		return nil
	}, also...); err != nil {
		s.removeFile(w.ID())
		return 0, err
	}
	s.removeFile(old)
	return dur, nil
}

// DeleteGreeting removes ext's greeting name (callers hear the default
// prompt again) and crypto-erases its file.
func (s *Service) DeleteGreeting(ext, name string, also ...func(*store.Tx) error) error {
	if !ValidGreeting(name) {
		return fmt.Errorf("%w: no greeting %q (unavailable, busy or name)", ErrGreeting, name)
	}
	old := ""
	if _, err := s.update(ext, func(b *Mailbox) error {
		old = b.Greetings[name]
		if old == "" {
			return fmt.Errorf("%w: greeting %s not set", ErrNoMessage, name)
		}
		delete(b.Greetings, name)
		return nil
	}, also...); err != nil {
		return err
	}
	s.removeFile(old)
	return nil
}
