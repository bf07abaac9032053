// Package license is the appliance side of the daily phone-home: it checks
// the licence, clone status, firmware advisories and the certificate in use
// against the vendor's licence server once a day, verifies the Ed25519-signed
// answer with the vendor key built into the image, and applies the offline
// policy (full service for 14 days, warnings from day 7, degraded after).
//
// The package owns the buckets "license.state" (sealed) and "license.schedule".
package license

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

// Protocol limits. The request is small by design (target ≤ 2 KB a day); the
// response is bounded so a hostile or broken server cannot exhaust memory.
const (
	ProtocolVersion  = 1
	MaxRequestBytes  = 2048
	MaxResponseBytes = 16 << 10
	NonceBytes       = 16
	maxAdvisories    = 32
	maxFeatures      = 64
	maxTextLen       = 256
	// signContext separates these signatures from any other use of the vendor key.
	signContext = "edgepbx-license-response-v1\n"
)

// Errors a check-in can end with; every one of them changes nothing.
var (
	ErrBadSignature = errors.New("license: response signature invalid")
	ErrMalformed    = errors.New("license: response malformed")
	ErrOversize     = errors.New("license: response too large")
	ErrReplay       = errors.New("license: response does not answer this request (nonce mismatch)")
	ErrWrongBox     = errors.New("license: response is for another box")
)

// Load is the coarse health summary sent with each check-in. Zero values
// are left out on the wire (here and in Counts and Request): a new box
// sends mostly zeros, and its first check-in is the one that also carries a
// full TLS handshake.
type Load struct {
	CPUPercent int `json:"cpu,omitempty"`  // average over the day, 0..100
	MemPercent int `json:"mem,omitempty"`  // 0..100
	CPUs       int `json:"cpus,omitempty"` // to judge whether the hardware is too small
	MemMB      int `json:"mem_mb,omitempty"`
}

// Counts are sizes only: no numbers, names or addresses ever leave the box.
type Counts struct {
	Extensions int `json:"ext,omitempty"`
	Trunks     int `json:"trunks,omitempty"`
	CallsDay   int `json:"calls,omitempty"`
	PeakCalls  int `json:"peak,omitempty"`
}

// Request is what the box sends. It carries no personal data.
type Request struct {
	V            int    `json:"v"`
	Nonce        string `json:"nonce"` // hex, echoed in the signed answer
	Serial       string `json:"serial"`
	InstallID    string `json:"install"`
	Fingerprint  string `json:"hw"` // hex SHA-256 of hardware identity
	Firmware     string `json:"fw"`
	LicenceID    string `json:"lic"`
	CertNotAfter int64  `json:"cert_exp,omitempty"` // unix seconds
	OfflineDays  int    `json:"offline_days,omitempty"`
	ClientTime   int64  `json:"time"`
	Load         Load   `json:"load,omitzero"`
	Counts       Counts `json:"counts,omitzero"`
	// Audit is the audit chain head (Anchor.String), empty when the box
	// has no audit log to anchor.
	Audit string `json:"audit,omitempty"`
	// AuditPrev is the entry anchored by the last good check-in, as the log
	// holds it now (Anchor.String), sent when the head has moved past it:
	// a log rewritten and then grown beyond the old head no longer matches.
	AuditPrev string `json:"audit_prev,omitempty"`
	// Seq is the box's check-in counter (persisted before sending); the
	// server flags a number at or below the highest it saw from this box.
	Seq uint64 `json:"seq,omitempty"`
	// RestoredFrom is the serial of the box whose backup this box's data
	// was last restored from, when that was another box: the vendor
	// rebinds the licence, the box never clones the other's identity.
	RestoredFrom string `json:"restored_from,omitempty"`
}

// Validate bounds every field; the server uses it on untrusted input too.
func (r *Request) Validate() error {
	if r.V != ProtocolVersion {
		return fmt.Errorf("license: request version %d unsupported", r.V)
	}
	if err := checkHex(r.Nonce, NonceBytes); err != nil {
		return fmt.Errorf("license: request nonce: %w", err)
	}
	if err := checkHex(r.Fingerprint, 32); err != nil {
		return fmt.Errorf("license: request fingerprint: %w", err)
	}
	for name, s := range map[string]string{"serial": r.Serial, "install id": r.InstallID, "firmware": r.Firmware, "licence id": r.LicenceID} {
		if err := checkToken(s); err != nil {
			return fmt.Errorf("license: request %s: %w", name, err)
		}
	}
	for _, n := range []int{r.Load.CPUPercent, r.Load.MemPercent, r.Load.CPUs, r.Load.MemMB, r.Counts.Extensions,
		r.Counts.Trunks, r.Counts.CallsDay, r.Counts.PeakCalls, r.OfflineDays} {
		if n < 0 || n > 1<<40 {
			return errors.New("license: request count out of range")
		}
	}
	if r.CertNotAfter < 0 || r.ClientTime < 0 {
		return errors.New("license: request time out of range")
	}
	if r.RestoredFrom != "" {
		if err := checkToken(r.RestoredFrom); err != nil {
			return fmt.Errorf("license: request restored_from: %w", err)
		}
	}
	for _, a := range []string{r.Audit, r.AuditPrev} {
		if a == "" {
			continue
		}
		if _, err := ParseAnchor(a); err != nil {
			return err
		}
	}
	return nil
}

