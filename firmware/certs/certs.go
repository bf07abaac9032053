// Package certs owns the box's TLS server certificates: the self-signed one
// made at first start, and uploaded or ACME-issued replacements. It keeps
// them in the store (bucket "certs", private keys sealed with the device key)
// and serves them to every TLS listener in edgepbxd through Manager.
//
// A bad replacement must never lock admins out: Install validates before it
// stores anything, keeps the previous certificate for Rollback, and the
// self-signed certificate stays available for every name a replacement does
// not cover (for example the box's IP address).
package certs

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bucket is the store bucket this package owns.
const Bucket = "certs"

// Store keys inside Bucket.
const (
	slotSelf     = "selfsigned"
	slotActive   = "active"
	slotPrevious = "previous"
)

// Sources of a certificate, as recorded and reported.
const (
	SourceSelfSigned = "self-signed"
	SourceUpload     = "upload"
	SourceACME       = "acme"
)

// ErrInvalid wraps every reason Install or ParsePEM refuses a certificate.
var ErrInvalid = errors.New("certs: certificate refused")

// Identity names the box; the self-signed certificate covers all of it.
type Identity struct {
	Serial   string   // device serial: the certificate names edgepbx-<serial>
	Hostname string   // optional; ignored when not a valid DNS name
	IPs      []net.IP // the box's addresses at first start
}

// DNSNames are the DNS names the self-signed certificate covers.
func (id Identity) DNSNames() []string {
	names := []string{"edgepbx-" + id.Serial}
	if h := strings.ToLower(id.Hostname); validDNSName(h) && h != names[0] && h != "localhost" {
		names = append(names, h)
	}
	return append(names, "localhost")
}

