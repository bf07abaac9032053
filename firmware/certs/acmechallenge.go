package certs

import (
	"crypto/tls"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"

	"golang.org/x/crypto/acme"
)

// ACME challenge types the box can answer.
const (
	// ChallengeTLSALPN01 (RFC 8737) is validated on the admin HTTPS port
	// 443, which the firewall already opens: the appliance default.
	ChallengeTLSALPN01 = "tls-alpn-01"
	// ChallengeHTTP01 needs a port-80 path to the box (forwarded or opened
	// by the admin).
	ChallengeHTTP01 = "http-01"
)

// ALPNProto is the ALPN protocol a CA offers when it validates TLS-ALPN-01.
const ALPNProto = acme.ALPNProto

// errNoChallenge aborts an acme-tls/1 handshake for a name nobody is
// validating: only a CA asks for that protocol, and it must not get the
// ordinary certificate as if it were an answer.
var errNoChallenge = errors.New("certs: no ACME challenge pending for this name")

// ACMEChallenges holds the answers to validation requests that are pending
// right now. It outlives ACME clients (settings may change between orders)
// and is wired once into the listeners: HTTPHandler in front of a port-80
// listener, TLSConfig around the HTTPS configuration. Safe for concurrent use.
type ACMEChallenges struct {
	mu   sync.Mutex
	http map[string]string           // HTTP-01 token -> key authorization
	alpn map[string]*tls.Certificate // TLS-ALPN-01 name -> challenge certificate
}

// NewACMEChallenges makes an empty set of answers.
func NewACMEChallenges() *ACMEChallenges {
	return &ACMEChallenges{http: map[string]string{}, alpn: map[string]*tls.Certificate{}}
}

func (c *ACMEChallenges) setHTTP(token, keyAuth string) func() {
	c.mu.Lock()
	c.http[token] = keyAuth
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.http, token)
		c.mu.Unlock()
	}
}

func (c *ACMEChallenges) setALPN(name string, cert *tls.Certificate) func() {
	c.mu.Lock()
	c.alpn[name] = cert
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		if c.alpn[name] == cert {
			delete(c.alpn, name)
		}
		c.mu.Unlock()
	}
}

// PendingTLSALPN reports how many TLS-ALPN-01 challenges are pending.
func (c *ACMEChallenges) PendingTLSALPN() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.alpn)
}

// HTTPHandler answers HTTP-01 challenges under /.well-known/acme-challenge/
// and passes everything else to next (nil: 404).
func (c *ACMEChallenges) HTTPHandler(next http.Handler) http.Handler {
	const prefix = "/.well-known/acme-challenge/"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.URL.Path, prefix)
		if !ok {
			if next == nil {
				http.NotFound(w, r)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet || len(tok) == 0 || len(tok) > acmeMaxToken {
			http.NotFound(w, r)
			return
		}
		c.mu.Lock()
		ka, found := c.http[tok]
		c.mu.Unlock()
		if !found {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(ka))
	})
}

// TLSConfig wraps base so that a ClientHello offering acme-tls/1 for a name
// under validation gets the challenge certificate with acme-tls/1
// negotiated (RFC 8737 §3); such a hello for any other name is refused.
// Every other hello gets what base gives (its GetConfigForClient, if any).
// acme-tls/1 is thus never negotiated unless a challenge is pending, and
// ordinary clients never see a challenge certificate.
func (c *ACMEChallenges) TLSConfig(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	next := base.GetConfigForClient
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, ALPNProto) {
			return c.challengeConfig(hello)
		}
		if next != nil {
			return next(hello)
		}
		return nil, nil
	}
	return cfg
}

func (c *ACMEChallenges) challengeConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
	c.mu.Lock()
	cert := c.alpn[name]
	c.mu.Unlock()
	if cert == nil {
		return nil, errNoChallenge
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{ALPNProto},
		Certificates: []tls.Certificate{*cert},
	}, nil
}
