// Package provision is the phones' provisioning server: phone records and
// their secrets (buckets provision.*), vendor templates as data, the HTTP
// bootstrap and HTTPS configuration handlers with their proofs (enrolment
// window, one-time token, per-device digest credential, vendor factory
// certificate), per-source limits and MAC-scan bans, and the firmware files
// phones download. Configurations are generated per request, never stored.
package provision

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// Extensions are the SIP credentials (sipedge.Extensions): provisioning
// sets a fresh random password for each extension it hands to a phone.
type Extensions interface {
	Set(user, password string) error
	List() []string
}

// Licence is the degraded-mode gate (license.Manager).
type Licence interface {
	AllowNewExtension() bool
	AllowProvisioning() bool
}

// Banner asks PID 1 to ban a source (the control client).
type Banner interface {
	Ban(ctx context.Context, b fwspec.Ban) error
}

// Deps are what the provisioning service needs.
type Deps struct {
	Store *store.DB // required
	Audit *audit.Log
	// Security receives refusals and bans; nil: slog only.
	Security   *logs.Log
	Logger     *slog.Logger
	Extensions Extensions
	Licence    Licence
	Banner     Banner
	// Host is the name or address phones reach the box by (in its certificate).
	Host string
	// HTTPSPort and HTTPPort are the provisioning listeners (8443, 8080).
	HTTPSPort, HTTPPort int
	// SIPPort is the SIP port for the configured transport (5061 for TLS).
	SIPPort int
	// CAPEM returns the certificate phones must trust for the box.
	CAPEM func() []byte
	// DataDir holds uploaded phone firmware (DataDir/provision/firmware).
	DataDir string
	// MaxFirmwareBytes lowers the firmware upload bound (0: MaxFirmwareBytes).
	MaxFirmwareBytes int64
	Clock            func() time.Time
	Limits           Limits
}

// Limits bound what one source may do.
type Limits struct {
	// Rate and Burst: requests per second per source (token bucket).
	Rate  float64
	Burst int
	// ScanMACs distinct MACs refused to one source within ScanWindow ban it.
	ScanMACs   int
	ScanWindow time.Duration
	// BanFor is how long a ban lasts.
	BanFor time.Duration
	// AttackMACs distinct refused MACs from all sources within ScanWindow
	// close bare-MAC enrolment (token and certificate still work) until
	// the window passes without that many.
	AttackMACs int
	// MaxSources bounds the per-source table (oldest evicted).
	MaxSources int
}

// DefaultLimits suit a phones LAN: a booting phone fetches a handful of
// files; an office rebooting together stays under the per-source rate
// because each phone has its own address inside the phones zone.
func DefaultLimits() Limits {
	return Limits{Rate: 5, Burst: 30, ScanMACs: 8, ScanWindow: 10 * time.Minute, BanFor: time.Hour, AttackMACs: 64, MaxSources: 4096}
}

// Service is the provisioning server.
type Service struct {
	deps      Deps
	log       *slog.Logger
	templates map[Vendor]*Template
	nonceKey  [32]byte
	dummyHA1  string
	dummySeal []byte // opened for unknown MACs: the same unseal as a known one

	mu                    sync.Mutex
	asking                map[string]*Asking
	sources               map[string]*sourceState // by address
	bans                  map[string]time.Time    // local copy of the bans asked of PID 1
	attack                map[string]time.Time    // refused MACs from any source (bounded)
	fetches               []Fetch                 // ring of the last fetches of every kind
	fetchNxt              int
	bootLogs              map[string][]byte // Poly uploads: bounded tail per phone
	last                  map[string]Fetch  // newest successful fetch per phone
	settCur               Settings
	pnp                   *PnP    // the multicast SIP PnP responder while it listens
	pnpGate               pnpGate // limits and counters of both PnP paths
	dhcp                  *DHCP
	dhcpState, dhcpDetail string
	dhcpChanged           chan struct{} // settings changed: RunDHCP restarts

	banq chan fwspec.Ban
	wg   sync.WaitGroup
	stop context.CancelFunc

	// hashes counts digest computations; the refusal paths must do the
	// same work whatever the reason (tests compare it).
	hashes countAtomic
}

