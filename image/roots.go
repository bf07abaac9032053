package image

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"os"
)

// RootsPath is where the image carries the public CA roots. Go's
// crypto/x509 reads this file on Linux, so edgepbxd can verify a public
// ACME directory (Let's Encrypt) or an ITSP's TLS certificate without
// further configuration.
const RootsPath = "etc/ssl/certs/ca-certificates.crt"

// HostRoots is the build host's bundle, from Debian's ca-certificates.
const HostRoots = "/etc/ssl/certs/ca-certificates.crt"

// maxRoots bounds the bundle (Debian's is about 220 KB).
const maxRoots = 2 << 20

// WithRoots takes the CA bundle from path instead of HostRoots.
func WithRoots(path string) Option {
	return func(o *options) error {
		if path == "" {
			return fmt.Errorf("image: empty CA bundle path")
		}
		o.roots = path
		return nil
	}
}

// loadRoots reads a PEM bundle and keeps only its certificates, each
// parsed (a bundle with anything else in it, or none, is refused), so the
// image never trusts bytes that Go would skip or misread.
func loadRoots(path string) (bundle []byte, sum string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", fmt.Errorf("image: CA roots: %w (install Debian's ca-certificates)", err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxRoots+1))
	if err != nil {
		return nil, "", fmt.Errorf("image: CA roots %s: %w", path, err)
	}
	if len(raw) > maxRoots {
		return nil, "", fmt.Errorf("image: CA roots %s: larger than %d bytes", path, maxRoots)
	}
	n := 0
	for rest := raw; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, "", fmt.Errorf("image: CA roots %s: unexpected %q block", path, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, "", fmt.Errorf("image: CA roots %s: certificate %d: %w", path, n+1, err)
		}
		if !c.IsCA {
			return nil, "", fmt.Errorf("image: CA roots %s: certificate %d (%s) is not a CA", path, n+1, c.Subject)
		}
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})...)
		n++
	}
	if n == 0 {
		return nil, "", fmt.Errorf("image: CA roots %s: no certificates", path)
	}
	s := sha256.Sum256(bundle)
	return bundle, hex.EncodeToString(s[:]), nil
}
