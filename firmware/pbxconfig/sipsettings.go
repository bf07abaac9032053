package pbxconfig

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// SIPBucket holds the stored SIP edge settings under "current".
const SIPBucket = "config.sip"

const sipKey = "current"

// Bounds on the lists of the SIP settings.
const (
	maxScannerAgents = 256
	maxScannerLen    = 64
	maxPrefixes      = 256
)

// Errors of the SIP settings. ErrSIPSettings wraps every validation
// failure; ErrSIPVersion a save against a stale version; ErrSIPApply a save
// the running SIP edge refused (nothing stored).
var (
	ErrSIPSettings = errors.New("sip settings invalid")
	ErrSIPVersion  = errors.New("sip settings changed meanwhile")
	ErrSIPApply    = errors.New("sip settings refused by the running edge")
)

// SIPSettings are the parts of the SIP edge the admin edits on the
// security page. Listen addresses and domains come from the command line
// and the box's names, trunks from the telephony configuration.
type SIPSettings struct {
	// Version counts saved changes; a save must name the version it edits.
	Version int64 `json:"version"`

	TLSMin string `json:"tls_min"`
	TLSMax string `json:"tls_max"`

	AllowedZones []netip.Prefix `json:"allowed_zones"`
	Allowlist    []netip.Prefix `json:"allowlist"`

	MaxMessageBytes   int           `json:"max_message_bytes"`
	MaxConns          int           `json:"max_conns"`
	MaxConnsPerSource int           `json:"max_conns_per_source"`
	IdleTimeout       time.Duration `json:"idle_timeout"`

	ScannerUserAgents []string `json:"scanner_user_agents"`

	Algorithms []string      `json:"algorithms"`
	NonceTTL   time.Duration `json:"nonce_ttl"`

	MinExpires  time.Duration `json:"min_expires"`
	MaxExpires  time.Duration `json:"max_expires"`
	MaxContacts int           `json:"max_contacts"`

	Guard Guard `json:"guard"`
}

// DefaultSIPSettings are DefaultSIP's editable parts (version 0).
func DefaultSIPSettings() SIPSettings {
	c := DefaultSIP()
	return SIPSettings{TLSMin: c.TLSMin, TLSMax: c.TLSMax, AllowedZones: c.AllowedZones, Allowlist: c.Allowlist,
		MaxMessageBytes: c.MaxMessageBytes, MaxConns: c.MaxConns, MaxConnsPerSource: c.MaxConnsPerSource,
		IdleTimeout: c.IdleTimeout, ScannerUserAgents: c.ScannerUserAgents, Algorithms: c.Algorithms,
		NonceTTL: c.NonceTTL, MinExpires: c.MinExpires, MaxExpires: c.MaxExpires, MaxContacts: c.MaxContacts, Guard: c.Guard}
}

// Apply returns c with the settings of s in place of its own.
func (s SIPSettings) Apply(c SIP) SIP {
	s = s.clone()
	c.TLSMin, c.TLSMax = s.TLSMin, s.TLSMax
	c.AllowedZones, c.Allowlist = s.AllowedZones, s.Allowlist
	c.MaxMessageBytes, c.MaxConns, c.MaxConnsPerSource, c.IdleTimeout = s.MaxMessageBytes, s.MaxConns, s.MaxConnsPerSource, s.IdleTimeout
	c.ScannerUserAgents, c.Algorithms, c.NonceTTL = s.ScannerUserAgents, s.Algorithms, s.NonceTTL
	c.MinExpires, c.MaxExpires, c.MaxContacts = s.MinExpires, s.MaxExpires, s.MaxContacts
	c.Guard = s.Guard
	return c
}

func badSIP(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrSIPSettings, fmt.Sprintf(format, a...))
}

