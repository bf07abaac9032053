// Package metrics owns the Prometheus /metrics endpoint of the admin HTTPS
// port: who may scrape it (settings in bucket metrics.settings, a bearer
// token with the metrics scope), and the collectors that read the owning
// packages' counters at scrape time. It counts nothing of its own except
// its refusals.
package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Bucket holds the settings under key "settings".
const Bucket = "metrics.settings"

const settingsKey = "settings"

// Bounds of the settings.
const (
	MaxNetworks      = 64
	MaxSettingsBytes = 8 << 10
)

// ErrSettings is wrapped by every refusal of a settings change.
var ErrSettings = errors.New("invalid metrics settings")

// Settings say who may scrape /metrics.
type Settings struct {
	// Networks are the source networks allowed to scrape (besides a
	// valid token). Empty, the default: /metrics answers 403 to every
	// source, so a fresh box exports nothing until an admin names the
	// monitoring networks.
	Networks []netip.Prefix `json:"networks"`
}

// Enabled reports whether any source may scrape.
func (s Settings) Enabled() bool { return len(s.Networks) > 0 }

// Allows reports whether a may scrape (IPv4-mapped IPv6 addresses are
// judged as IPv4).
func (s Settings) Allows(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.Networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Validate refuses more than MaxNetworks networks, prefixes with host bits
// set, IPv4-mapped prefixes, duplicates and /0 (every address: name the
// monitoring networks instead). Errors name the field.
func (s Settings) Validate() error {
	if len(s.Networks) > MaxNetworks {
		return fmt.Errorf("%w: networks: at most %d, got %d", ErrSettings, MaxNetworks, len(s.Networks))
	}
	seen := map[netip.Prefix]bool{}
	for i, p := range s.Networks {
		switch {
		case !p.IsValid():
			return fmt.Errorf("%w: networks[%d]: not a prefix", ErrSettings, i)
		case p.Addr().Is4In6():
			return fmt.Errorf("%w: networks[%d]: %s is IPv4-mapped; write it as IPv4", ErrSettings, i, p)
		case p.Masked() != p:
			return fmt.Errorf("%w: networks[%d]: %s has host bits set (did you mean %s?)", ErrSettings, i, p, p.Masked())
		case p.Bits() == 0:
			return fmt.Errorf("%w: networks[%d]: %s is every address; name the monitoring networks", ErrSettings, i, p)
		case seen[p]:
			return fmt.Errorf("%w: networks[%d]: %s given twice", ErrSettings, i, p)
		}
		seen[p] = true
	}
	return nil
}

// DecodeSettings reads a settings body strictly (bounded, exact field
// names, no unknown fields) and validates it.
func DecodeSettings(r io.Reader) (Settings, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSettingsBytes+1))
	if err != nil {
		return Settings{}, fmt.Errorf("read metrics settings: %w", err)
	}
	if len(data) > MaxSettingsBytes {
		return Settings{}, fmt.Errorf("%w: body larger than %d bytes", ErrSettings, MaxSettingsBytes)
	}
	// Networks arrive as strings so a bad one is named by its index.
	var wire struct {
		Networks []string `json:"networks"`
	}
	if err := strictjson.Unmarshal(data, &wire); err != nil {
		return Settings{}, fmt.Errorf("%w: %w", ErrSettings, err)
	}
	if wire.Networks == nil {
		return Settings{}, fmt.Errorf("%w: networks: required (an empty list turns metrics off)", ErrSettings)
	}
	if len(wire.Networks) > MaxNetworks {
		return Settings{}, fmt.Errorf("%w: networks: at most %d, got %d", ErrSettings, MaxNetworks, len(wire.Networks))
	}
	s := Settings{Networks: make([]netip.Prefix, len(wire.Networks))}
	for i, n := range wire.Networks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			return Settings{}, fmt.Errorf("%w: networks[%d]: %q is not a network like 192.0.2.0/24 or 2001:db8::/48", ErrSettings, i, n)
		}
		s.Networks[i] = p
	}
	return s, s.Validate()
}

// LoadSettings returns the stored settings, or the default (metrics off).
func LoadSettings(db *store.DB) (Settings, error) {
	var s Settings
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(Bucket, settingsKey, &s)
		return err
	})
	if err != nil {
		return Settings{}, fmt.Errorf("metrics: read %s: %w", Bucket, err)
	}
	if err := s.Validate(); err != nil {
		// Written by an older or tampered store: serve nobody rather
		// than guess.
		return Settings{}, fmt.Errorf("metrics: stored settings: %w", err)
	}
	return s, nil
}

// SaveSettingsTx validates s and stores it inside tx (so the audit entry
// commits with it); it returns the settings it replaces.
func SaveSettingsTx(tx *store.Tx, s Settings) (Settings, error) {
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	var prev Settings
	if _, err := tx.Get(Bucket, settingsKey, &prev); err != nil {
		return Settings{}, fmt.Errorf("metrics: read %s: %w", Bucket, err)
	}
	if s.Networks == nil {
		s.Networks = []netip.Prefix{}
	}
	if err := tx.Put(Bucket, settingsKey, s); err != nil {
		return Settings{}, fmt.Errorf("metrics: write %s: %w", Bucket, err)
	}
	return prev, nil
}
