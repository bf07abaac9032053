package mailer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket holds the settings, sealed with the device key (PutSecret).
const Bucket = "mail"

const settingsKey = "smtp"

// ResealSettings is the store.Resealer of Bucket (backups).
var ResealSettings = store.SecretResealer(Bucket, func(k string) bool { return k == settingsKey })

// ErrNotConfigured: no mail server is set.
var ErrNotConfigured = errors.New("mailer: no mail server configured")

// ErrGone is what a Job's Make answers when what it mails no longer
// exists (a deleted message): the job is dropped without retry.
var ErrGone = errors.New("mailer: nothing to send any more")

// ErrTooSoon: a test message was sent moments ago.
var ErrTooSoon = errors.New("mailer: a test message was sent less than a minute ago; try again later")

// Job is one message to send. Make builds it when it is sent (from what
// the box stores then), so the queue holds no audio and no secrets.
type Job struct {
	// Key names the job in logs without personal data ("voicemail 201/…").
	Key  string
	Make func(ctx context.Context) (Message, error)
}

// Config wires a Service. DB is required.
type Config struct {
	DB  *store.DB
	Log *slog.Logger
	Now func() time.Time
	// QueueLen bounds waiting jobs (default 64); Backoff are the waits
	// before each retry (default 1 min, 5 min, 15 min, 1 h, 3 h), after
	// which a job is dropped (what it mailed stays on the box).
	QueueLen int
	Backoff  []time.Duration
	// SendTimeout bounds one delivery (default 60 s); TestEvery spaces
	// the admin's test messages (default 1 min).
	SendTimeout time.Duration
	TestEvery   time.Duration
}

type job struct {
	Job
	tries int
	next  time.Time
}

// Service stores the settings and sends queued jobs (Run).
type Service struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	mu       sync.Mutex
	queue    []*job
	lastTest time.Time
	stats    Stats
}

// Stats are the queue's counters.
type Stats struct {
	Queued  int    `json:"queued"`
	Sent    uint64 `json:"sent"`
	Retried uint64 `json:"retried"`
	Dropped uint64 `json:"dropped"` // given up, or refused when the queue was full
	// LastError is the last delivery error (no secrets: the server's
	// refusal or the connection error).
	LastError string `json:"last_error,omitempty"`
}

// New checks cfg and fills defaults.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil {
		return nil, errors.New("mailer: DB is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 64
	}
	if cfg.Backoff == nil {
		cfg.Backoff = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 3 * time.Hour}
	}
	if cfg.SendTimeout <= 0 {
		cfg.SendTimeout = 60 * time.Second
	}
	if cfg.TestEvery <= 0 {
		cfg.TestEvery = time.Minute
	}
	return &Service{cfg: cfg, log: cfg.Log, wake: make(chan struct{}, 1)}, nil
}

// Settings returns the stored settings (ok false: none).
func (s *Service) Settings() (Settings, bool, error) {
	var st Settings
	var ok bool
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		raw, found, err := tx.GetSecret(Bucket, settingsKey)
		if err != nil || !found {
			return err
		}
		ok = true
		return json.Unmarshal(raw, &st)
	})
	if err != nil {
		return Settings{}, false, fmt.Errorf("mailer: settings: %w", err)
	}
	return st, ok, nil
}

// SetSettings validates and stores st sealed; an empty Password with a
// User keeps the stored password. also runs in the same transaction (an
// audit entry).
func (s *Service) SetSettings(st Settings, also ...func(*store.Tx) error) error {
	if st.User != "" && st.Password == "" {
		if old, ok, err := s.Settings(); err == nil && ok && old.User != "" {
			st.Password = old.Password
		}
	}
	if st.User == "" {
		st.Password = ""
	}
	if err := st.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return tx.PutSecret(Bucket, settingsKey, raw)
	})
}

// ClearSettings removes the settings (mail off).
func (s *Service) ClearSettings(also ...func(*store.Tx) error) error {
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		for _, f := range also {
			if err := f(tx); err != nil {
				return err
			}
		}
		return tx.Delete(Bucket, settingsKey)
	})
}

// Configured reports whether mail can be sent at all.
func (s *Service) Configured() bool {
	_, ok, err := s.Settings()
	return ok && err == nil
}

// Enqueue adds j; false when mail is off or the queue is full (logged:
// nothing is lost but the e-mail).
func (s *Service) Enqueue(j Job) bool {
	if !s.Configured() {
		return false
	}
	s.mu.Lock()
	if len(s.queue) >= s.cfg.QueueLen {
		s.stats.Dropped++
		s.mu.Unlock()
		s.log.Warn("mail: queue full, e-mail not sent", "job", j.Key)
		return false
	}
	s.queue = append(s.queue, &job{Job: j, next: s.cfg.Now()})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Queued = len(s.queue)
	return st
}

// SendTest sends a short message to to now, at most once per TestEvery,
// and answers the outcome.
func (s *Service) SendTest(ctx context.Context, to string) error {
	if err := CheckAddress(to); err != nil {
		return err
	}
	s.mu.Lock()
	now := s.cfg.Now()
	if !s.lastTest.IsZero() && now.Sub(s.lastTest) < s.cfg.TestEvery {
		s.mu.Unlock()
		return ErrTooSoon
	}
	s.lastTest = now
	s.mu.Unlock()
	st, ok, err := s.Settings()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotConfigured
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	return s.deliver(ctx, st, Message{To: to, Subject: "edgepbx: test message",
		Body: "This is a test message from your edgepbx. Voicemail to e-mail will use this server.\n"})
}

func (s *Service) deliver(ctx context.Context, st Settings, m Message) error {
	raw, err := Build(st.From, m, s.cfg.Now())
	if err != nil {
		return err
	}
	return Send(ctx, st, m.To, raw)
}

// Run sends queued jobs until ctx ends, one at a time.
func (s *Service) Run(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		j, wait := s.due()
		if j != nil {
			s.attempt(ctx, j)
			continue
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-t.C:
		}
	}
}

// due takes the first job whose time has come, or says how long to wait.
func (s *Service) due() (*job, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	wait := time.Hour
	for i, j := range s.queue {
		if !j.next.After(now) {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			return j, 0
		}
		wait = min(wait, j.next.Sub(now))
	}
	return nil, wait
}

func (s *Service) attempt(ctx context.Context, j *job) {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.SendTimeout)
	defer cancel()
	err := s.send(sctx, j)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.stats.Sent++
		s.log.Info("mail: sent", "job", j.Key)
		return
	case errors.Is(err, ErrGone), errors.Is(err, ErrInvalid), errors.Is(err, ErrNotConfigured):
		s.stats.Dropped++
		s.log.Warn("mail: not sent", "job", j.Key, "err", err)
		return
	}
	s.stats.LastError = err.Error()
	if ctx.Err() != nil || j.tries >= len(s.cfg.Backoff) {
		s.stats.Dropped++
		s.log.Warn("mail: given up", "job", j.Key, "tries", j.tries+1, "err", err)
		return
	}
	j.next = s.cfg.Now().Add(s.cfg.Backoff[j.tries])
	j.tries++
	s.stats.Retried++
	s.queue = append(s.queue, j)
	s.log.Warn("mail: will retry", "job", j.Key, "in", s.cfg.Backoff[j.tries-1], "err", err)
}

func (s *Service) send(ctx context.Context, j *job) error {
	st, ok, err := s.Settings()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotConfigured
	}
	m, err := j.Make(ctx)
	if err != nil {
		return err
	}
	return s.deliver(ctx, st, m)
}
