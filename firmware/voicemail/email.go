package voicemail

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/mailer"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/wav"
)

// Mailer queues e-mail; *mailer.Service implements it.
type Mailer interface {
	Enqueue(mailer.Job) bool
	Handle(kind string, m mailer.Maker)
}

// mailKind is the kind of voicemail jobs; their Ref is "<ext>/<id>".
const mailKind = "voicemail"

// mailRef builds the e-mail a job names (the mailer's Maker).
func (s *Service) mailRef(_ context.Context, ref string) (mailer.Message, error) {
	ext, id, ok := strings.Cut(ref, "/")
	if !ok || !ValidExt(ext) {
		return mailer.Message{}, fmt.Errorf("%w: not a voicemail reference: %.64q", mailer.ErrGone, ref)
	}
	return s.Email(ext, id)
}

// mailMessage queues the e-mail of a new message when its mailbox has an
// address. The job carries only the mailbox and message ids: the address,
// the attach choice and the audio are read when it is sent, so a message
// deleted meanwhile is not mailed, and a failed mail loses nothing (the
// message stays in the mailbox).
func (s *Service) mailMessage(m Message) {
	if s.cfg.Mail == nil {
		return
	}
	b, err := s.Mailbox(m.Ext)
	if err != nil || b.Email == "" {
		return
	}
	ext, id := m.Ext, m.ID
	if !s.cfg.Mail.Enqueue(mailer.Job{Kind: mailKind, Ref: ext + "/" + id}) {
		s.log.Warn("voicemail: e-mail not queued (mail off or queue full); the message stays in the mailbox", "mailbox", ext, "id", id)
	}
}

// Email is the e-mail of one message as its mailbox's options say: the
// audio attached as WAV, or only a notice. mailer.ErrGone when the
// message or the address is gone.
func (s *Service) Email(ext, id string) (mailer.Message, error) {
	b, err := s.Mailbox(ext)
	if err != nil {
		return mailer.Message{}, fmt.Errorf("%w: %v", mailer.ErrGone, err)
	}
	m, err := s.Message(ext, id)
	if errors.Is(err, ErrNoMessage) || errors.Is(err, ErrNoMailbox) {
		return mailer.Message{}, fmt.Errorf("%w: %v", mailer.ErrGone, err)
	}
	if err != nil {
		return mailer.Message{}, err
	}
	if b.Email == "" {
		return mailer.Message{}, fmt.Errorf("%w: mailbox %s has no e-mail address any more", mailer.ErrGone, ext)
	}
	caller := printableCaller(m.Caller)
	out := mailer.Message{To: b.Email, Subject: fmt.Sprintf("Voicemail for %s from %s (%s)", ext, caller, roundDur(m.Duration))}
	var body strings.Builder
	fmt.Fprintf(&body, "New voicemail in mailbox %s.\n\nFrom: %s\nReceived: %s\nLength: %s\n\n", ext, caller,
		m.Time.UTC().Format("2006-01-02 15:04:05 MST"), roundDur(m.Duration))
	if b.AttachAudio {
		rate, pcm, err := s.Audio(ext, id)
		if errors.Is(err, ErrNoMessage) {
			return mailer.Message{}, fmt.Errorf("%w: %v", mailer.ErrGone, err)
		}
		if err != nil {
			return mailer.Message{}, err
		}
		out.Attached = &mailer.Attachment{Name: "voicemail-" + ext + "-" + id + ".wav", ContentType: "audio/wav", Data: wav.Encode(rate, pcm)}
		body.WriteString("The message is attached as a WAV file. ")
	}
	body.WriteString("It stays in the mailbox: listen from your phone or in the admin pages.\n")
	out.Body = body.String()
	return out, nil
}

// printableCaller bounds the caller's number (it comes from the calling
// party's SIP headers) to characters a number or name plainly has.
func printableCaller(c string) string {
	var b strings.Builder
	for _, r := range c {
		if b.Len() >= 40 {
			break
		}
		if r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || strings.ContainsRune("+*#._-@", r) {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "anonymous"
	}
	return b.String()
}

func roundDur(d time.Duration) time.Duration { return d.Round(time.Second) }
