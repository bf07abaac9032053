package voicemail

// The voicemail applications on a call: deposit (voicemail/<ext>) and
// retrieval (voicemail-access/<ext>, or with no ext the caller keys the
// mailbox in). Nothing here dials anywhere: no key leads out of the box.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Input bounds of a call.
const (
	digitTimeout = 10 * time.Second // between keys of an entry
	maxPINTries  = 3                // per call, before the box hangs up
	maxEntry     = 16               // keys of one entry
	minMessage   = time.Second      // shorter recordings are dropped
	maxGreeting  = 60 * time.Second
	maxName      = 10 * time.Second
	menuRepeats  = 3
	mailboxTries = 3
)

// Open implements call.Apps for voicemail and voicemail-access.
func (s *Service) Open(app, arg string, caller call.Caller) (call.App, error) {
	switch app {
	case dialplan.AppVoicemail:
		if !s.has(arg) {
			return nil, fmt.Errorf("%w: mailbox %q", call.ErrNoApp, arg)
		}
		return depositApp{s: s, ext: arg}, nil
	case dialplan.AppVoicemailAccess:
		if arg != "" && !s.has(arg) {
			return nil, fmt.Errorf("%w: mailbox %q", call.ErrNoApp, arg)
		}
		if caller.Extension == "" {
			// Retrieval is for the box's own phones; a trunk caller
			// reaching it would be a door to guess PINs from outside.
			return nil, fmt.Errorf("%w: mailbox access from a trunk", call.ErrAppRefused)
		}
		return accessApp{s: s, ext: arg}, nil
	}
	return nil, fmt.Errorf("%w: %q", call.ErrNoApp, app)
}

type depositApp struct {
	s   *Service
	ext string
}

func (a depositApp) Run(ctx context.Context, leg call.Leg) error {
	s := a.s
	n, o, err := s.Counts(a.ext)
	if err != nil {
		return err
	}
	rate := leg.Rate()
	if n+o >= s.cfg.MaxMessages {
		_ = leg.Play(ctx, s.cfg.Prompts.Prompt(PromptFull, rate))
		return nil
	}
	greet := s.greeting(a.ext, leg.Caller().Reason, rate)
	// Any key ('#' by habit) skips the rest of the greeting.
	if _, err := playKeys(ctx, leg, greet); err != nil {
		return ignoreEnd(err)
	}
	if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptBeep, rate)); err != nil {
		return ignoreEnd(err)
	}
	caller := leg.Caller().Number
	if caller == "" {
		caller = "anonymous"
	}
	m, err := s.record(ctx, leg, a.ext, "", caller, s.cfg.MaxMessage)
	if err != nil {
		return err
	}
	if m.ID != "" {
		// The caller may still be there (pressed #): say it is saved.
		_ = leg.Play(ctx, s.cfg.Prompts.Prompt(PromptSaved, rate))
	}
	return nil
}

// greeting is what a caller hears before the tone: the owner's busy
// greeting for a busy callee (busy, do-not-disturb), the unavailable one
// otherwise; without it the default prompt for the reason, followed by
// the owner's recorded name if there is one.
func (s *Service) greeting(ext, reason string, rate int) []int16 {
	kind, def := GreetingUnavailable, PromptGreeting
	if reason == call.ReasonBusy {
		kind, def = GreetingBusy, PromptBusyGreet
	}
	b, err := s.Mailbox(ext)
	if err != nil {
		return s.cfg.Prompts.Prompt(def, rate)
	}
	if pcm := s.greetingAudio(b, kind, rate); pcm != nil {
		s.log.Info("voicemail: greeting", "mailbox", ext, "greeting", kind, "own", true)
		return pcm
	}
	out := slices.Clone(s.cfg.Prompts.Prompt(def, rate))
	name := s.greetingAudio(b, GreetingName, rate)
	s.log.Info("voicemail: greeting", "mailbox", ext, "greeting", kind, "own", false, "name", name != nil)
	return append(out, name...)
}

// greetingAudio is b's greeting kind at rate; nil: none (or unreadable).
func (s *Service) greetingAudio(b Mailbox, kind string, rate int) []int16 {
	id := b.Greetings[kind]
	if id == "" {
		return nil
	}
	r, pcm, err := s.cfg.Audio.Read(id)
	if err != nil {
		s.log.Warn("voicemail: greeting unreadable", "mailbox", b.Ext, "greeting", kind, "err", err)
		return nil
	}
	return resample(pcm, r, rate)
}

