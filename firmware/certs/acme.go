package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
	"golang.org/x/crypto/acme"
)

// ACME renewal policy: renew about every two months, and in any case well
// before expiry (CAs issue 90-day certificates, Pebble longer ones).
const (
	ACMERenewAfter  = 60 * 24 * time.Hour // since the certificate's NotBefore
	ACMERenewBefore = 30 * 24 * time.Hour // before its NotAfter
	acmeBucket      = "certs.acme"
	acmeAccountAD   = "certs/acme/account"
	acmeMaxToken    = 128
)

// ACMEInstaller is what ACME needs from the certificate owner; *Manager has
// both methods. Install validates and keeps a fallback, so a bad issuance
// cannot lock admins out.
type ACMEInstaller interface {
	InstallWith(b *Bundle, names []string, source string, also func(tx *store.Tx, before, after Info) error) error
	Current() Info
}

// ACMEConfig configures issuance for the box's public names.
type ACMEConfig struct {
	DirectoryURL string   // e.g. https://acme-v02.api.letsencrypt.org/directory
	Names        []string // public DNS names that reach this box (port 443, or 80 for HTTP-01)
	Contact      []string // optional, "mailto:ops@example.com"
	// Challenge is ChallengeTLSALPN01 (empty: the default) or ChallengeHTTP01.
	Challenge string
	// Challenges receives the pending answers; the listeners serve them.
	// nil: a private set (then serve HTTPHandler or TLSConfig of this ACME).
	Challenges *ACMEChallenges
	// HTTPClient talks to the CA; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Installed, when set, runs in the transaction that stores the new
	// certificate (the caller's audit entry): both commit or neither does.
	Installed func(tx *store.Tx, before, after Info) error
	Now       func() time.Time // nil: time.Now
	Logger    *slog.Logger
}

// ACME obtains and renews the box certificate with TLS-ALPN-01 (on the
// HTTPS port) or HTTP-01 challenges, answered through cfg.Challenges.
type ACME struct {
	cfg  ACMEConfig
	db   *store.DB
	inst ACMEInstaller
	log  *slog.Logger
	ch   *ACMEChallenges

	runMu sync.Mutex // one issuance at a time
}

