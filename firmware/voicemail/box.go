// Package voicemail is the box's voicemail: a mailbox per extension with
// greetings and messages, reached when a callee does not answer or has no
// phone (firmware/call sends the call here) and by the feature codes of
// the features table (*97, *98; firmware/features). Message audio is
// stored encrypted at rest with the media data key; the metadata (caller, time, duration, new/old, the PIN's
// argon2id hash, the lockout) lives in the bbolt store.
//
// PINs have no default: the admin sets one (shown once) or the owner sets
// it from the own phone at first access. Wrong PINs lock the mailbox and
// are charged to the SIP edge's guard like failed digests.
package voicemail

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// MWI is told every change of a mailbox's message counts (the SIP edge's
// message-summary NOTIFYs, RFC 3842).
type MWI interface {
	MailboxChanged(ext string, newMsgs, oldMsgs int)
}

// Guard is the SIP edge's brute-force guard as voicemail uses it: a wrong
// PIN counts like a failed digest of the source, the same throttles and
// bans follow. account names the mailbox ("voicemail/201").
type Guard interface {
	PINFailed(src netip.Addr, account string) (banned bool)
	PINThrottled(src netip.Addr, account string) bool
	PINOK(src netip.Addr, account string)
}

// Hasher hashes PINs slowly (argon2id); *auth.Hasher implements it.
type Hasher interface {
	Hash(ctx context.Context, secret string) (string, error)
	Verify(ctx context.Context, secret, encoded string) (ok, rehash bool, err error)
}

// Events receives security events; *logs.Log implements it.
type Events interface {
	Record(logs.Event)
}

// Security event kinds (stable names).
const (
	KindPINFailure logs.Kind = "voicemail.pin_failure"
	KindLocked     logs.Kind = "voicemail.locked"
)

// Errors.
var (
	ErrNoMailbox = errors.New("voicemail: no such mailbox")
	ErrLocked    = errors.New("voicemail: mailbox locked after wrong PINs")
	ErrWrongPIN  = errors.New("voicemail: wrong PIN")
	ErrNoPIN     = errors.New("voicemail: no PIN set")
	ErrFull      = errors.New("voicemail: mailbox full")
	ErrNoMessage = errors.New("voicemail: no such message")
	// ErrExpired is a message whose audio the retention policy deleted:
	// its record is removed when this is found.
	ErrExpired = fmt.Errorf("%w: expired, its audio was deleted by the retention policy", ErrNoMessage)
	// ErrAudioGone is an Audio file that no longer exists.
	ErrAudioGone = errors.New("voicemail: audio file gone")
)

// Config wires a Service. DB, Dir, Audio, Hasher and Exists are required.
type Config struct {
	DB     *store.DB
	Audio  Audio
	Hasher Hasher
	// Exists reports whether ext is an extension (it has a mailbox).
	Exists  func(ext string) bool
	Guard   Guard  // nil: wrong PINs only lock the mailbox
	MWI     MWI    // nil: nobody is told
	Events  Events // nil: no security events
	Mail    Mailer // nil: no voicemail to e-mail (email.go)
	Prompts Prompts
	Log     *slog.Logger
	Now     func() time.Time

	// MaxMessages per mailbox (default 100); MaxMessage bounds one
	// message (default 3 min); LockAfter wrong PINs in a row lock the
	// mailbox for LockFor (defaults 5 and 15 min; the owner's way in
	// after that is the right PIN, or the admin unlocks or sets a PIN).
	MaxMessages int
	MaxMessage  time.Duration
	LockAfter   int
	LockFor     time.Duration
}

// Mailbox is one extension's mailbox as stored.
type Mailbox struct {
	Ext     string `json:"ext"`
	PINHash string `json:"pin_hash,omitempty"` // argon2id; "": not set yet
	// SkipPINOwnPhone lets the owner's authenticated phone in without
	// the PIN; only the admin sets it.
	SkipPINOwnPhone bool   `json:"skip_pin_own_phone,omitempty"`
	Email           string `json:"email,omitempty"`
	AttachAudio     bool   `json:"attach_audio,omitempty"`
	// Greetings recorded by the owner ("unavailable", "busy", "name")
	// and their recordings.
	Greetings   map[string]string `json:"greetings,omitempty"`
	FailedPINs  int               `json:"failed_pins,omitempty"`
	LockedUntil time.Time         `json:"locked_until,omitzero"`
}