// record stores what the caller says until '#', hang-up or limit as a
// new message (greeting "" ) or as greeting name. A message shorter than
// minMessage is dropped. The file is encrypted as it is written; the
// record is stored once the file is complete.
func (s *Service) record(ctx context.Context, leg call.Leg, ext, greeting, caller string, limit time.Duration) (Message, error) {
	now := s.cfg.Now()
	id, err := newID(now)
	if err != nil {
		return Message{}, err
	}
	label := "mailbox " + ext + ", from " + caller
	if greeting != "" {
		label = "mailbox " + ext + ", greeting " + greeting
	}
	rate := leg.Rate()
	w, err := s.cfg.Audio.Create(label, rate)
	if err != nil {
		return Message{}, fmt.Errorf("voicemail: record: %w", err)
	}
	samples, max := 0, int(limit.Seconds())*rate
	frames := leg.Frames()
	// Frames queued before the tone (the caller talking over the
	// greeting) are not part of the message.
	for drained := false; !drained; {
		select {
		case <-frames:
		default:
			drained = true
		}
	}
	stop := time.NewTimer(limit + 2*time.Second) // frames may stop coming (hold)
	defer stop.Stop()
loop:
	for samples < max {
		select {
		case pcm := <-frames:
			if err := w.Write(pcm); err != nil {
				w.Abort()
				return Message{}, fmt.Errorf("voicemail: record: %w", err)
			}
			samples += len(pcm)
		case d := <-leg.DTMF():
			if d.Key == '#' {
				break loop
			}
		case <-stop.C:
			break loop
		case <-ctx.Done():
			break loop // hung up: what was said is kept
		}
	}
	dur := time.Duration(samples) * time.Second / time.Duration(rate)
	if dur < minMessage {
		w.Abort()
		return Message{}, nil
	}
	if err := w.Close(); err != nil {
		return Message{}, fmt.Errorf("voicemail: record: %w", err)
	}
	if greeting != "" {
		old := ""
		_, err := s.update(ext, func(b *Mailbox) error {
			if b.Greetings == nil {
				b.Greetings = map[string]string{}
			}
			old, b.Greetings[greeting] = b.Greetings[greeting], w.ID()
			return nil
		})
		if err != nil {
			s.removeFile(w.ID())
			return Message{}, err
		}
		s.removeFile(old)
		return Message{}, nil
	}
	m := Message{ID: id, Ext: ext, Caller: caller, Time: now, Duration: dur, New: true, Rate: rate, File: w.ID()}
	if err := s.add(m); err != nil {
		return Message{}, err
	}
	return m, nil
}

// add stores a message record (its file is complete) and tells MWI.
func (s *Service) add(m Message) error {
	s.mu.Lock()
	err := s.cfg.DB.Update(func(tx *store.Tx) error {
		ms, err := messages(tx, m.Ext)
		if err != nil {
			return err
		}
		if len(ms) >= s.cfg.MaxMessages {
			return ErrFull
		}
		return tx.Put(bucket, msgKey(m.Ext, m.ID), messageRec{Message: m, File: m.File})
	})
	s.mu.Unlock()
	if err != nil {
		s.removeFile(m.File)
		return fmt.Errorf("voicemail: store message: %w", err)
	}
	s.log.Info("voicemail: message", "mailbox", m.Ext, "id", m.ID, "duration", m.Duration.Round(time.Second))
	s.notify(m.Ext)
	s.mailMessage(m)
	return nil
}

type accessApp struct {
	s   *Service
	ext string
}

func (a accessApp) Run(ctx context.Context, leg call.Leg) error {
	s := a.s
	rate := leg.Rate()
	ext := a.ext
	if ext == "" {
		for try := 0; ; try++ {
			if try == mailboxTries {
				return nil
			}
			e, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptMailbox, rate))
			if err != nil {
				return ignoreEnd(err)
			}
			if s.has(e) {
				ext = e
				break
			}
			// A mailbox that does not exist is answered like a wrong PIN
			// below would be: nobody learns which extensions exist.
			if _, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptPIN, rate)); err != nil {
				return ignoreEnd(err)
			}
			_ = leg.Play(ctx, s.cfg.Prompts.Prompt(PromptWrongPIN, rate))
		}
	}
	ok, err := a.login(ctx, leg, ext)
	if err != nil || !ok {
		return ignoreEnd(err)
	}
	return s.listen(ctx, leg, ext)
}