// New builds the service and starts its ban sender; Close stops it.
func New(d Deps) (*Service, error) {
	if d.Store == nil {
		return nil, errors.New("provision: Store is required")
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Clock == nil {
		d.Clock = time.Now
	}
	if d.Limits == (Limits{}) {
		d.Limits = DefaultLimits()
	}
	if d.HTTPSPort == 0 {
		d.HTTPSPort = 8443
	}
	if d.HTTPPort == 0 {
		d.HTTPPort = 8080
	}
	if d.SIPPort == 0 {
		d.SIPPort = 5061
	}
	if d.Host == "" {
		return nil, errors.New("provision: Host is required")
	}
	s := &Service{deps: d, log: d.Logger, templates: templates(), asking: map[string]*Asking{}, sources: map[string]*sourceState{},
		bans: map[string]time.Time{}, attack: map[string]time.Time{}, fetches: make([]Fetch, 0, maxFetchLog), bootLogs: map[string][]byte{},
		banq: make(chan fwspec.Ban, 256), dhcpChanged: make(chan struct{}, 1), dhcpState: "off"}
	if _, err := rand.Read(s.nonceKey[:]); err != nil {
		return nil, fmt.Errorf("provision: nonce key: %w", err)
	}
	dummy, err := randomSecret()
	if err != nil {
		return nil, err
	}
	s.dummyHA1 = md5hex("000000000000:" + realm + ":" + dummy)
	if s.dummySeal, err = d.Store.Seal([]byte(`{"credential":"`+dummy+`","token":"`+dummy+`","sip":{}}`), "provision/dummy"); err != nil {
		return nil, err
	}
	if err := s.loadSettings(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	s.wg.Add(1)
	go s.sendBans(ctx)
	return s, nil
}

// Close stops the ban sender and waits for it.
func (s *Service) Close() error {
	s.stop()
	s.wg.Wait()
	return nil
}

func (s *Service) now() time.Time { return s.deps.Clock() }

func (s *Service) provURL() string {
	return "https://" + net.JoinHostPort(s.deps.Host, strconv.Itoa(s.deps.HTTPSPort)) + "/"
}

func (s *Service) bootURL() string {
	return "http://" + net.JoinHostPort(s.deps.Host, strconv.Itoa(s.deps.HTTPPort)) + "/"
}

// ProvisioningURLs are what DHCP option 66 (or a phone's menu) should say.
func (s *Service) ProvisioningURLs() (https, bootstrap string) { return s.provURL(), s.bootURL() }

func (s *Service) loadSettings() error {
	st := DefaultSettings()
	err := s.deps.Store.View(func(tx *store.Tx) error {
		_, err := tx.Get(bucketSettings, "settings", &st)
		return err
	})
	if err != nil {
		return fmt.Errorf("provision: settings: %w", err)
	}
	if st.Validate() != nil {
		st = DefaultSettings()
	}
	s.mu.Lock()
	s.settCur = st
	s.mu.Unlock()
	return nil
}

func (s *Service) settings() Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settCur
}

// Settings returns the provisioning settings.
func (s *Service) Settings() Settings { return s.settings() }

// SetSettings validates and stores new settings.
func (s *Service) SetSettings(st Settings, actor, source string) error {
	if err := st.Validate(); err != nil {
		return err
	}
	before := s.settings()
	err := s.deps.Store.Update(func(tx *store.Tx) error {
		if err := tx.Put(bucketSettings, "settings", st); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "provision.settings", "settings", before, st)
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.settCur = st
	s.mu.Unlock()
	if before.DHCP.Enabled != st.DHCP.Enabled || !st.DHCP.equal(before.DHCP) {
		select {
		case s.dhcpChanged <- struct{}{}:
		default:
		}
	}
	return nil
}

func (s *Service) auditTx(tx *store.Tx, actor, source, action, target string, before, after any) error {
	if s.deps.Audit == nil {
		return nil
	}
	return s.deps.Audit.RecordTx(tx, audit.Event{Actor: actor, Source: source, Action: action, Target: target, Outcome: "ok", Before: before, After: after})
}

// SetVendorCA stores the vendor's factory CA (PEM) used to verify phones'
// client certificates. An empty PEM removes it.
func (s *Service) SetVendorCA(v Vendor, pemData []byte, actor, source string) error {
	if !ValidVendor(v) {
		return &FieldError{"vendor", errors.New("unknown vendor")}
	}
	var info []string
	if len(pemData) > 0 {
		certs, err := ParseCAPEM(pemData)
		if err != nil {
			return &FieldError{"pem", err}
		}
		for _, c := range certs {
			info = append(info, c.Subject.String())
		}
	}
	return s.deps.Store.Update(func(tx *store.Tx) error {
		if len(pemData) == 0 {
			if err := tx.Delete(bucketVendorCA, string(v)); err != nil {
				return err
			}
		} else if err := tx.Put(bucketVendorCA, string(v), string(pemData)); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "provision.vendor_ca", string(v), nil, info)
	})
}

func (s *Service) vendorPool(v Vendor) (*x509.CertPool, error) {
	var pemData string
	err := s.deps.Store.View(func(tx *store.Tx) error {
		_, err := tx.Get(bucketVendorCA, string(v), &pemData)
		return err
	})
	if err != nil || pemData == "" {
		return nil, err
	}
	certs, err := ParseCAPEM([]byte(pemData))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

func hmacEqual(a, b string) bool { return hmac.Equal([]byte(a), []byte(b)) }
