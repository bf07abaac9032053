package reset

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// Refusals of a reset request over the control socket.
var (
	ErrRateLimited = errors.New("reset: too many factory reset requests; try again later")
	ErrNoTicket    = errors.New("reset: no factory reset was requested, or its confirmation expired")
	ErrBadToken    = errors.New("reset: wrong confirmation token; the request is void")
)

// Gate is PID 1's two-step check of a factory reset asked for by edgepbxd.
// PID 1 cannot verify the admin's password and second factor (only
// edgepbxd holds the accounts), so it trusts edgepbxd for who asked; what
// it enforces itself is that a reset is rare (rate limit), announced on the
// console, and confirmed with a single-use token PID 1 issued moments
// before, so a replayed or stray frame never erases a box.
type Gate struct {
	now      func() time.Time
	ttl      time.Duration
	interval time.Duration // minimum time between two Begins
	burst    int

	mu      sync.Mutex
	begins  []time.Time // within the last burst*interval
	token   []byte
	expires time.Time
}

// GateConfig configures a Gate; zero values take the defaults.
type GateConfig struct {
	Now func() time.Time
	// TTL is how long a token may be confirmed (default 2 min).
	TTL time.Duration
	// Window and Burst: at most Burst requests in any Window (default 3
	// per hour).
	Window time.Duration
	Burst  int
}

// NewGate returns a Gate.
func NewGate(c GateConfig) *Gate {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TTL == 0 {
		c.TTL = 2 * time.Minute
	}
	if c.Window == 0 {
		c.Window = time.Hour
	}
	if c.Burst == 0 {
		c.Burst = 3
	}
	return &Gate{now: c.Now, ttl: c.TTL, interval: c.Window, burst: c.Burst}
}

// Begin issues a confirmation token (32 hex digits) valid until expires. A
// new Begin voids the previous token.
func (g *Gate) Begin() (token string, expires time.Time, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := g.now()
	kept := g.begins[:0]
	for _, t := range g.begins {
		if now.Sub(t) < g.interval {
			kept = append(kept, t)
		}
	}
	g.begins = kept
	if len(g.begins) >= g.burst {
		return "", time.Time{}, ErrRateLimited
	}
	g.begins = append(g.begins, now)
	b := make([]byte, 16)
	rand.Read(b)
	g.token, g.expires = []byte(hex.EncodeToString(b)), now.Add(g.ttl)
	return string(g.token), g.expires, nil
}

// Confirm consumes the token. One wrong guess voids the request.
func (g *Gate) Confirm(token string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	want := g.token
	g.token = nil // single use, right or wrong
	if want == nil || !g.now().Before(g.expires) {
		return ErrNoTicket
	}
	if subtle.ConstantTimeCompare(want, []byte(token)) != 1 {
		return ErrBadToken
	}
	return nil
}