// Validate reports the first problem with s: the checks of SIP.Validate
// over the defaults with s applied, plus bounds on lists and times that
// an edge exposed to the internet must keep.
func (s SIPSettings) Validate() error {
	switch {
	case len(s.ScannerUserAgents) > maxScannerAgents:
		return badSIP("scanner_user_agents: at most %d entries", maxScannerAgents)
	case len(s.AllowedZones) > maxPrefixes || len(s.Allowlist) > maxPrefixes:
		return badSIP("allowed_zones and allowlist: at most %d prefixes each", maxPrefixes)
	case len(s.Algorithms) > 2:
		return badSIP("algorithms: SHA-256 and/or MD5, each once")
	}
	seen := map[string]bool{}
	for _, ua := range s.ScannerUserAgents {
		l := strings.ToLower(strings.TrimSpace(ua))
		if l == "" || len(ua) > maxScannerLen || strings.ContainsFunc(ua, func(r rune) bool { return r > unicode.MaxASCII || unicode.IsControl(r) }) {
			return badSIP("scanner user agent %q: 1-%d printable ASCII characters", ua, maxScannerLen)
		}
		if seen[l] {
			return badSIP("scanner user agent %q listed twice", ua)
		}
		seen[l] = true
	}
	if len(s.AllowedZones) == 0 {
		return badSIP("allowed_zones empty: no phone could reach the box (list at least 127.0.0.0/8)")
	}
	for _, list := range [][]netip.Prefix{s.AllowedZones, s.Allowlist} {
		for _, p := range list {
			if !p.IsValid() || p != p.Masked() {
				return badSIP("prefix %v: want a network address such as 192.168.0.0/16", p)
			}
		}
	}
	if slices.Contains(s.Allowlist, netip.MustParsePrefix("0.0.0.0/0")) || slices.Contains(s.Allowlist, netip.MustParsePrefix("::/0")) {
		return badSIP("allowlist: the whole internet cannot be exempt from bans")
	}
	if len(s.Algorithms) == 2 && s.Algorithms[0] == s.Algorithms[1] {
		return badSIP("algorithms: %s listed twice", s.Algorithms[0])
	}
	if s.IdleTimeout > time.Hour {
		return badSIP("idle_timeout: at most 1h")
	}
	if s.MaxExpires > 24*time.Hour {
		return badSIP("max_expires: at most 24h")
	}
	if s.MaxConns > 65536 {
		return badSIP("max_conns: at most 65536")
	}
	g := s.Guard
	if g.MaxTracked > 1<<20 {
		return badSIP("guard.max_tracked: at most 1048576")
	}
	if g.RateWindow > time.Hour || g.FailWindow > 24*time.Hour || g.FloodBan > 30*24*time.Hour || g.AuthBan > 30*24*time.Hour {
		return badSIP("guard: windows at most 1h (rate) and 24h (failures), bans at most 30 days")
	}
	// The rest is the SIP edge's own validation.
	c := s.Apply(DefaultSIP())
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrSIPSettings, err)
	}
	return nil
}

func (s SIPSettings) clone() SIPSettings {
	s.AllowedZones = slices.Clone(s.AllowedZones)
	s.Allowlist = slices.Clone(s.Allowlist)
	s.ScannerUserAgents = slices.Clone(s.ScannerUserAgents)
	s.Algorithms = slices.Clone(s.Algorithms)
	return s
}

// SIPApplier switches the running SIP edge to s. It either applies all of
// s that can change at run time and returns the fields (JSON names) that
// take effect only at the edge's next start, or it returns an error and
// changes nothing.
type SIPApplier func(s SIPSettings) (restart []string, err error)

// SIPStore keeps the SIP settings in the store and the current version in
// memory. With an applier attached (SetApplier) a save is applied to the
// running edge before it is committed: a save the edge refuses is not
// stored. Without one the edge takes the settings only when it starts. It
// is safe for concurrent use.
type SIPStore struct {
	db *store.DB

	mu      sync.RWMutex
	cur     SIPSettings
	running int64
	boot    int64 // the version loaded at start
	apply   SIPApplier
	pending []string // restart-only fields of cur that differ from the start
}