// Message is one voicemail message.
type Message struct {
	ID       string        `json:"id"`
	Ext      string        `json:"ext"`
	Caller   string        `json:"caller"`
	Time     time.Time     `json:"time"`
	Duration time.Duration `json:"duration"`
	New      bool          `json:"new"`
	Rate     int           `json:"rate"`
	File     string        `json:"-"` // the recording (never shown: it names a file)
}

// messageRec is a message as stored (with its recording).
type messageRec struct {
	Message
	File string `json:"file"`
}

const bucket = "voicemail"

func boxKey(ext string) string     { return "box/" + ext }
func msgPrefix(ext string) string  { return "msg/" + ext + "/" }
func msgKey(ext, id string) string { return msgPrefix(ext) + id }

var (
	extRE = regexp.MustCompile(`^[0-9]{1,16}$`)
	idRE  = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{8}$`)
)

// ValidExt reports whether s can name a mailbox (numeric extensions; the
// name is also a directory name).
func ValidExt(s string) bool { return extRE.MatchString(s) }

// ValidID reports whether s is a message id the service makes.
func ValidID(s string) bool { return idRE.MatchString(s) }

// Service is the voicemail system. It is safe for concurrent use.
type Service struct {
	cfg Config
	log *slog.Logger
	mu  sync.Mutex // serialises read-modify-write of mailbox records
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Audio == nil || cfg.Hasher == nil || cfg.Exists == nil {
		return nil, errors.New("voicemail: DB, Audio, Hasher and Exists are required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxMessages <= 0 {
		cfg.MaxMessages = 100
	}
	if cfg.MaxMessage <= 0 {
		cfg.MaxMessage = 3 * time.Minute
	}
	if cfg.LockAfter <= 0 {
		cfg.LockAfter = 5
	}
	if cfg.LockFor <= 0 {
		cfg.LockFor = 15 * time.Minute
	}
	if cfg.Prompts == nil {
		cfg.Prompts = tonePrompts{}
	}
	s := &Service{cfg: cfg, log: cfg.Log}
	if cfg.Mail != nil {
		cfg.Mail.Handle(mailKind, s.mailRef)
	}
	return s, nil
}

// has reports whether ext has a mailbox.
func (s *Service) has(ext string) bool { return ValidExt(ext) && s.cfg.Exists(ext) }

// Mailbox returns ext's mailbox (a fresh one, without PIN, if none is
// stored yet).
func (s *Service) Mailbox(ext string) (Mailbox, error) {
	if !s.has(ext) {
		return Mailbox{}, ErrNoMailbox
	}
	b := Mailbox{Ext: ext}
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		_, err := tx.Get(bucket, boxKey(ext), &b)
		return err
	})
	return b, err
}

// update changes ext's mailbox record in one transaction, with also (an
// audit entry) in the same transaction when given.
func (s *Service) update(ext string, fn func(*Mailbox) error, also ...func(*store.Tx) error) (Mailbox, error) {
	if !s.has(ext) {
		return Mailbox{}, ErrNoMailbox
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var b Mailbox
	err := s.cfg.DB.Update(func(tx *store.Tx) error {
		b = Mailbox{Ext: ext}
		if _, err := tx.Get(bucket, boxKey(ext), &b); err != nil {
			return err
		}
		if err := fn(&b); err != nil {
			return err
		}
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return tx.Put(bucket, boxKey(ext), b)
	})
	return b, err
}

// SetPIN sets ext's PIN after the policy check.
func (s *Service) SetPIN(ctx context.Context, ext, pin string, also ...func(*store.Tx) error) error {
	if err := CheckPIN(pin, ext); err != nil {
		return err
	}
	h, err := s.cfg.Hasher.Hash(ctx, pin)
	if err != nil {
		return fmt.Errorf("voicemail: hash PIN: %w", err)
	}
	_, err = s.update(ext, func(b *Mailbox) error {
		b.PINHash, b.FailedPINs, b.LockedUntil = h, 0, time.Time{}
		return nil
	}, also...)
	return err
}

// ResetPIN is the admin's: a new random PIN is set and returned (shown
// once, never stored in clear), and the lock is lifted.
func (s *Service) ResetPIN(ctx context.Context, ext string, also ...func(*store.Tx) error) (string, error) {
	pin, err := GeneratePIN(ext, MinPINLen)
	if err != nil {
		return "", err
	}
	if err := s.SetPIN(ctx, ext, pin, also...); err != nil {
		return "", err
	}
	return pin, nil
}

// Unlock lifts a lockout (admin).
func (s *Service) Unlock(ext string, also ...func(*store.Tx) error) error {
	_, err := s.update(ext, func(b *Mailbox) error {
		b.FailedPINs, b.LockedUntil = 0, time.Time{}
		return nil
	}, also...)
	return err
}

// Options are the admin's per-mailbox settings.
type Options struct {
	// SkipPINOwnPhone lets the owner's authenticated phone in without
	// the PIN.
	SkipPINOwnPhone bool   `json:"skip_pin_own_phone"`
	Email           string `json:"email"`        // voicemail to e-mail ("": off)
	AttachAudio     bool   `json:"attach_audio"` // the audio, or only a notice
}

// ErrOptions wraps refused options.
var ErrOptions = errors.New("voicemail: invalid options")

// SetOptions stores the admin's per-mailbox settings.
func (s *Service) SetOptions(ext string, o Options, also ...func(*store.Tx) error) error {
	if o.Email != "" {
		if a, err := mail.ParseAddress(o.Email); err != nil || a.Address != o.Email || len(o.Email) > 254 {
			return fmt.Errorf("%w: e-mail address %.64q", ErrOptions, o.Email)
		}
	}
	_, err := s.update(ext, func(b *Mailbox) error {
		b.SkipPINOwnPhone, b.Email, b.AttachAudio = o.SkipPINOwnPhone, o.Email, o.AttachAudio
		return nil
	}, also...)
	return err
}

// Login checks pin for ext's mailbox, called from src. A locked mailbox
// refuses even the right PIN; a wrong one counts towards the lock and is
// charged to the guard when charge is set (the source is the caller's
// own: a digest-authenticated phone, not a trunk carrying many callers).
func (s *Service) Login(ctx context.Context, ext, pin string, src netip.Addr, charge bool) error {
	b, err := s.Mailbox(ext)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	account := "voicemail/" + ext
	if now.Before(b.LockedUntil) {
		return ErrLocked
	}
	if charge && s.cfg.Guard != nil && s.cfg.Guard.PINThrottled(src, account) {
		return ErrLocked
	}
	if b.PINHash == "" {
		return ErrNoPIN
	}
	ok := false
	if len(pin) <= MaxPINLen {
		ok, _, err = s.cfg.Hasher.Verify(ctx, pin, b.PINHash)
		if err != nil {
			return fmt.Errorf("voicemail: verify PIN: %w", err)
		}
	}
	if ok {
		if b.FailedPINs != 0 {
			if _, err := s.update(ext, func(b *Mailbox) error { b.FailedPINs = 0; return nil }); err != nil {
				return err
			}
		}
		if charge && s.cfg.Guard != nil {
			s.cfg.Guard.PINOK(src, account)
		}
		return nil
	}
	locked := false
	if _, err := s.update(ext, func(b *Mailbox) error {
		b.FailedPINs++
		if b.FailedPINs >= s.cfg.LockAfter {
			b.LockedUntil, b.FailedPINs, locked = now.Add(s.cfg.LockFor), 0, true
		}
		return nil
	}); err != nil {
		return err
	}
	s.event(KindPINFailure, src, ext, "wrong voicemail PIN")
	if locked {
		s.event(KindLocked, src, ext, fmt.Sprintf("mailbox locked for %s after %d wrong PINs", s.cfg.LockFor, s.cfg.LockAfter))
	}
	if charge && s.cfg.Guard != nil {
		s.cfg.Guard.PINFailed(src, account)
	}
	if locked {
		return ErrLocked
	}
	return ErrWrongPIN
}

func (s *Service) event(kind logs.Kind, src netip.Addr, ext, reason string) {
	s.log.Warn("voicemail: "+reason, "mailbox", ext, "source", src)
	if s.cfg.Events != nil {
		source := ""
		if src.IsValid() {
			source = src.String()
		}
		s.cfg.Events.Record(logs.Event{Kind: kind, Source: source, User: ext, Reason: reason})
	}
}

// newID is a message id: time-ordered, with a random tail.
func newID(t time.Time) (string, error) {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		return "", err
	}
	return fmt.Sprintf("%016x-%s", uint64(t.UnixNano()), hex.EncodeToString(r[:])), nil
}

// Messages lists ext's messages, new first, newest first within each.
func (s *Service) Messages(ext string) ([]Message, error) {
	if !s.has(ext) {
		return nil, ErrNoMailbox
	}
	var out []Message
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		var err error
		out, err = messages(tx, ext)
		return err
	})
	if err != nil {
		return nil, err
	}
	sortMessages(out)
	return out, nil
}

func messages(tx *store.Tx, ext string) ([]Message, error) {
	var out []Message
	p := msgPrefix(ext)
	err := tx.ForEach(bucket, func(k string, raw []byte) error {
		if !strings.HasPrefix(k, p) {
			return nil
		}
		var m messageRec
		if err := jsonUnmarshal(raw, &m); err != nil {
			return fmt.Errorf("voicemail: message %s: %w", k, err)
		}
		m.Message.File = m.File
		out = append(out, m.Message)
		return nil
	})
	return out, err
}

func sortMessages(ms []Message) {
	// New before old; newest first within each.
	for i := 1; i < len(ms); i++ {
		for j := i; j > 0 && less(ms[j], ms[j-1]); j-- {
			ms[j], ms[j-1] = ms[j-1], ms[j]
		}
	}
}

func less(a, b Message) bool {
	if a.New != b.New {
		return a.New
	}
	return a.Time.After(b.Time)
}

// Counts returns ext's new and old message counts.
func (s *Service) Counts(ext string) (newMsgs, oldMsgs int, err error) {
	ms, err := s.Messages(ext)
	for _, m := range ms {
		if m.New {
			newMsgs++
		} else {
			oldMsgs++
		}
	}
	return newMsgs, oldMsgs, err
}

func (s *Service) notify(ext string) {
	if s.cfg.MWI == nil {
		return
	}
	n, o, err := s.Counts(ext)
	if err != nil {
		s.log.Warn("voicemail: counts", "mailbox", ext, "err", err)
		return
	}
	s.cfg.MWI.MailboxChanged(ext, n, o)
}

// Message returns one message of ext.
func (s *Service) Message(ext, id string) (Message, error) {
	if !s.has(ext) {
		return Message{}, ErrNoMailbox
	}
	if !ValidID(id) {
		return Message{}, ErrNoMessage
	}
	var m messageRec
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		ok, err := tx.Get(bucket, msgKey(ext, id), &m)
		if err == nil && !ok {
			err = ErrNoMessage
		}
		return err
	})
	m.Message.File = m.File
	return m.Message, err
}

// MarkOld marks a message heard.
func (s *Service) MarkOld(ext, id string) error {
	if _, err := s.Message(ext, id); err != nil {
		return err
	}
	s.mu.Lock()
	err := s.cfg.DB.Update(func(tx *store.Tx) error {
		var m messageRec
		ok, err := tx.Get(bucket, msgKey(ext, id), &m)
		if err != nil || !ok || !m.New {
			return err
		}
		m.New = false
		return tx.Put(bucket, msgKey(ext, id), m)
	})
	s.mu.Unlock()
	if err == nil {
		s.notify(ext)
	}
	return err
}

// Delete removes a message: its record, then its file (overwritten
// first would not help on flash; the file is ciphertext under the media
// key, which a factory reset erases).
func (s *Service) Delete(ext, id string, also ...func(*store.Tx) error) error {
	m, err := s.Message(ext, id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	err = s.cfg.DB.Update(func(tx *store.Tx) error {
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return tx.Delete(bucket, msgKey(ext, id))
	})
	s.mu.Unlock()
	if err != nil {
		return err
	}
	s.removeFile(m.File)
	s.notify(ext)
	return nil
}

func (s *Service) removeFile(id string) {
	if id == "" {
		return
	}
	if err := s.cfg.Audio.Remove(id); err != nil {
		s.log.Warn("voicemail: remove recording", "recording", id, "err", err)
	}
}

// Audio reads a message's audio (decrypted): sample rate and PCM.
func (s *Service) Audio(ext, id string) (int, []int16, error) {
	m, err := s.Message(ext, id)
	if err != nil {
		return 0, nil, err
	}
	rate, pcm, err := s.cfg.Audio.Read(m.File)
	if errors.Is(err, ErrAudioGone) {
		s.expire(m)
		return 0, nil, fmt.Errorf("voicemail: message %s/%s: %w", ext, id, ErrExpired)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("voicemail: message %s/%s: %w", ext, id, err)
	}
	return rate, pcm, nil
}

// expire removes the record of a message whose file retention deleted
// (if it still names that file) and tells MWI.
func (s *Service) expire(m Message) {
	s.mu.Lock()
	err := s.cfg.DB.Update(func(tx *store.Tx) error {
		var cur messageRec
		ok, err := tx.Get(bucket, msgKey(m.Ext, m.ID), &cur)
		if err != nil || !ok || cur.File != m.File {
			return err
		}
		return tx.Delete(bucket, msgKey(m.Ext, m.ID))
	})
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("voicemail: expire message", "mailbox", m.Ext, "id", m.ID, "err", err)
		return
	}
	s.log.Info("voicemail: message expired (retention deleted its audio)", "mailbox", m.Ext, "id", m.ID)
	s.notify(m.Ext)
}

// Prune removes the records of messages whose audio retention deleted
// and of greetings likewise gone, and updates MWI for the mailboxes it
// changed; it returns how many messages it removed. The daemon runs it
// after each retention sweep.
func (s *Service) Prune() (int, error) {
	var msgs []Message
	greets := map[string][]string{} // mailbox -> greeting files
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		return tx.ForEach(bucket, func(k string, raw []byte) error {
			switch {
			case strings.HasPrefix(k, "msg/"):
				var m messageRec
				if err := jsonUnmarshal(raw, &m); err != nil {
					return fmt.Errorf("voicemail: message %s: %w", k, err)
				}
				m.Message.File = m.File
				msgs = append(msgs, m.Message)
			case strings.HasPrefix(k, "box/"):
				var b Mailbox
				if err := jsonUnmarshal(raw, &b); err != nil {
					return fmt.Errorf("voicemail: mailbox %s: %w", k, err)
				}
				for _, id := range b.Greetings {
					greets[strings.TrimPrefix(k, "box/")] = append(greets[strings.TrimPrefix(k, "box/")], id)
				}
			}
			return nil
		})
	})
	if err != nil {
		return 0, err
	}
	// Listed after the records: a file is created before the record that
	// names it, so a record just added is never taken for expired.
	stored := s.cfg.Audio.Stored()
	n := 0
	for _, m := range msgs {
		if m.File != "" && !stored[m.File] {
			s.expire(m)
			n++
		}
	}
	for ext, ids := range greets {
		if !slices.ContainsFunc(ids, func(id string) bool { return id != "" && !stored[id] }) {
			continue
		}
		if _, err := s.update(ext, func(b *Mailbox) error {
			for name, id := range b.Greetings {
				if slices.Contains(ids, id) && !stored[id] {
					delete(b.Greetings, name)
				}
			}
			return nil
		}); err != nil && !errors.Is(err, ErrNoMailbox) {
			return n, err
		}
	}
	return n, nil
}

// File is the recording id of a message (tests, backups).
func (s *Service) File(ext, id string) (string, error) {
	m, err := s.Message(ext, id)
	return m.File, err
}

// NotifyAll tells MWI the counts of every mailbox that has messages: at
// start, so the message-summary state survives a restart.
func (s *Service) NotifyAll() error {
	if s.cfg.MWI == nil {
		return nil
	}
	counts := map[string][2]int{}
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		return tx.ForEach(bucket, func(k string, raw []byte) error {
			rest, ok := strings.CutPrefix(k, "msg/")
			if !ok {
				return nil
			}
			ext, _, _ := strings.Cut(rest, "/")
			var m messageRec
			if err := jsonUnmarshal(raw, &m); err != nil {
				return fmt.Errorf("voicemail: message %s: %w", k, err)
			}
			c := counts[ext]
			if m.New {
				c[0]++
			} else {
				c[1]++
			}
			counts[ext] = c
			return nil
		})
	})
	if err != nil {
		return err
	}
	for ext, c := range counts {
		if s.has(ext) {
			s.cfg.MWI.MailboxChanged(ext, c[0], c[1])
		}
	}
	return nil
}
