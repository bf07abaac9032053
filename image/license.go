package image

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Paths of the licence configuration inside the image. PID 1 (cmd/init)
// reads LicensePath and passes its values to edgepbxd as --license-url and
// --license-ca; the format is LicenseConfig.
const (
	LicensePath   = "etc/edgepbx/license.json"
	LicenseCAPath = "etc/edgepbx/license-ca.pem"
)

// Bounds on the licence options. MaxLicenseCABytes matches what edgepbxd
// accepts for --license-ca.
const (
	MaxLicenseURLBytes = 512
	MaxLicenseCABytes  = 256 << 10
)

// vendorKeySymbol is the variable -X sets to the vendor's public key
// (see firmware/license/vendorkey.go).
const vendorKeySymbol = ModulePath + "/firmware/license.buildVendorKey"

// LicenseConfig is /etc/edgepbx/license.json.
type LicenseConfig struct {
	URL    string `json:"url"`     // https://host[:port], no path
	CAFile string `json:"ca_file"` // absolute path of the PEM roots in the image
}

// licenseConfig is a validated WithLicense.
type licenseConfig struct {
	url       string
	caPEM     []byte // re-encoded certificates only
	vendorKey string // "ed25519:<base64>", the form firmware/license parses
}

func newLicenseConfig(serverURL string, caPEM []byte, vendorKey ed25519.PublicKey) (*licenseConfig, error) {
	u, err := CheckLicenseURL(serverURL)
	if err != nil {
		return nil, err
	}
	ca, err := canonicalCAs(caPEM, "licence CA bundle")
	if err != nil {
		return nil, err
	}
	if len(vendorKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("image: licence vendor key is %d bytes, want an Ed25519 public key (%d)", len(vendorKey), ed25519.PublicKeySize)
	}
	return &licenseConfig{url: u, caPEM: ca, vendorKey: "ed25519:" + base64.StdEncoding.EncodeToString(vendorKey)}, nil
}

// CheckLicenseURL validates a licence server URL the way edgepbxd does
// (https://host[:port], nothing else) and returns it without a trailing
// slash.
func CheckLicenseURL(s string) (string, error) {
	if len(s) > MaxLicenseURLBytes {
		return "", fmt.Errorf("image: licence URL longer than %d bytes", MaxLicenseURLBytes)
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", errors.New("image: licence URL contains spaces or control characters")
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("image: licence URL %q: want https://host[:port]", s)
	}
	return strings.TrimSuffix(s, "/"), nil
}

// canonicalCAs keeps only the certificates of a PEM bundle, re-encoded, so
// nothing else (a private key pasted by mistake, comments) reaches an image.
// Anything that is not a parseable certificate is an error.
func canonicalCAs(data []byte, what string) ([]byte, error) {
	if len(data) > MaxLicenseCABytes {
		return nil, fmt.Errorf("image: %s is %d bytes, limit %d", what, len(data), MaxLicenseCABytes)
	}
	var out bytes.Buffer
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("image: %s holds a %q block; only certificates belong there", what, b.Type)
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return nil, fmt.Errorf("image: %s: %w", what, err)
		}
		pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("image: %s has data that is not PEM", what)
	}
	if out.Len() == 0 {
		return nil, fmt.Errorf("image: %s has no certificate", what)
	}
	return out.Bytes(), nil
}

// files are the licence files staged into the image.
func (l *licenseConfig) files() (config, ca []byte, err error) {
	config, err = json.Marshal(LicenseConfig{URL: l.url, CAFile: "/" + LicenseCAPath})
	if err != nil {
		return nil, nil, err
	}
	return append(config, '\n'), l.caPEM, nil
}

// ldflag sets the vendor key in edgepbxd. Base64 has no spaces, so the
// value survives the go tool's splitting of -ldflags.
func (l *licenseConfig) ldflag() string {
	return "-X " + vendorKeySymbol + "=" + l.vendorKey
}