// NewACME checks cfg; it does not contact the CA.
func NewACME(db *store.DB, inst ACMEInstaller, cfg ACMEConfig) (*ACME, error) {
	if db == nil || inst == nil {
		return nil, errors.New("certs: acme needs a store and an installer")
	}
	if !strings.HasPrefix(cfg.DirectoryURL, "https://") {
		return nil, fmt.Errorf("certs: acme directory %q must be https", cfg.DirectoryURL)
	}
	if len(cfg.Names) == 0 || len(cfg.Names) > 10 {
		return nil, errors.New("certs: acme needs 1..10 names")
	}
	for _, n := range cfg.Names {
		if !acmeName(n) {
			return nil, fmt.Errorf("certs: acme name %q is not a public DNS name", n)
		}
	}
	switch cfg.Challenge {
	case "":
		cfg.Challenge = ChallengeTLSALPN01
	case ChallengeTLSALPN01, ChallengeHTTP01:
	default:
		return nil, fmt.Errorf("certs: acme challenge type %q unknown", cfg.Challenge)
	}
	if cfg.Challenges == nil {
		cfg.Challenges = NewACMEChallenges()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &ACME{cfg: cfg, db: db, inst: inst, log: cfg.Logger.With("pkg", "certs", "part", "acme"), ch: cfg.Challenges}, nil
}

// ACMEDue says whether the certificate described by cur should be (re)issued
// for names at now, and why.
func ACMEDue(cur Info, names []string, now time.Time) (bool, string) {
	switch {
	case cur.Source != SourceACME:
		return true, "no ACME certificate yet"
	case !coversAll(cur.DNSNames, names):
		return true, "names changed"
	case !now.Before(cur.NotBefore.Add(ACMERenewAfter)):
		return true, "certificate is two months old"
	case !now.Before(cur.NotAfter.Add(-ACMERenewBefore)):
		return true, "certificate expires soon"
	}
	return false, ""
}

func coversAll(have, want []string) bool {
	for _, n := range want {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

// RenewIfDue issues a certificate when ACMEDue says so. It reports whether a
// new certificate was installed.
func (a *ACME) RenewIfDue(ctx context.Context) (bool, error) {
	due, why := ACMEDue(a.inst.Current(), a.cfg.Names, a.cfg.Now())
	if !due {
		return false, nil
	}
	a.log.Info("acme: requesting certificate", "reason", why, "names", a.cfg.Names)
	if err := a.Obtain(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// Obtain runs one full ACME order and installs the result.
func (a *ACME) Obtain(ctx context.Context) error {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	key, err := a.accountKey()
	if err != nil {
		return err
	}
	client := &acme.Client{Key: key, DirectoryURL: a.cfg.DirectoryURL, HTTPClient: a.cfg.HTTPClient, UserAgent: "edgepbx"}
	if _, err := client.Register(ctx, &acme.Account{Contact: a.cfg.Contact}, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return fmt.Errorf("certs: acme register: %w", err)
	}
	order, err := client.AuthorizeOrder(ctx, acme.DomainIDs(a.cfg.Names...))
	if err != nil {
		return fmt.Errorf("certs: acme order: %w", err)
	}
	for _, u := range order.AuthzURLs {
		if err := a.authorize(ctx, client, u); err != nil {
			return err
		}
	}
	if order, err = client.WaitOrder(ctx, order.URI); err != nil {
		return fmt.Errorf("certs: acme wait order: %w", err)
	}
	certKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("certs: acme certificate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: a.cfg.Names}, certKey)
	if err != nil {
		return fmt.Errorf("certs: acme csr: %w", err)
	}
	chain, _, err := client.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		return fmt.Errorf("certs: acme finalize: %w", err)
	}
	if len(chain) > MaxChainLen {
		chain = chain[:MaxChainLen]
	}
	if err := a.inst.InstallWith(&Bundle{Chain: chain, Key: certKey}, a.cfg.Names, SourceACME, a.cfg.Installed); err != nil {
		return fmt.Errorf("certs: acme install: %w", err)
	}
	return nil
}

func (a *ACME) authorize(ctx context.Context, client *acme.Client, url string) error {
	z, err := client.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("certs: acme authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, c := range z.Challenges {
		if c.Type == a.cfg.Challenge {
			chal = c
		}
	}
	if chal == nil {
		return fmt.Errorf("certs: acme: CA offers no %s challenge for %s", a.cfg.Challenge, z.Identifier.Value)
	}
	if len(chal.Token) == 0 || len(chal.Token) > acmeMaxToken {
		return errors.New("certs: acme: bad challenge token")
	}
	name := strings.ToLower(z.Identifier.Value)
	if !slices.Contains(a.cfg.Names, name) {
		return fmt.Errorf("certs: acme: CA asks about %.80q, not one of our names", z.Identifier.Value)
	}
	var done func()
	switch a.cfg.Challenge {
	case ChallengeTLSALPN01:
		cert, err := client.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return fmt.Errorf("certs: acme tls-alpn-01 certificate: %w", err)
		}
		done = a.ch.setALPN(name, &cert)
	default:
		ka, err := client.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return fmt.Errorf("certs: acme key authorization: %w", err)
		}
		done = a.ch.setHTTP(chal.Token, ka)
	}
	defer done()
	if _, err := client.Accept(ctx, chal); err != nil {
		return fmt.Errorf("certs: acme accept %s: %w", z.Identifier.Value, err)
	}
	if _, err := client.WaitAuthorization(ctx, z.URI); err != nil {
		return fmt.Errorf("certs: acme authorization for %s: %w", z.Identifier.Value, err)
	}
	return nil
}

// HTTPHandler answers this client's HTTP-01 challenges (see
// ACMEChallenges.HTTPHandler).
func (a *ACME) HTTPHandler(next http.Handler) http.Handler { return a.ch.HTTPHandler(next) }

// TLSConfig answers this client's TLS-ALPN-01 challenges on a listener
// using base (see ACMEChallenges.TLSConfig).
func (a *ACME) TLSConfig(base *tls.Config) *tls.Config { return a.ch.TLSConfig(base) }

// accountKey loads the sealed ACME account key or makes and stores one.
func (a *ACME) accountKey() (*ecdsa.PrivateKey, error) {
	var sealed []byte
	var ok bool
	if err := a.db.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(acmeBucket, "account", &sealed)
		return err
	}); err != nil {
		return nil, fmt.Errorf("certs: acme account: %w", err)
	}
	if ok {
		der, err := a.db.Unseal(sealed, acmeAccountAD)
		if err != nil {
			return nil, fmt.Errorf("certs: acme account key: %w", err)
		}
		k, err := x509.ParseECPrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("certs: acme account key: %w", err)
		}
		return k, nil
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certs: acme account key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if sealed, err = a.db.Seal(der, acmeAccountAD); err != nil {
		return nil, err
	}
	if err := a.db.Update(func(tx *store.Tx) error { return tx.Put(acmeBucket, "account", sealed) }); err != nil {
		return nil, fmt.Errorf("certs: store acme account key: %w", err)
	}
	return k, nil
}

// acmeName accepts a lower-case multi-label DNS name (no wildcards: neither
// HTTP-01 nor TLS-ALPN-01 can prove them, no IPs, no trailing dot).
func acmeName(s string) bool {
	if len(s) > 253 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
