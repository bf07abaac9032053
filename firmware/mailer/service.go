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

// Job is one message to send: Kind names the Maker that builds it when it
// is sent (from what the box stores then) and Ref what it mails, so the
// queue holds no audio, no address and no secret. Jobs are kept in the
// store until sent or given up: a restart (a nightly update) loses no mail.
type Job struct {
	Kind string // a registered Maker (Handle), e.g. "voicemail"
	Ref  string // the Maker's reference, e.g. "201/<message id>"; no personal data
}

// key names the job in logs.
func (j Job) key() string { return j.Kind + " " + j.Ref }

// Maker builds the message of a Job of its kind from the job's Ref.
// ErrGone drops the job without retry.
type Maker func(ctx context.Context, ref string) (Message, error)

// QueueBucket keeps the waiting jobs, one record each (queuedJob).
const QueueBucket = "mail.queue"

// maxRef bounds Kind and Ref, in the store as in memory.
const maxRef = 256

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
	id    string // its key in QueueBucket
	tries int
	next  time.Time
}

// queuedJob is a job's record in QueueBucket.
type queuedJob struct {
	Kind  string    `json:"kind"`
	Ref   string    `json:"ref"`
	Tries int       `json:"tries"`
	Next  time.Time `json:"next"`
}

// Service stores the settings and sends queued jobs (Run).
type Service struct {
	cfg  Config
	log  *slog.Logger
	wake chan struct{}

	mu       sync.Mutex
	makers   map[string]Maker
	queue    []*job
	loaded   bool // the stored queue was read (Run)
	seq      uint64
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
	return &Service{cfg: cfg, log: cfg.Log, wake: make(chan struct{}, 1), makers: map[string]Maker{}}, nil
}

// Handle registers the Maker of kind; register before Run, which drops
// stored jobs of kinds nobody handles.
func (s *Service) Handle(kind string, m Maker) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.makers[kind] = m
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

