package certs

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// DefaultACMEDirectory is Let's Encrypt's production directory.
const DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"

// Bounds on the admin-supplied ACME settings.
const (
	MaxACMENames   = 10
	maxACMEURL     = 512
	maxACMEEmail   = 254
	maxACMECAPEM   = 64 << 10
	maxACMECACerts = 8
)

// ErrACMESettings wraps every reason ACME settings are refused.
var ErrACMESettings = errors.New("certs: ACME settings refused")

// ACMESettings say whether and how the box gets its certificate by ACME.
// They are stored in bucket certs.acme, key "settings"; edgepbxd's ACME
// loop reads them before every attempt.
type ACMESettings struct {
	Enabled      bool   `json:"enabled"`
	DirectoryURL string `json:"directory_url"`
	// Email is the optional account contact (the CA's expiry warnings).
	Email string `json:"email,omitempty"`
	// Names are the public DNS names that reach this box; the certificate
	// covers all of them.
	Names []string `json:"names"`
	// Challenge is ChallengeTLSALPN01 (the default: validated on the admin
	// HTTPS port the firewall opens anyway) or ChallengeHTTP01.
	Challenge string `json:"challenge"`
	// HTTPAddr is where edgepbxd listens for HTTP-01 validation while an
	// order runs, e.g. ":80"; the admin must give the CA a path to it.
	HTTPAddr string `json:"http_addr,omitempty"`
	// CAPEM are extra roots trusted for the directory (a private ACME CA);
	// empty: the system roots.
	CAPEM string `json:"ca_pem,omitempty"`
}

// DefaultACMESettings: off, Let's Encrypt, TLS-ALPN-01.
func DefaultACMESettings() ACMESettings {
	return ACMESettings{DirectoryURL: DefaultACMEDirectory, Challenge: ChallengeTLSALPN01, Names: []string{}}
}

// Normalize trims and lower-cases what an admin typed, fills defaults and
// drops empty names.
func (s *ACMESettings) Normalize() {
	s.DirectoryURL = strings.TrimSpace(s.DirectoryURL)
	if s.DirectoryURL == "" {
		s.DirectoryURL = DefaultACMEDirectory
	}
	s.Email = strings.TrimPrefix(strings.TrimSpace(s.Email), "mailto:")
	s.Challenge = strings.ToLower(strings.TrimSpace(s.Challenge))
	if s.Challenge == "" {
		s.Challenge = ChallengeTLSALPN01
	}
	s.HTTPAddr = strings.TrimSpace(s.HTTPAddr)
	switch {
	case s.Challenge == ChallengeTLSALPN01:
		s.HTTPAddr = "" // a form keeps sending it after a switch back
	case s.Challenge == ChallengeHTTP01 && s.HTTPAddr == "":
		s.HTTPAddr = ":80"
	}
	s.CAPEM = strings.TrimSpace(s.CAPEM)
	names := make([]string, 0, len(s.Names))
	for _, n := range s.Names {
		n = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(n)), ".")
		if n != "" && !containsString(names, n) {
			names = append(names, n)
		}
	}
	s.Names = names
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Validate checks normalised settings. Disabled settings are checked too,
// so nothing malformed is ever stored; only "at least one name" waits for
// Enabled.
func (s ACMESettings) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrACMESettings, fmt.Sprintf(format, a...))
	}
	if len(s.DirectoryURL) > maxACMEURL {
		return bad("directory URL longer than %d bytes", maxACMEURL)
	}
	u, err := url.Parse(s.DirectoryURL)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return bad("directory URL %.100q must be https://host/path", s.DirectoryURL)
	}
	if s.Email != "" && !validEmail(s.Email) {
		return bad("contact e-mail %.100q is not an address like ops@example.com", s.Email)
	}
	if len(s.Names) > MaxACMENames {
		return bad("at most %d names", MaxACMENames)
	}
	for _, n := range s.Names {
		if !acmeName(n) || net.ParseIP(n) != nil {
			return bad("%.100q is not a public DNS name (lower-case, at least two labels, no wildcard, no address)", n)
		}
	}
	if s.Enabled && len(s.Names) == 0 {
		return bad("name at least one public DNS name that reaches this box")
	}
	switch s.Challenge {
	case ChallengeTLSALPN01:
		if s.HTTPAddr != "" {
			return bad("http_addr is only used with %s", ChallengeHTTP01)
		}
	case ChallengeHTTP01:
		if !validListenAddr(s.HTTPAddr) {
			return bad("http_addr %.60q must be [address]:port", s.HTTPAddr)
		}
	default:
		return bad("challenge %.40q must be %s or %s", s.Challenge, ChallengeTLSALPN01, ChallengeHTTP01)
	}
	if _, err := parseCAPEM(s.CAPEM); err != nil {
		return bad("%v", err)
	}
	return nil
}

// Contact is the account contact list for ACMEConfig.
func (s ACMESettings) Contact() []string {
	if s.Email == "" {
		return nil
	}
	return []string{"mailto:" + s.Email}
}