// login asks for the PIN (or lets the owner choose one at first access);
// false: the caller is not let in.
func (a accessApp) login(ctx context.Context, leg call.Leg, ext string) (bool, error) {
	s := a.s
	rate := leg.Rate()
	c := leg.Caller()
	own := c.Extension == ext
	b, err := s.Mailbox(ext)
	if err != nil {
		return false, err
	}
	if b.PINHash == "" {
		if !own {
			// No PIN yet: only the owner's own phone may set one. The
			// caller is asked for a PIN all the same and refused like a
			// wrong one, so nobody learns which mailboxes have none.
			if _, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptPIN, rate)); err != nil {
				return false, err
			}
			_ = leg.Play(ctx, s.cfg.Prompts.Prompt(PromptWrongPIN, rate))
			return false, nil
		}
		return a.choosePIN(ctx, leg, ext)
	}
	if own && b.SkipPINOwnPhone && s.cfg.Now().After(b.LockedUntil) {
		return true, nil
	}
	// Only a phone's own source is evidence for the guard: a trunk
	// carries many callers (and trunk callers are refused above).
	charge := c.Extension != "" && c.Source.IsValid()
	for range maxPINTries {
		pin, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptPIN, rate))
		if err != nil {
			return false, err
		}
		err = s.Login(ctx, ext, pin, c.Source, charge)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, ErrLocked):
			_ = leg.Play(ctx, s.cfg.Prompts.Prompt(PromptLocked, rate))
			return false, nil
		case errors.Is(err, ErrWrongPIN):
			if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptWrongPIN, rate)); err != nil {
				return false, err
			}
		default:
			return false, err
		}
	}
	return false, nil
}

// choosePIN lets the owner set the first PIN: entered twice, checked
// against the policy.
func (a accessApp) choosePIN(ctx context.Context, leg call.Leg, ext string) (bool, error) {
	s := a.s
	rate := leg.Rate()
	for range maxPINTries {
		p1, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptNewPIN, rate))
		if err != nil {
			return false, err
		}
		if CheckPIN(p1, ext) != nil {
			if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptWeakPIN, rate)); err != nil {
				return false, err
			}
			continue
		}
		p2, err := prompted(ctx, leg, s.cfg.Prompts.Prompt(PromptNewPIN, rate))
		if err != nil {
			return false, err
		}
		if p1 != p2 {
			if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptWeakPIN, rate)); err != nil {
				return false, err
			}
			continue
		}
		if err := s.SetPIN(ctx, ext, p1); err != nil {
			return false, err
		}
		s.log.Info("voicemail: PIN set by the owner", "mailbox", ext)
		return true, nil
	}
	return false, nil
}

// listen plays the messages, new first: 1 replay, 7 delete, 9 keep (and
// next), # next, * end; 0 records a greeting (recordGreeting).
func (s *Service) listen(ctx context.Context, leg call.Leg, ext string) error {
	rate := leg.Rate()
	ms, err := s.Messages(ext)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		k, err := playKeys(ctx, leg, s.cfg.Prompts.Prompt(PromptNoMessages, rate))
		if err != nil {
			return ignoreEnd(err)
		}
		if k == '0' {
			return s.recordGreeting(ctx, leg, ext)
		}
		return ignoreEnd(leg.Play(ctx, s.cfg.Prompts.Prompt(PromptGoodbye, rate)))
	}
	for i := 0; i < len(ms); i++ {
		m := ms[i]
		r, pcm, err := s.cfg.Audio.Read(m.File)
		if errors.Is(err, ErrAudioGone) {
			s.expire(m) // retention deleted it: the record goes too
			continue
		}
		if err != nil {
			s.log.Warn("voicemail: message unreadable", "mailbox", ext, "id", m.ID, "err", err)
			continue
		}
		if r != rate {
			pcm = resample(pcm, r, rate)
		}
		play := append(s.cfg.Prompts.Prompt(PromptMessage, rate), pcm...)
		k, err := playKeys(ctx, leg, play)
		if err != nil {
			return ignoreEnd(err)
		}
		if m.New {
			if err := s.MarkOld(ext, m.ID); err != nil {
				return err
			}
		}
		for rep := 0; k == 0 && rep < menuRepeats; rep++ {
			if k, err = playKeys(ctx, leg, s.cfg.Prompts.Prompt(PromptMenu, rate)); err != nil {
				return ignoreEnd(err)
			}
			if k == 0 {
				k, err = waitKey(ctx, leg, digitTimeout)
				if err != nil {
					return ignoreEnd(err)
				}
			}
		}
		switch k {
		case '1':
			i-- // again
		case '7':
			if err := s.Delete(ext, m.ID); err != nil {
				return err
			}
			if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptDeleted, rate)); err != nil {
				return ignoreEnd(err)
			}
		case '0':
			return s.recordGreeting(ctx, leg, ext)
		case '*', 0:
			return ignoreEnd(leg.Play(ctx, s.cfg.Prompts.Prompt(PromptGoodbye, rate)))
		}
	}
	return ignoreEnd(leg.Play(ctx, s.cfg.Prompts.Prompt(PromptGoodbye, rate)))
}

