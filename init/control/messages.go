package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode"

	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Health is edgepbxd's report to PID 1. PID 1 pets the watchdog only while
// the last report said Ready and was recent.
type Health struct {
	Ready   bool   `json:"ready"`
	Claimed bool   `json:"claimed"`
	Detail  string `json:"detail,omitempty"`
	// TLSFingerprint is the admin certificate's SHA-256, for the banner.
	TLSFingerprint string `json:"tls_fingerprint,omitempty"`
}

// Reply is the payload of every Reply frame.
type Reply struct {
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// UnbanRequest names the prefix to unban.
type UnbanRequest struct {
	Prefix netip.Prefix `json:"prefix"`
}

// BanList is the data of a ListBans reply.
type BanList struct {
	Bans []fwspec.Ban `json:"bans"`
}

// Request bounds.
const (
	maxDetail  = 256
	maxReason  = 64
	maxTimeout = 7 * 24 * time.Hour
)

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(p []byte, v any) error {
	if len(p) == 0 {
		p = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("bad payload: %w", err)
	}
	if dec.More() {
		return errors.New("bad payload: trailing data")
	}
	return nil
}

func printable(s string) bool {
	for _, r := range s {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func (h Health) validate() error {
	if len(h.Detail) > maxDetail || !printable(h.Detail) {
		return errors.New("health detail too long or not printable")
	}
	if len(h.TLSFingerprint) > 128 || !printable(h.TLSFingerprint) {
		return errors.New("bad TLS fingerprint")
	}
	return nil
}

func validatePinhole(p fwspec.Pinhole) error {
	if !p.Remote.IsValid() || p.Remote.IsUnspecified() || p.Remote.IsMulticast() {
		return errors.New("pinhole: remote must be a unicast address")
	}
	if p.LocalPort < 1024 {
		return errors.New("pinhole: local port must be ≥ 1024")
	}
	if p.Timeout < 0 || p.Timeout > maxTimeout {
		return errors.New("pinhole: timeout out of range")
	}
	return nil
}

func validateBan(b fwspec.Ban) error {
	if !b.Prefix.IsValid() || b.Prefix != b.Prefix.Masked() {
		return errors.New("ban: prefix must be valid and masked")
	}
	// A compromised edgepbxd must not be able to cut the whole world off.
	if min := minBanBits(b.Prefix.Addr()); b.Prefix.Bits() < min {
		return fmt.Errorf("ban: prefix shorter than /%d", min)
	}
	if b.Timeout < 0 || b.Timeout > maxTimeout {
		return errors.New("ban: timeout out of range")
	}
	if len(b.Reason) > maxReason || !printable(b.Reason) {
		return errors.New("ban: reason too long or not printable")
	}
	if !b.Expires.IsZero() {
		return errors.New("ban: expires is set by the firewall")
	}
	return nil
}

func minBanBits(a netip.Addr) int {
	if a.Is4() {
		return 16
	}
	return 48
}

// SetPolicyRequest asks PID 1 to apply new zones and rules as a pending
// change. AdminSource is the address of the admin session making it: the
// new policy must still let that address reach an admin service.
type SetPolicyRequest struct {
	Access      fwspec.Access `json:"access"`
	AdminSource netip.Addr    `json:"admin_source"`
}

// ConfirmPolicyRequest makes the pending change with this id permanent.
type ConfirmPolicyRequest struct {
	ID string `json:"id"`
}

func (r SetPolicyRequest) validate() error {
	a := r.AdminSource
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return errors.New("set policy: admin_source must be the admin's unicast address")
	}
	// netfw.Validate checks names, prefixes, services and the lockout;
	// these cheap bounds come first so a huge list is refused early.
	if len(r.Access.Zones) > 64 || len(r.Access.Rules) > 256 || len(r.Access.Allowlist) > 64 {
		return errors.New("set policy: too many zones, rules or allowlist entries")
	}
	return nil
}

func (r ConfirmPolicyRequest) validate() error {
	if !fwspec.ValidPendingID(r.ID) {
		return errors.New("confirm policy: id must be 32 hex digits")
	}
	return nil
}
