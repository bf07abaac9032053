package control

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"time"
	"unicode"

	"github.com/edgepbx/edgepbx/init/strictjson"
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
	// Lockout: an admin account is locked for some network or under
	// attack; the console shows this boot's setup code as the recovery
	// code (POST /api/v1/recover) until it is not.
	Lockout bool `json:"lockout,omitempty"`
	// Licence is the licence mode (full, warning, degraded; "" without
	// phone-home): a trial boot must not make it worse.
	Licence string `json:"licence,omitempty"`
}

// Reply is the payload of every Reply frame. A refusal of one field of the
// request names it in Field (its JSON path, e.g. "prefix").
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	Field string `json:"field,omitempty"`
	// Reason is a refused update's bundle.Reason (signature, key, …).
	Reason string          `json:"reason,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

// UnbanRequest names the prefix to unban.
type UnbanRequest struct {
	Prefix netip.Prefix `json:"prefix"`
}

// BanList is the data of a ListBans reply.
type BanList struct {
	Bans []fwspec.Ban `json:"bans"`
}

// Request bounds. Pinholes and bans have fwspec's floors too; these bound
// what PID 1 accepts from edgepbxd beyond them.
const (
	maxDetail      = 256
	maxFingerprint = 95 // SHA-256 as 32 colon-separated hex pairs
	// maxBanTimeout and maxPinholeTimeout bound how long one request acts:
	// a week of ban, and a pinhole twice the longest call re-arm edgepbxd uses.
	maxBanTimeout     = 7 * 24 * time.Hour
	maxPinholeTimeout = 24 * time.Hour
	// Policy list bounds, checked before netfw.Validate so a huge list is
	// refused cheaply; netfw's own limits apply after.
	maxZones, maxRules, maxAllowlist = 64, 256, 64
)

// ErrField is wrapped by every refusal of a request's content: a field
// error (*fwspec.FieldError, from validation) or a decoding error
// (*strictjson.Error). Both name the field.
var ErrField = fwspec.ErrInvalid

func fieldErr(field, format string, a ...any) error {
	return &fwspec.FieldError{Field: field, Reason: fmt.Sprintf(format, a...)}
}

// decodeStrict decodes exactly one JSON value: exact field names, no
// duplicates, no unknown fields, nothing after it. An empty payload is {}.
func decodeStrict(p []byte, v any) error {
	if len(bytes.TrimSpace(p)) == 0 {
		p = []byte("{}")
	}
	if err := strictjson.Unmarshal(p, v); err != nil {
		return fmt.Errorf("bad payload: %w", err)
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

// Licence modes in a Health report, best first.
const (
	LicenceFull     = "full"
	LicenceWarning  = "warning"
	LicenceDegraded = "degraded"
)

// LicenceRank orders licence modes (higher is better; 0: none reported).
func LicenceRank(mode string) int {
	switch mode {
	case LicenceFull:
		return 3
	case LicenceWarning:
		return 2
	case LicenceDegraded:
		return 1
	}
	return 0
}

func (h Health) validate() error {
	if len(h.Detail) > maxDetail || !printable(h.Detail) {
		return fieldErr("detail", "at most %d printable characters", maxDetail)
	}
	switch h.Licence {
	case "", LicenceFull, LicenceWarning, LicenceDegraded:
	default:
		return fieldErr("licence", "must be full, warning or degraded")
	}
	if len(h.TLSFingerprint) > maxFingerprint {
		return fieldErr("tls_fingerprint", "longer than %d characters", maxFingerprint)
	}
	for _, c := range h.TLSFingerprint {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':') {
			return fieldErr("tls_fingerprint", "must be hex digits and colons")
		}
	}
	return nil
}

// checkPinhole returns the pinhole as the firewall will hold it (remote
// unmapped) after checking it against the floors.
func checkPinhole(p fwspec.Pinhole) (fwspec.Pinhole, error) {
	a, err := fwspec.PinholeRemote(p.Remote)
	if err != nil {
		return p, err
	}
	if err := fwspec.PinholePort(p.LocalPort); err != nil {
		return p, err
	}
	if p.Timeout < 0 || p.Timeout > maxPinholeTimeout {
		return p, fieldErr("timeout", "must be 0..%v", maxPinholeTimeout)
	}
	p.Remote = a
	return p, nil
}

// checkBan returns the ban as the firewall will hold it: an IPv4-mapped
// prefix is unmapped *before* the floors are checked, so
// ::ffff:0.0.0.0/96 is the 0.0.0.0/0 it would become, and is refused.
func checkBan(b fwspec.Ban) (fwspec.Ban, error) {
	p, err := fwspec.BanPrefix(b.Prefix)
	if err != nil {
		return b, err
	}
	if p != p.Masked() {
		return b, fieldErr("prefix", "%s has host bits set (want %s)", p, p.Masked())
	}
	if b.Timeout < 0 || b.Timeout > maxBanTimeout {
		return b, fieldErr("timeout", "must be 0..%v", maxBanTimeout)
	}
	if err := fwspec.Reason(b.Reason); err != nil {
		return b, err
	}
	if !b.Expires.IsZero() {
		return b, fieldErr("expires", "is set by the firewall")
	}
	b.Prefix = p
	return b, nil
}

// checkUnban unmaps and checks the prefix of an Unban. No floor: lifting
// a ban only ever lets traffic in that a ban had cut off.
func checkUnban(u UnbanRequest) (netip.Prefix, error) {
	p := u.Prefix
	if !p.IsValid() || p.Addr().Zone() != "" {
		return p, fieldErr("prefix", "not a valid prefix")
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return p, fieldErr("prefix", "%s mixes IPv4-mapped and IPv6 space", p)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if p != p.Masked() {
		return p, fieldErr("prefix", "%s has host bits set (want %s)", p, p.Masked())
	}
	return p, nil
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

// validate returns the admin source unmapped, checked after unmapping.
func (r SetPolicyRequest) validate() (netip.Addr, error) {
	a := r.AdminSource.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.Zone() != "" {
		return a, fieldErr("admin_source", "must be the admin's unicast address")
	}
	// netfw.Validate checks names, prefixes, services and the lockout;
	// these cheap bounds come first so a huge list is refused early.
	switch {
	case len(r.Access.Zones) > maxZones:
		return a, fieldErr("access.zones", "more than %d", maxZones)
	case len(r.Access.Rules) > maxRules:
		return a, fieldErr("access.rules", "more than %d", maxRules)
	case len(r.Access.Allowlist) > maxAllowlist:
		return a, fieldErr("access.allowlist", "more than %d", maxAllowlist)
	}
	return a, nil
}

func (r ConfirmPolicyRequest) validate() error {
	if !fwspec.ValidPendingID(r.ID) {
		return fieldErr("id", "must be 32 hex digits")
	}
	return nil
}
