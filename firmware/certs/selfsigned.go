package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"time"
)

// The self-signed certificate is trusted by pinning its fingerprint, not by a
// CA, so its validity only has to never get in the way: a fixed start in the
// past (the box's clock may be unset at first start) and RFC 5280's "no
// well-defined expiration" end. It is therefore never renewed and its
// fingerprint stays stable for the box's life (until factory reset).
var (
	selfNotBefore = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	selfNotAfter  = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

func newSelfSigned(id Identity) ([][]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("certs: certificate serial: %w", err)
	}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range id.IPs {
		if ip != nil && !ip.IsLoopback() && !ip.IsUnspecified() {
			ips = append(ips, ip)
		}
	}
	dns := id.DNSNames()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: dns[0], Organization: []string{"edgepbx"}},
		NotBefore:             selfNotBefore,
		NotAfter:              selfNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: self-sign: %w", err)
	}
	return [][]byte{der}, key, nil
}