// Info describes one certificate for the banner, the admin UI and the daily check.
type Info struct {
	Fingerprint string    `json:"fingerprint"` // SHA-256 of the leaf, AA:BB:… upper-case hex
	Subject     string    `json:"subject"`
	DNSNames    []string  `json:"dns_names"`
	IPs         []string  `json:"ips"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	Source      string    `json:"source"`
	Installed   time.Time `json:"installed"`
}

// record is a certificate as stored: DER chain (leaf first) and the PKCS#8
// private key sealed with the device key, bound to the leaf's fingerprint.
type record struct {
	Chain     [][]byte  `json:"chain"`
	Key       []byte    `json:"key"`
	Source    string    `json:"source"`
	Installed time.Time `json:"installed"`
}

// loaded is a usable certificate.
type loaded struct {
	cert *tls.Certificate
	info Info
	rec  record
}

// state is swapped as a whole so GetCertificate never sees a half update.
type state struct {
	active   *loaded // served by default
	previous *loaded // nil: the self-signed one
	self     *loaded
}

// Manager serves the current certificate to TLS listeners. It is safe for
// concurrent use.
type Manager struct {
	db    *store.DB
	log   *slog.Logger
	now   func() time.Time
	mu    sync.Mutex // serialises Install and Rollback
	state atomic.Pointer[state]
}

// Option changes a Manager default.
type Option func(*Manager)

// WithClock sets the clock used for expiry checks (tests).
func WithClock(now func() time.Time) Option { return func(m *Manager) { m.now = now } }

// WithLogger sets the logger; the default discards.
func WithLogger(l *slog.Logger) Option { return func(m *Manager) { m.log = l } }

// Load reads the certificates from db, creating and storing the self-signed
// one on first start. A stored replacement that no longer loads (expired,
// corrupt) is skipped with a warning in favour of the previous one or the
// self-signed one, so the box always has a certificate to serve.
func Load(db *store.DB, id Identity, opts ...Option) (*Manager, error) {
	m := &Manager{db: db, log: slog.New(slog.DiscardHandler), now: time.Now}
	for _, o := range opts {
		o(m)
	}
	if !validSerial(id.Serial) {
		return nil, fmt.Errorf("certs: invalid serial %q", id.Serial)
	}
	var st state
	err := db.Update(func(tx *store.Tx) error {
		self, err := m.loadSlot(tx, slotSelf)
		if err != nil {
			// The self-signed key is sealed with the device key; failing to
			// open it means a wrong key or a damaged store, not something to
			// paper over by making a new identity.
			return err
		}
		if self == nil {
			chain, key, err := newSelfSigned(id)
			if err != nil {
				return err
			}
			rec, err := m.sealRecord(chain, key, SourceSelfSigned)
			if err != nil {
				return err
			}
			if err := tx.Put(Bucket, slotSelf, rec); err != nil {
				return err
			}
			if self, err = m.fromRecord(rec); err != nil {
				return err
			}
			m.log.Info("certs: created self-signed certificate", "fingerprint", self.info.Fingerprint)
		}
		st.self = self
		for _, slot := range []string{slotActive, slotPrevious} {
			l, err := m.loadSlot(tx, slot)
			if err == nil && l != nil && !m.now().Before(l.info.NotAfter) {
				err = fmt.Errorf("expired %s", l.info.NotAfter.UTC().Format(time.RFC3339))
			}
			if err != nil {
				m.log.Warn("certs: stored certificate unusable, falling back", "slot", slot, "err", err)
				l = nil
			}
			if slot == slotActive {
				st.active = l
			} else {
				st.previous = l
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.active == nil {
		st.active, st.previous = st.previous, nil
	}
	if st.active == nil {
		st.active = st.self
	}
	m.state.Store(&st)
	return m, nil
}

func (m *Manager) loadSlot(tx *store.Tx, slot string) (*loaded, error) {
	var rec record
	ok, err := tx.Get(Bucket, slot, &rec)
	if err != nil || !ok {
		return nil, err
	}
	return m.fromRecord(rec)
}

// fromRecord unseals the key and checks it still matches the certificate.
func (m *Manager) fromRecord(rec record) (*loaded, error) {
	if len(rec.Chain) == 0 {
		return nil, errors.New("certs: stored certificate has no chain")
	}
	leaf, err := x509.ParseCertificate(rec.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("certs: stored certificate: %w", err)
	}
	fp := FingerprintOf(rec.Chain[0])
	der, err := m.db.Unseal(rec.Key, keyAD(fp))
	if err != nil {
		return nil, fmt.Errorf("certs: key of %s: %w", fp, err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("certs: key of %s: %w", fp, err)
	}
	signer, err := checkKey(key, leaf)
	if err != nil {
		return nil, err
	}
	return &loaded{
		cert: &tls.Certificate{Certificate: rec.Chain, PrivateKey: signer, Leaf: leaf},
		info: infoOf(leaf, rec.Source, rec.Installed),
		rec:  rec,
	}, nil
}

func keyAD(fingerprint string) string { return "certs/key/" + fingerprint }

// GetCertificate is for tls.Config.GetCertificate: the active certificate,
// unless the client asks (by SNI) for a name only the self-signed one covers.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	st := m.state.Load()
	if hello == nil || st.active == st.self {
		return st.active.cert, nil
	}
	for _, l := range []*loaded{st.active, st.self} {
		if hello.SupportsCertificate(l.cert) == nil {
			return l.cert, nil
		}
	}
	return st.active.cert, nil
}

// Fingerprint is the SHA-256 fingerprint of the active certificate, as shown
// on the console banner (AA:BB:… upper-case hex).
func (m *Manager) Fingerprint() string { return m.state.Load().active.info.Fingerprint }

// Current describes the active certificate.
func (m *Manager) Current() Info { return m.state.Load().active.info }

// SelfSigned describes the self-signed fallback certificate.
func (m *Manager) SelfSigned() Info { return m.state.Load().self.info }

// FingerprintOf formats the SHA-256 of a DER certificate like Fingerprint.
func FingerprintOf(der []byte) string {
	sum := sha256.Sum256(der)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

func infoOf(leaf *x509.Certificate, source string, installed time.Time) Info {
	ips := make([]string, 0, len(leaf.IPAddresses))
	for _, ip := range leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	return Info{
		Fingerprint: FingerprintOf(leaf.Raw),
		Subject:     leaf.Subject.String(),
		DNSNames:    append([]string(nil), leaf.DNSNames...),
		IPs:         ips,
		NotBefore:   leaf.NotBefore,
		NotAfter:    leaf.NotAfter,
		Source:      source,
		Installed:   installed,
	}
}

// TLSConfig returns a server configuration using this Manager: TLS 1.2
// minimum by default, 1.3 allowed, and for 1.2 only ECDHE key exchange with
// AEAD ciphers (1.3 suites are all AEAD and not configurable in Go). Zero
// means the default; versions below 1.2 are refused.
func (m *Manager) TLSConfig(minVersion, maxVersion uint16) (*tls.Config, error) {
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	if maxVersion == 0 {
		maxVersion = tls.VersionTLS13
	}
	for _, v := range []uint16{minVersion, maxVersion} {
		if v != tls.VersionTLS12 && v != tls.VersionTLS13 {
			return nil, fmt.Errorf("certs: TLS version %#04x not allowed (only 1.2 and 1.3)", v)
		}
	}
	if minVersion > maxVersion {
		return nil, fmt.Errorf("certs: TLS minimum %s above maximum %s", tls.VersionName(minVersion), tls.VersionName(maxVersion))
	}
	return &tls.Config{
		MinVersion:     minVersion,
		MaxVersion:     maxVersion,
		CipherSuites:   CipherSuites(),
		GetCertificate: m.GetCertificate,
	}, nil
}

// CipherSuites are the TLS 1.2 suites edgepbx offers: ECDHE with AES-GCM or
// ChaCha20-Poly1305, for ECDSA and RSA certificates.
func CipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}

// validSerial bounds the serial before it goes into a DNS name.
func validSerial(s string) bool {
	return len(s) > 0 && len(s) <= 48 && validDNSName("edgepbx-"+strings.ToLower(s))
}

func validDNSName(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
