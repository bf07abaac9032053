package license

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// AnchorHashBytes is how much of the audit head's SHA-256 travels: 16 bytes
// are plenty to tell two logs apart and say nothing about the entries.
const AnchorHashBytes = 16

// maxAnchorText bounds the wire form: 20 digits, a dot, 22 base64 characters.
const maxAnchorText = 20 + 1 + 22

// Anchor is the audit chain head sent with each check-in: the last entry's
// sequence number and the first AnchorHashBytes of its hash. The vendor
// server keeps the anchors it received, so a log rewritten or cut short on
// the box no longer matches what was anchored before.
type Anchor struct {
	Seq  uint64
	Hash [AnchorHashBytes]byte // all zero for an empty log (Seq 0)
}

// AnchorFromHead builds an Anchor from an audit head (audit.Log.Head: the
// sequence number and the hex SHA-256 of the last entry; "" for none).
func AnchorFromHead(seq uint64, hashHex string) (Anchor, error) {
	a := Anchor{Seq: seq}
	if seq == 0 {
		if hashHex != "" {
			return Anchor{}, errors.New("license: audit head: hash without entries")
		}
		return a, nil
	}
	raw, err := hex.DecodeString(hashHex)
	if err != nil || len(raw) < AnchorHashBytes {
		return Anchor{}, fmt.Errorf("license: audit head hash %.16q… not a SHA-256 in hex", hashHex)
	}
	copy(a.Hash[:], raw)
	return a, nil
}

// HashHex is the anchored hash in hex: the first 32 hex digits of the
// audit head hash, as an exported log shows it.
func (a Anchor) HashHex() string { return hex.EncodeToString(a.Hash[:]) }

// String is the wire form: "SEQ.HASH" with HASH in unpadded base64url
// (22 characters), or just "0" for an empty log.
func (a Anchor) String() string {
	s := strconv.FormatUint(a.Seq, 10)
	if a.Seq == 0 {
		return s
	}
	return s + "." + base64.RawURLEncoding.EncodeToString(a.Hash[:])
}

// ParseAnchor decodes the wire form; the server uses it on untrusted input.
func ParseAnchor(s string) (Anchor, error) {
	if len(s) == 0 || len(s) > maxAnchorText {
		return Anchor{}, fmt.Errorf("license: audit anchor: length %d", len(s))
	}
	num, h, hasHash := strings.Cut(s, ".")
	// Canonical decimal only: one anchor has exactly one spelling.
	if num == "" || len(num) > 20 || (len(num) > 1 && num[0] == '0') || strings.IndexFunc(num, func(c rune) bool { return c < '0' || c > '9' }) >= 0 {
		return Anchor{}, errors.New("license: audit anchor: bad sequence number")
	}
	seq, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return Anchor{}, fmt.Errorf("license: audit anchor: %w", err)
	}
	a := Anchor{Seq: seq}
	if seq == 0 {
		if hasHash {
			return Anchor{}, errors.New("license: audit anchor: hash for an empty log")
		}
		return a, nil
	}
	if !hasHash {
		return Anchor{}, errors.New("license: audit anchor: no hash")
	}
	// The decoder skips CR and LF: check the alphabet first, so one anchor
	// has one spelling.
	if len(h) != base64.RawURLEncoding.EncodedLen(AnchorHashBytes) || strings.IndexFunc(h, func(c rune) bool {
		return !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_')
	}) >= 0 {
		return Anchor{}, errors.New("license: audit anchor: bad hash")
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(h)
	if err != nil || len(raw) != AnchorHashBytes {
		return Anchor{}, errors.New("license: audit anchor: bad hash")
	}
	copy(a.Hash[:], raw)
	return a, nil
}