// Roots are the system roots plus CAPEM, for the HTTP client that talks
// to the directory. A box without system roots trusts CAPEM alone.
func (s ACMESettings) Roots() (*x509.CertPool, error) {
	extra, err := parseCAPEM(s.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrACMESettings, err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, c := range extra {
		pool.AddCert(c)
	}
	return pool, nil
}

func parseCAPEM(s string) ([]*x509.Certificate, error) {
	if len(s) > maxACMECAPEM {
		return nil, fmt.Errorf("CA certificates are %d bytes (max %d)", len(s), maxACMECAPEM)
	}
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %.40q in the CA certificates", b.Type)
		}
		if len(out) == maxACMECACerts {
			return nil, fmt.Errorf("more than %d CA certificates", maxACMECACerts)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("CA certificate %d: %v", len(out)+1, err)
		}
		out = append(out, c)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, errors.New("CA certificates: data that is not PEM")
	}
	return out, nil
}

// validEmail accepts a plain addr-spec: a dot-atom local part and a DNS
// domain; nothing that could smuggle a second contact or a header.
func validEmail(s string) bool {
	if len(s) > maxACMEEmail {
		return false
	}
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || len(local) > 64 || !acmeName(strings.ToLower(domain)) {
		return false
	}
	for _, c := range local {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".!#$%&'*+/=?^_`{|}~-", c)) {
			return false
		}
	}
	return local[0] != '.' && local[len(local)-1] != '.' && !strings.Contains(local, "..")
}

func validListenAddr(s string) bool {
	if len(s) > 64 {
		return false
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return false
	}
	if host != "" && net.ParseIP(host) == nil {
		return false
	}
	p, err := strconv.Atoi(port)
	return err == nil && p > 0 && p <= 65535 && strconv.Itoa(p) == port
}

// LoadACMESettings reads the stored settings (the defaults when none).
func LoadACMESettings(db *store.DB) (ACMESettings, error) {
	s := DefaultACMESettings()
	err := db.View(func(tx *store.Tx) error { _, err := tx.Get(acmeBucket, "settings", &s); return err })
	if err != nil {
		return s, fmt.Errorf("certs: acme settings: %w", err)
	}
	return s, nil
}

// SaveACMESettings normalises and validates next and stores it, returning
// what it replaced. On error nothing changes.
func SaveACMESettings(db *store.DB, next ACMESettings) (prev, saved ACMESettings, err error) {
	return SaveACMESettingsWith(db, next, nil)
}

// SaveACMESettingsWith is SaveACMESettings with also run in the same write
// transaction (the caller's audit entry, given the settings before and
// after): both commit or neither does.
func SaveACMESettingsWith(db *store.DB, next ACMESettings, also func(tx *store.Tx, prev, saved ACMESettings) error) (prev, saved ACMESettings, err error) {
	next.Normalize()
	if err := next.Validate(); err != nil {
		return prev, next, err
	}
	prev = DefaultACMESettings()
	err = db.Update(func(tx *store.Tx) error {
		if _, err := tx.Get(acmeBucket, "settings", &prev); err != nil {
			return err
		}
		if err := tx.Put(acmeBucket, "settings", next); err != nil {
			return err
		}
		if also == nil {
			return nil
		}
		return also(tx, prev, next)
	})
	if err != nil {
		return prev, next, fmt.Errorf("certs: store acme settings: %w", err)
	}
	return prev, next, nil
}

// ACME states as shown to admins.
const (
	ACMEOff     = "off"
	ACMEIdle    = "idle"    // enabled, certificate current, waiting for the next check
	ACMERunning = "running" // an order is in progress
	ACMEFailed  = "failed"  // the last attempt failed; the current certificate stays
)

// ACMEStatus is the outcome of the last attempts, stored in certs.acme
// "status" so the certificates page shows it after a restart too.
type ACMEStatus struct {
	State       string    `json:"state"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Failures    int       `json:"failures"` // in a row
	NextCheck   time.Time `json:"next_check,omitzero"`
}

// LoadACMEStatus reads the stored status (state "off" when none).
func LoadACMEStatus(db *store.DB) (ACMEStatus, error) {
	st := ACMEStatus{State: ACMEOff}
	err := db.View(func(tx *store.Tx) error { _, err := tx.Get(acmeBucket, "status", &st); return err })
	if err != nil {
		return st, fmt.Errorf("certs: acme status: %w", err)
	}
	return st, nil
}

// SaveACMEStatus stores st.
func SaveACMEStatus(db *store.DB, st ACMEStatus) error {
	if len(st.LastError) > 1024 {
		st.LastError = strings.ToValidUTF8(st.LastError[:1024], "")
	}
	if err := db.Update(func(tx *store.Tx) error { return tx.Put(acmeBucket, "status", st) }); err != nil {
		return fmt.Errorf("certs: store acme status: %w", err)
	}
	return nil
}
