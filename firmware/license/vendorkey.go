package license

import (
	"crypto/ed25519"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// The vendor key is fixed at build time, never read from the data partition,
// so a box owner cannot swap in a key of their own.
//
// Two ways to set it, the first non-empty wins:
//
//	go build -ldflags "-X github.com/edgepbx/edgepbx/firmware/license.buildVendorKey=ed25519:BASE64" ./cmd/edgepbxd
//	cp vendor.pub firmware/license/vendorkey.pub   # embedded below
//
// buildVendorKey is a variable only because -X can set nothing else; no code
// assigns it.
var buildVendorKey string

//go:embed vendorkey.pub
var embeddedVendorKey string

// ErrNoVendorKey means the image was built without a vendor key.
var ErrNoVendorKey = errors.New("license: no vendor key built into this image")

// BuiltinVendorKey returns the vendor public key compiled into the image.
func BuiltinVendorKey() (ed25519.PublicKey, error) {
	if buildVendorKey != "" {
		return ParsePublicKey(buildVendorKey)
	}
	return ParsePublicKey(embeddedVendorKey)
}

// ParsePublicKey reads "ed25519:<base64>"; blank lines and # comments are
// skipped, and exactly one key line must remain.
func ParsePublicKey(text string) (ed25519.PublicKey, error) {
	var key ed25519.PublicKey
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if key != nil {
			return nil, errors.New("license: more than one vendor key line")
		}
		b64, ok := strings.CutPrefix(line, "ed25519:")
		if !ok {
			return nil, fmt.Errorf("license: vendor key must start with ed25519:")
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil || len(raw) != ed25519.PublicKeySize {
			return nil, errors.New("license: vendor key is not a base64 Ed25519 public key")
		}
		key = ed25519.PublicKey(raw)
	}
	if key == nil {
		return nil, ErrNoVendorKey
	}
	return key, nil
}

// FormatPublicKey is the inverse of ParsePublicKey.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return "ed25519:" + base64.StdEncoding.EncodeToString(pub)
}
