package certs

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Key log bounds: it is a debugging aid, so it runs for at most a day and
// keeps at most MaxKeyLogBytes (about 4000 handshakes) in memory.
const (
	MaxKeyLogDuration = 24 * time.Hour
	MaxKeyLogBytes    = 1 << 20
)

// ErrKeyLog wraps a refused key log request.
var ErrKeyLog = errors.New("certs: TLS key log")

// KeyLog is the opt-in TLS key log (NSS format, for Wireshark). It is off
// by default; enabled, it records the secrets of new handshakes until its
// deadline and then erases them by itself. The secrets decrypt captured
// traffic, so they stay in memory only (never on disk: a restart ends the
// log) and are handed out only to the admin API. Set it as
// tls.Config.KeyLogWriter.
type KeyLog struct {
	now func() time.Time
	log *slog.Logger

	mu    sync.Mutex
	until time.Time // zero: off
	buf   []byte
}

// NewKeyLog returns a disabled key log; now nil means the wall clock.
func NewKeyLog(now func() time.Time, log *slog.Logger) *KeyLog {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &KeyLog{now: now, log: log}
}

// Enable starts (or extends) the log for d, at most MaxKeyLogDuration.
func (k *KeyLog) Enable(d time.Duration) (time.Time, error) {
	if d <= 0 || d > MaxKeyLogDuration {
		return time.Time{}, fmt.Errorf("%w: duration must be 1 minute to %s", ErrKeyLog, MaxKeyLogDuration)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.until = k.now().Add(d)
	k.log.Warn("certs: TLS KEY LOG ENABLED: new HTTPS sessions can be decrypted by whoever downloads it", "until", k.until)
	return k.until, nil
}

// Disable stops the log and erases what it held.
func (k *KeyLog) Disable() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.stopLocked("disabled")
}

func (k *KeyLog) stopLocked(why string) {
	if k.until.IsZero() && k.buf == nil {
		return
	}
	clear(k.buf) // the secrets do not linger in freed memory longer than needed
	k.buf, k.until = nil, time.Time{}
	k.log.Warn("certs: TLS key log off, secrets erased", "why", why)
}

// expireLocked turns the log off once its deadline passed.
func (k *KeyLog) expireLocked() {
	if !k.until.IsZero() && !k.now().Before(k.until) {
		k.stopLocked("expired")
	}
}

// Status reports whether the log is on, until when, and its size.
func (k *KeyLog) Status() (on bool, until time.Time, size int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expireLocked()
	return !k.until.IsZero(), k.until, len(k.buf)
}

// Contents returns a copy of the recorded key lines; ok is false when the
// log is off (or has expired).
func (k *KeyLog) Contents() ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expireLocked()
	if k.until.IsZero() {
		return nil, false
	}
	return append([]byte(nil), k.buf...), true
}

// Write implements io.Writer for tls.Config.KeyLogWriter: crypto/tls writes
// one complete line per call. Off or full, lines are dropped; it never
// fails a handshake.
func (k *KeyLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.expireLocked()
	if k.until.IsZero() {
		return len(p), nil
	}
	if len(k.buf)+len(p) > MaxKeyLogBytes {
		return len(p), nil
	}
	k.buf = append(k.buf, p...)
	return len(p), nil
}