// recordGreeting lets the owner record a greeting: 1 unavailable, 2
// busy, 3 name; any other key ends the call.
func (s *Service) recordGreeting(ctx context.Context, leg call.Leg, ext string) error {
	rate := leg.Rate()
	k, err := playKeys(ctx, leg, s.cfg.Prompts.Prompt(PromptGreetMenu, rate))
	if err == nil && k == 0 {
		k, err = waitKey(ctx, leg, digitTimeout)
	}
	if err != nil {
		return ignoreEnd(err)
	}
	kind, limit := "", maxGreeting
	switch k {
	case '1':
		kind = GreetingUnavailable
	case '2':
		kind = GreetingBusy
	case '3':
		kind, limit = GreetingName, maxName
	default:
		return ignoreEnd(leg.Play(ctx, s.cfg.Prompts.Prompt(PromptGoodbye, rate)))
	}
	if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptRecordGreet, rate)); err != nil {
		return ignoreEnd(err)
	}
	if err := leg.Play(ctx, s.cfg.Prompts.Prompt(PromptBeep, rate)); err != nil {
		return ignoreEnd(err)
	}
	if _, err := s.record(ctx, leg, ext, kind, "", limit); err != nil {
		return err
	}
	s.log.Info("voicemail: greeting recorded by the owner", "mailbox", ext, "greeting", kind)
	return ignoreEnd(leg.Play(ctx, s.cfg.Prompts.Prompt(PromptSaved, rate)))
}

// playKeys plays pcm until its end or the caller's first key (returned;
// 0: none). Keys pressed before are dropped (typed ahead of a prompt they
// did not hear), except during the prompt itself.
func playKeys(ctx context.Context, leg call.Leg, pcm []int16) (byte, error) {
	pctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- leg.Play(pctx, pcm) }()
	for {
		select {
		case d := <-leg.DTMF():
			stop()
			<-done
			return d.Key, ctx.Err()
		case err := <-done:
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			if err != nil && !errors.Is(err, context.Canceled) {
				return 0, err
			}
			return 0, nil
		}
	}
}

// waitKey waits up to d for one key (0: none came).
func waitKey(ctx context.Context, leg call.Leg, d time.Duration) (byte, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case k := <-leg.DTMF():
		return k.Key, nil
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// prompted plays a prompt and reads an entry ended by '#' (or by a pause
// of digitTimeout after at least one key). Keys pressed during the prompt
// start the entry.
func prompted(ctx context.Context, leg call.Leg, prompt []int16) (string, error) {
	k, err := playKeys(ctx, leg, prompt)
	if err != nil {
		return "", err
	}
	var b []byte
	if k != 0 && k != '#' {
		b = append(b, k)
	} else if k == '#' {
		return "", nil
	}
	for len(b) < maxEntry {
		k, err := waitKey(ctx, leg, digitTimeout)
		if err != nil {
			return "", err
		}
		switch {
		case k == 0 || k == '#':
			return string(b), nil
		case k >= '0' && k <= '9':
			b = append(b, k)
		default:
			return string(b) + string(k), nil // '*', A-D: not part of a number
		}
	}
	return string(b), nil
}

// ignoreEnd treats the caller hanging up as a normal end.
func ignoreEnd(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
}

// resample converts a message between 8 and 16 kHz for a caller whose
// codec has the other rate (the media engine's half-band filters).
func resample(pcm []int16, from, to int) []int16 {
	switch {
	case from == to:
		return pcm
	case from == 16000 && to == 8000:
		var d codec.Downsampler
		return d.Process(make([]int16, 0, len(pcm)/2), pcm)
	case from == 8000 && to == 16000:
		var u codec.Upsampler
		return u.Process(make([]int16, 0, 2*len(pcm)), pcm)
	}
	return nil
}
