package license

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// The TLS session with the licence server is kept sealed in the store, so
// the first check-in after a restart resumes yesterday's session: a resumed
// handshake carries no certificate and no certificate signature, which is
// what keeps that check-in inside the 2 KB a day too.
const (
	sessionKey      = "tls_session" // in stateBucket
	sessionAD       = "license/tls-session"
	maxSessionBytes = 16 << 10 // a session state holds the server's chain; far below this
)

// storedSession is the sealed record: the cache key (the server name), the
// server's ticket and the client's session state (resumption secret,
// verified chain) as serialised by crypto/tls.
type storedSession struct {
	Key    string `json:"key"`
	Ticket []byte `json:"ticket"`
	State  []byte `json:"state"`
}

// sessionCache is a tls.ClientSessionCache holding the one session edgepbx
// has: with the licence server. crypto/tls re-verifies a resumed session's
// chain, expiry and host name against the current configuration, and the
// server refuses tickets it cannot decrypt, so a stale record costs one
// full handshake, never trust.
type sessionCache struct {
	db  *store.DB
	log *slog.Logger

	mu     sync.Mutex
	loaded bool
	key    string
	cs     *tls.ClientSessionState
}

func newSessionCache(db *store.DB, log *slog.Logger) *sessionCache {
	return &sessionCache{db: db, log: log}
}

// Get returns the session for key, reading the store the first time.
func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded {
		c.loaded = true
		if err := c.load(); err != nil {
			c.log.Warn("license: stored TLS session unusable; next check-in does a full handshake", "err", err)
		}
	}
	if c.cs == nil || c.key != key {
		return nil, false
	}
	return c.cs, true
}

func (c *sessionCache) load() error {
	var sealed []byte
	var ok bool
	if err := c.db.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(stateBucket, sessionKey, &sealed)
		return err
	}); err != nil || !ok {
		return err
	}
	if len(sealed) > maxSessionBytes {
		return fmt.Errorf("stored session is %d bytes", len(sealed))
	}
	pt, err := c.db.Unseal(sealed, sessionAD)
	if err != nil {
		return err
	}
	var s storedSession
	if err := json.Unmarshal(pt, &s); err != nil {
		return err
	}
	st, err := tls.ParseSessionState(s.State)
	if err != nil {
		return err
	}
	cs, err := tls.NewResumptionState(s.Ticket, st)
	if err != nil {
		return err
	}
	c.key, c.cs = s.Key, cs
	return nil
}

// Put keeps cs for key in memory and in the store; crypto/tls calls it
// with a nil cs to drop a session it found unusable.
func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.loaded = true
	c.key, c.cs = key, cs
	if err := c.save(key, cs); err != nil {
		// Only costs bytes: the next check-in after a restart is a full one.
		c.log.Warn("license: keep TLS session", "err", err)
	}
}

func (c *sessionCache) save(key string, cs *tls.ClientSessionState) error {
	if cs == nil {
		return c.db.Update(func(tx *store.Tx) error { return tx.Delete(stateBucket, sessionKey) })
	}
	ticket, st, err := cs.ResumptionState()
	if err != nil || st == nil {
		return fmt.Errorf("session state: %v", err)
	}
	raw, err := st.Bytes()
	if err != nil {
		return err
	}
	pt, err := json.Marshal(storedSession{Key: key, Ticket: ticket, State: raw})
	if err != nil {
		return err
	}
	sealed, err := c.db.Seal(pt, sessionAD)
	if err != nil {
		return err
	}
	if len(sealed) > maxSessionBytes {
		return fmt.Errorf("session is %d bytes", len(sealed))
	}
	return c.db.Update(func(tx *store.Tx) error { return tx.Put(stateBucket, sessionKey, sealed) })
}