// Advisory says this firmware version has a known problem.
type Advisory struct {
	ID       string   `json:"id"`
	Severity string   `json:"severity"` // "low", "medium", "high", "critical"
	Message  string   `json:"message"`
	Disable  []string `json:"disable,omitempty"` // feature names turned off until updated
	FixedIn  string   `json:"fixed_in,omitempty"`
}

// Entitlements are what the licence allows.
type Entitlements struct {
	MaxExtensions int      `json:"max_ext"`
	MaxTrunks     int      `json:"max_trunks"`
	Features      []string `json:"features,omitempty"`
}

// Licence statuses in a response.
const (
	StatusOK      = "ok"
	StatusUnknown = "unknown"
	StatusRevoked = "revoked"
	StatusExpired = "expired"
)

// Performance verdicts.
const (
	PerfOK       = "ok"
	PerfTooSmall = "too_small"
)

// Response is the signed payload of the server's answer.
type Response struct {
	V            int          `json:"v"`
	Nonce        string       `json:"nonce"`
	Serial       string       `json:"serial"`
	InstallID    string       `json:"install"`
	LicenceID    string       `json:"lic"`
	Status       string       `json:"status"`
	ServerTime   int64        `json:"time"`
	ValidUntil   int64        `json:"valid_until"`
	Entitlements Entitlements `json:"ent"`
	Advisories   []Advisory   `json:"advisories,omitempty"`
	Clone        bool         `json:"clone,omitempty"`
	CloneReason  string       `json:"clone_reason,omitempty"`
	Perf         string       `json:"perf,omitempty"` // empty: PerfOK
	PerfMessage  string       `json:"perf_message,omitempty"`
	// AuditRollback: an audit anchor this box sent does not extend the ones
	// anchored before (same sequence number with another hash: rewritten;
	// a lower one: cut short). The server keeps saying so until the vendor
	// clears it. AuditSeq is the anchored entry that no longer matches.
	AuditRollback bool   `json:"audit_rollback,omitempty"`
	AuditSeq      uint64 `json:"audit_seq,omitempty"`
	AuditReason   string `json:"audit_reason,omitempty"`
	// LastSeq is the highest check-in counter the server had seen from this
	// box before this request. StateRollback: the request's counter was not
	// above it, so the box's state was rolled back or deleted; it stays set
	// until the vendor clears it. RollbackReason says what was seen.
	LastSeq        uint64 `json:"last_seq,omitempty"`
	StateRollback  bool   `json:"state_rollback,omitempty"`
	RollbackReason string `json:"rollback_reason,omitempty"`
}

// Envelope is what travels: the exact payload bytes and a signature over
// them. The payload is either the JSON Response itself, byte for byte as
// signed (P, what licensed sends: base64 would add a third to the largest
// part of the answer), or its base64 (Payload); exactly one of the two.
type Envelope struct {
	P       json.RawMessage `json:"p,omitempty"`
	Payload string          `json:"payload,omitempty"` // base64 (std) of the JSON Response
	Sig     string          `json:"sig"`               // base64 (std) Ed25519 over signContext+payload bytes
}

// SignResponse makes an Envelope with the payload inline (P); used by
// cmd/licensed and tests.
func SignResponse(priv ed25519.PrivateKey, r *Response) ([]byte, error) {
	payload, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("license: encode response: %w", err)
	}
	sig := ed25519.Sign(priv, append([]byte(signContext), payload...))
	// Written by hand: json.Marshal would re-compact P, and the signature
	// covers these exact bytes.
	out := make([]byte, 0, len(payload)+112)
	out = append(out, `{"p":`...)
	out = append(out, payload...)
	out = append(out, `,"sig":"`...)
	out = base64.StdEncoding.AppendEncode(out, sig)
	return append(out, `"}`...), nil
}

