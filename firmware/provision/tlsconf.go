package provision

import "crypto/tls"

// TLSConfig is the provisioning listener's TLS: the box's certificate (from
// base), TLS 1.2 at least, and a client certificate asked for but not
// required — a phone with a factory certificate proves itself with it, the
// others use their per-device digest credential. The chain is verified in
// the handler against the vendor CA the admin uploaded, so a phone whose
// certificate is from an unknown CA still gets the digest path.
func TLSConfig(base *tls.Config) *tls.Config {
	c := base.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	c.ClientAuth = tls.RequestClientCert
	c.NextProtos = []string{"http/1.1"}
	return c
}
