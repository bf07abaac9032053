package provision

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Bounds on an uploaded vendor CA file.
const (
	maxCAPEM  = 64 << 10
	maxCACert = 8
)

// ParseCAPEM reads an uploaded vendor CA bundle: 1–8 CERTIFICATE blocks,
// each a CA certificate; anything else in the file is refused.
func ParseCAPEM(data []byte) ([]*x509.Certificate, error) {
	if len(data) == 0 || len(data) > maxCAPEM {
		return nil, fmt.Errorf("PEM must be 1-%d bytes", maxCAPEM)
	}
	var out []*x509.Certificate
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a certificate", b.Type)
		}
		if len(out) == maxCACert {
			return nil, fmt.Errorf("at most %d certificates", maxCACert)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		if !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA", len(out)+1, c.Subject)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("trailing data after the certificates")
	}
	return out, nil
}

// MACsInCert returns the MACs a phone's factory certificate names: vendors
// put it in the subject common name (sometimes with a prefix such as
// "SEP" or a model), the serial number attribute, or a SAN.
func MACsInCert(c *x509.Certificate) []string {
	var fields []string
	fields = append(fields, c.Subject.CommonName, c.Subject.SerialNumber)
	fields = append(fields, c.Subject.OrganizationalUnit...)
	fields = append(fields, c.DNSNames...)
	for _, u := range c.URIs {
		fields = append(fields, u.String())
	}
	var out []string
	for _, f := range fields {
		out = append(out, MACsInString(f)...)
	}
	return out
}

// MACsInString finds MACs in s: runs of 12 hex digits, or six pairs joined
// by ':' or '-', bounded by non-hex characters.
func MACsInString(s string) []string {
	if len(s) > 256 {
		s = s[:256]
	}
	var out []string
	ls := strings.ToLower(s)
	isHex := func(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }
	for i := 0; i < len(ls); i++ {
		if i > 0 && isHex(ls[i-1]) {
			continue
		}
		if i+17 <= len(ls) && (i+17 == len(ls) || !isHex(ls[i+17])) {
			if m := macToken(ls[i : i+17]); m != "" {
				out = append(out, m)
				continue
			}
		}
		if i+12 <= len(ls) && (i+12 == len(ls) || !isHex(ls[i+12])) && isMAC(ls[i:i+12]) {
			out = append(out, ls[i:i+12])
		}
	}
	return out
}

// checkCert verifies the client certificate (asked for, not required, at
// the handshake) against the vendor CA the admin uploaded, and that it
// names mac. Unknown phones are checked against their vendor's CA too, so
// the work does not depend on whether the MAC is known.
func (s *Service) checkCert(r *http.Request, mac string, v Vendor) bool {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || v == "" {
		return false
	}
	pool, err := s.vendorPool(v)
	if err != nil || pool == nil {
		return false
	}
	leaf := r.TLS.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range r.TLS.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: s.now()}); err != nil {
		return false
	}
	for _, m := range MACsInCert(leaf) {
		if m == mac {
			return true
		}
	}
	return false
}