// Enqueue adds j and stores it; false when mail is off, j's kind has no
// Maker, or the queue is full (logged: nothing is lost but the e-mail).
func (s *Service) Enqueue(j Job) bool {
	if !s.Configured() {
		return false
	}
	if len(j.Kind) > maxRef || len(j.Ref) > maxRef || j.Kind == "" {
		s.log.Warn("mail: job refused", "kind", fmt.Sprintf("%.32q", j.Kind))
		return false
	}
	s.mu.Lock()
	if s.makers[j.Kind] == nil {
		s.mu.Unlock()
		s.log.Warn("mail: no maker for job", "job", j.key())
		return false
	}
	if len(s.queue) >= s.cfg.QueueLen {
		s.stats.Dropped++
		s.mu.Unlock()
		s.log.Warn("mail: queue full, e-mail not sent", "job", j.key())
		return false
	}
	now := s.cfg.Now()
	s.seq++
	// Keys sort in the order jobs came, so a restart keeps that order.
	q := &job{Job: j, id: fmt.Sprintf("%020d-%06d", now.UnixNano(), s.seq%1000000), next: now}
	s.queue = append(s.queue, q)
	s.mu.Unlock()
	if err := s.store(q); err != nil {
		// Still sent from memory; only a restart before then would lose it.
		s.log.Warn("mail: job not stored", "job", j.key(), "err", err)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
	return true
}

// store writes q's record; forget removes it.
func (s *Service) store(q *job) error {
	return s.cfg.DB.Update(func(tx *store.Tx) error {
		return tx.Put(QueueBucket, q.id, queuedJob{Kind: q.Kind, Ref: q.Ref, Tries: q.tries, Next: q.next})
	})
}

func (s *Service) forget(q *job) {
	if err := s.cfg.DB.Update(func(tx *store.Tx) error { return tx.Delete(QueueBucket, q.id) }); err != nil {
		s.log.Warn("mail: job not removed from the store", "job", q.key(), "err", err)
	}
}

// load reads the stored queue once, at the start of Run: jobs of handled
// kinds come back with their tries and times; records that do not decode,
// are out of bounds, name a kind nobody handles or exceed the queue's
// bound are removed (logged).
func (s *Service) load() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loaded {
		return nil
	}
	var drop []string
	before := len(s.queue)
	queued := map[string]bool{} // enqueued before Run: already in memory
	for _, q := range s.queue {
		queued[q.id] = true
	}
	err := s.cfg.DB.View(func(tx *store.Tx) error {
		return tx.ForEach(QueueBucket, func(key string, raw []byte) error {
			if queued[key] {
				return nil
			}
			var r queuedJob
			switch err := json.Unmarshal(raw, &r); {
			case err != nil, r.Kind == "", len(r.Kind) > maxRef, len(r.Ref) > maxRef, r.Tries < 0, r.Tries > len(s.cfg.Backoff):
				s.log.Warn("mail: stored job unreadable, removed", "key", fmt.Sprintf("%.64q", key))
				drop = append(drop, key)
			case s.makers[r.Kind] == nil:
				s.log.Warn("mail: stored job of a kind nobody sends, removed", "job", r.Kind+" "+r.Ref)
				drop = append(drop, key)
			case len(s.queue) >= s.cfg.QueueLen:
				s.stats.Dropped++
				s.log.Warn("mail: stored job over the queue's bound, removed", "job", r.Kind+" "+r.Ref)
				drop = append(drop, key)
			default:
				s.queue = append(s.queue, &job{Job: Job{Kind: r.Kind, Ref: r.Ref}, id: key, tries: r.Tries, next: r.Next})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("mailer: read the stored queue: %w", err)
	}
	if len(drop) > 0 {
		if err := s.cfg.DB.Update(func(tx *store.Tx) error {
			for _, k := range drop {
				if err := tx.Delete(QueueBucket, k); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("mailer: clean the stored queue: %w", err)
		}
	}
	s.loaded = true
	if n := len(s.queue) - before; n > 0 {
		s.log.Info("mail: queued e-mail from before the restart", "jobs", n)
	}
	return nil
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
	if err := s.load(); err != nil {
		// The queue still works from memory; the stored jobs wait for the
		// next start.
		s.log.Error("mail: stored queue not read", "err", err)
	}
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
	if ctx.Err() != nil {
		// Stopped (shutdown, restart): the job stays stored as it was and
		// is tried again after the start; this try does not count.
		s.mu.Lock()
		s.queue = append(s.queue, j)
		s.mu.Unlock()
		return
	}
	s.mu.Lock()
	switch {
	case err == nil:
		s.stats.Sent++
		s.mu.Unlock()
		s.forget(j)
		s.log.Info("mail: sent", "job", j.key())
		return
	case errors.Is(err, ErrGone), errors.Is(err, ErrInvalid), errors.Is(err, ErrNotConfigured):
		s.stats.Dropped++
		s.mu.Unlock()
		s.forget(j)
		s.log.Warn("mail: not sent", "job", j.key(), "err", err)
		return
	}
	s.stats.LastError = err.Error()
	if j.tries >= len(s.cfg.Backoff) {
		s.stats.Dropped++
		s.mu.Unlock()
		s.forget(j)
		s.log.Warn("mail: given up", "job", j.key(), "tries", j.tries+1, "err", err)
		return
	}
	wait := s.cfg.Backoff[j.tries]
	j.next = s.cfg.Now().Add(wait)
	j.tries++
	s.stats.Retried++
	s.queue = append(s.queue, j)
	s.mu.Unlock()
	if err := s.store(j); err != nil {
		s.log.Warn("mail: retry not stored", "job", j.key(), "err", err)
	}
	s.log.Warn("mail: will retry", "job", j.key(), "in", wait, "err", err)
}

func (s *Service) send(ctx context.Context, j *job) error {
	st, ok, err := s.Settings()
	if err != nil {
		return err
	}
	if !ok {
		return ErrNotConfigured
	}
	s.mu.Lock()
	mk := s.makers[j.Kind]
	s.mu.Unlock()
	if mk == nil {
		return fmt.Errorf("%w: no maker for %q", ErrGone, j.Kind)
	}
	m, err := mk(ctx, j.Ref)
	if err != nil {
		return err
	}
	return s.deliver(ctx, st, m)
}