// payloadBytes are the signed bytes of env, from whichever form it uses.
func (env *Envelope) payloadBytes() ([]byte, error) {
	switch {
	case len(env.P) > 0 && env.Payload != "":
		return nil, errors.New("both p and payload")
	case len(env.P) > 0:
		return env.P, nil
	case env.Payload != "":
		return base64.StdEncoding.DecodeString(env.Payload)
	}
	return nil, errors.New("no payload")
}

// ReadEnvelope reads at most MaxResponseBytes from r; anything longer is an error.
func ReadEnvelope(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, MaxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("license: read response: %w", err)
	}
	if len(raw) > MaxResponseBytes {
		return nil, ErrOversize
	}
	return raw, nil
}

// ParseResponse verifies the signature over raw with pub and then decodes and
// validates the payload. Nothing in the payload is looked at before the
// signature checks out.
func ParseResponse(raw []byte, pub ed25519.PublicKey) (*Response, error) {
	if len(raw) > MaxResponseBytes {
		return nil, ErrOversize
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("license: vendor key has %d bytes", len(pub))
	}
	var env Envelope
	if err := decodeStrict(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: envelope: %v", ErrMalformed, err)
	}
	if env.Sig == "" {
		return nil, fmt.Errorf("%w: unsigned", ErrBadSignature)
	}
	payload, err := env.payloadBytes()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature encoding", ErrBadSignature)
	}
	if !ed25519.Verify(pub, append([]byte(signContext), payload...), sig) {
		return nil, ErrBadSignature
	}
	var resp Response
	if err := decodeStrict(payload, &resp); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	if err := resp.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &resp, nil
}

func (r *Response) validate() error {
	if r.V != ProtocolVersion {
		return fmt.Errorf("version %d", r.V)
	}
	if err := checkHex(r.Nonce, NonceBytes); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	switch r.Status {
	case StatusOK, StatusUnknown, StatusRevoked, StatusExpired:
	default:
		return fmt.Errorf("status %q", r.Status)
	}
	switch r.Perf {
	case PerfOK, PerfTooSmall, "":
	default:
		return fmt.Errorf("perf %q", r.Perf)
	}
	// Server time must be a plausible date: 2020 .. 2200.
	if r.ServerTime < 1577836800 || r.ServerTime > 7258118400 {
		return fmt.Errorf("server time %d out of range", r.ServerTime)
	}
	if r.ValidUntil < 0 || r.ValidUntil > 7258118400 {
		return fmt.Errorf("valid until %d out of range", r.ValidUntil)
	}
	if len(r.Advisories) > maxAdvisories || len(r.Entitlements.Features) > maxFeatures {
		return errors.New("too many advisories or features")
	}
	for _, a := range r.Advisories {
		if len(a.Disable) > maxFeatures {
			return fmt.Errorf("advisory %q disables too many features", a.ID)
		}
		for _, s := range append([]string{a.ID, a.Message, a.Severity, a.FixedIn}, a.Disable...) {
			if len(s) > maxTextLen || !printable(s) {
				return fmt.Errorf("advisory %q: bad text", a.ID)
			}
		}
	}
	for _, s := range append([]string{r.Serial, r.InstallID, r.LicenceID, r.CloneReason, r.PerfMessage, r.AuditReason, r.RollbackReason}, r.Entitlements.Features...) {
		if len(s) > maxTextLen || !printable(s) {
			return errors.New("bad text field")
		}
	}
	if r.Entitlements.MaxExtensions < 0 || r.Entitlements.MaxTrunks < 0 {
		return errors.New("negative entitlement")
	}
	return nil
}

// decodeStrict decodes exactly one JSON value strictly (init/strictjson).
func decodeStrict(raw []byte, v any) error { return strictjson.Unmarshal(raw, v) }

func checkHex(s string, n int) error {
	if len(s) != 2*n {
		return fmt.Errorf("want %d hex digits, got %d", 2*n, len(s))
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	return nil
}

// checkToken accepts the identifiers we send: 1..64 of [A-Za-z0-9._:+-].
func checkToken(s string) error {
	if s == "" || len(s) > 64 {
		return fmt.Errorf("length %d not in 1..64", len(s))
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._:+-", c)) {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

// printable rejects control characters so server text cannot forge log lines
// or banners.
func printable(s string) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f || c == '\uFFFD' {
			return false
		}
	}
	return true
}

func unixTime(s int64) time.Time { return time.Unix(s, 0).UTC() }