// LoadSIP reads the stored settings, or the defaults (version 0) when none
// were saved yet. Stored settings that no longer validate (a stricter
// firmware) are refused: the caller falls back to the defaults.
func LoadSIP(db *store.DB) (*SIPStore, error) {
	s := &SIPStore{db: db, cur: DefaultSIPSettings()}
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(SIPBucket, sipKey, &s.cur)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("config: load sip settings: %w", err)
	}
	if err := s.cur.Validate(); err != nil {
		return nil, fmt.Errorf("config: stored sip settings version %d: %w", s.cur.Version, err)
	}
	s.running, s.boot = s.cur.Version, s.cur.Version
	return s, nil
}

// SetApplier attaches the running edge, built from the loaded version:
// from now on every save is applied live before it is stored.
func (s *SIPStore) SetApplier(a SIPApplier) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apply = a
}

// Current returns a copy of the saved settings.
func (s *SIPStore) Current() SIPSettings {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.clone()
}

// Running is the saved version when the SIP edge runs all of it. While a
// setting that needs a restart (Pending) differs from the start, or when
// no applier is attached and a newer version was saved, it is the version
// loaded at start (its start-only settings still run).
func (s *SIPStore) Running() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.running
}

// Live reports whether saves are applied to the running edge at once.
func (s *SIPStore) Live() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.apply != nil
}

// Pending names the saved settings (JSON field names) that the running
// edge takes only at its next start; nil when it runs all of them.
func (s *SIPStore) Pending() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.pending)
}

// Save validates next, applies it to the running edge (when an applier is
// attached) and stores it as version next.Version+1, all in one store
// transaction. next.Version must be the saved version (ErrSIPVersion
// otherwise). On any error nothing changes: a refused apply keeps the
// edge as it was and stores nothing (ErrSIPApply), and a store failure
// after the edge took next puts the edge back on the saved version.
func (s *SIPStore) Save(next SIPSettings) (SIPSettings, error) {
	return s.SaveWith(next, nil)
}

// SaveWith is Save with also run inside the same write transaction, after
// the running edge took the settings: also gets the settings as saved and
// the fields that wait for a restart (nil when nothing runs them), and an
// error from it rolls everything back. Callers pass their audit entry, so
// a change and its record commit together or not at all.
func (s *SIPStore) SaveWith(next SIPSettings, also func(tx *store.Tx, saved SIPSettings, pending []string) error) (SIPSettings, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if next.Version != s.cur.Version {
		return SIPSettings{}, fmt.Errorf("%w: you edited version %d, version %d is saved: reload and edit again", ErrSIPVersion, next.Version, s.cur.Version)
	}
	next = next.clone()
	if err := next.Validate(); err != nil {
		return SIPSettings{}, err
	}
	next.Version = s.cur.Version + 1
	var pending []string
	applied := false
	err := s.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(SIPBucket, sipKey, next); err != nil {
			return err
		}
		if s.apply != nil {
			p, err := s.apply(next.clone())
			if err != nil {
				return fmt.Errorf("%w: %w", ErrSIPApply, err)
			}
			pending, applied = p, true
		}
		if also == nil {
			return nil
		}
		return also(tx, next.clone(), slices.Clone(pending))
	})
	if err != nil {
		if applied {
			// The commit failed after the edge took next: back to what is stored.
			if _, rerr := s.apply(s.cur.clone()); rerr != nil {
				err = errors.Join(err, fmt.Errorf("restore running sip settings version %d: %w", s.cur.Version, rerr))
			}
		}
		if errors.Is(err, ErrSIPApply) {
			return SIPSettings{}, err
		}
		return SIPSettings{}, fmt.Errorf("config: save sip settings: %w", err)
	}
	s.cur = next
	if s.apply != nil {
		s.pending = slices.Clone(pending)
		s.running = s.boot
		if len(pending) == 0 {
			s.running = next.Version
		}
	}
	return next.clone(), nil
}
