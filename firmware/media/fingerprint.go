package media

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"hash"
	"math/big"
	"strings"
	"time"
)

// Fingerprint is an a=fingerprint value (RFC 8122): a certificate hash.
type Fingerprint struct {
	Hash  string // "sha-256", "sha-384" or "sha-512"
	Value []byte
}

// ParseFingerprint parses "sha-256 AB:CD:…". SHA-1 and MD5 are refused:
// a collision would let a man in the middle pass the check.
func ParseFingerprint(v string) (Fingerprint, error) {
	if len(v) > 256 {
		return Fingerprint{}, fmt.Errorf("%w: a=fingerprint too long", ErrSDP)
	}
	alg, hexv, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok {
		return Fingerprint{}, fmt.Errorf("%w: a=fingerprint", ErrSDP)
	}
	alg = strings.ToLower(alg)
	h := newHash(alg)
	if h == nil {
		return Fingerprint{}, fmt.Errorf("%w: fingerprint hash %.16q not accepted", ErrSDP, alg)
	}
	parts := strings.Split(strings.TrimSpace(hexv), ":")
	if len(parts) != h.Size() {
		return Fingerprint{}, fmt.Errorf("%w: fingerprint length", ErrSDP)
	}
	out := make([]byte, 0, h.Size())
	for _, p := range parts {
		if len(p) != 2 {
			return Fingerprint{}, fmt.Errorf("%w: fingerprint byte %.4q", ErrSDP, p)
		}
		b, err := hex.DecodeString(p)
		if err != nil {
			return Fingerprint{}, fmt.Errorf("%w: fingerprint byte %.4q", ErrSDP, p)
		}
		out = append(out, b[0])
	}
	return Fingerprint{Hash: alg, Value: out}, nil
}

func newHash(alg string) hash.Hash {
	switch alg {
	case "sha-256":
		return sha256.New()
	case "sha-384":
		return sha512.New384()
	case "sha-512":
		return sha512.New()
	}
	return nil
}

// String is the SDP form: upper-case hex pairs separated by colons.
func (f Fingerprint) String() string {
	parts := make([]string, len(f.Value))
	for i, b := range f.Value {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return f.Hash + " " + strings.Join(parts, ":")
}

// Matches reports whether certDER hashes to f (constant time).
func (f Fingerprint) Matches(certDER []byte) bool {
	h := newHash(f.Hash)
	if h == nil || len(f.Value) != h.Size() {
		return false
	}
	h.Write(certDER)
	return subtle.ConstantTimeCompare(h.Sum(nil), f.Value) == 1
}

// FingerprintOf returns the SHA-256 fingerprint of a DER certificate.
func FingerprintOf(certDER []byte) Fingerprint {
	s := sha256.Sum256(certDER)
	return Fingerprint{Hash: "sha-256", Value: s[:]}
}

// NewDTLSCertificate makes the self-signed ECDSA P-256 certificate the relay
// presents in DTLS handshakes, and its fingerprint for the SDP. Make one per
// process start (or per call for unlinkability); it needs no CA.
func NewDTLSCertificate() (tls.Certificate, Fingerprint, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, fmt.Errorf("media: DTLS key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, fmt.Errorf("media: DTLS serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "edgepbx"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(30 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, Fingerprint{}, fmt.Errorf("media: DTLS certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, FingerprintOf(der), nil
}
