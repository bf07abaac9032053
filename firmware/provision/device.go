package provision

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Buckets this package owns.
const (
	bucketDevices  = "provision.devices"  // MAC -> Device (no secrets)
	bucketSecrets  = "provision.secrets"  // MAC -> sealed deviceSecrets
	bucketSettings = "provision.settings" // "settings" -> Settings
	bucketVendorCA = "provision.vendorca" // vendor -> PEM
	bucketFirmware = "provision.firmware" // id -> Firmware
)

// State is where a phone is in its life.
type State string

// Phone states.
const (
	// Pending: known to the box, not yet allowed a configuration.
	Pending State = "pending"
	// Approved: served its configuration to proof (window, token, digest, certificate).
	Approved State = "approved"
	// Revoked: never served again; its SIP passwords were rotated.
	Revoked State = "revoked"
)

// Fetch is one request a phone made, as the Phones page shows it.
type Fetch struct {
	Time      time.Time `json:"time"`
	Source    string    `json:"source"`
	File      string    `json:"file"`
	Result    string    `json:"result"` // "config", "bootstrap", "refused", …
	Proof     string    `json:"proof,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
}

// Device is a phone record (secrets are apart, sealed).
type Device struct {
	MAC        string    `json:"mac"`
	Vendor     Vendor    `json:"vendor"`
	Model      string    `json:"model,omitempty"`
	Label      string    `json:"label,omitempty"`
	Extensions []string  `json:"extensions"`
	State      State     `json:"state"`
	Created    time.Time `json:"created"`
	// WindowUntil ends the enrolment window: until then, and until the
	// first successful fetch, the phone is served without further proof.
	WindowUntil time.Time `json:"window_until"`
	// Enrolled is set by the first successful fetch; from then on only the
	// per-device credential or the factory certificate is proof.
	Enrolled  bool   `json:"enrolled"`
	TokenUsed bool   `json:"token_used"`
	Firmware  string `json:"firmware,omitempty"`
	LastFetch *Fetch `json:"last_fetch,omitempty"`
}

// deviceSecrets is sealed with the device key, bound to its MAC.
type deviceSecrets struct {
	Credential string            `json:"credential"`
	Token      string            `json:"token"`
	SIP        map[string]string `json:"sip"` // extension -> password
}

// Asking is an unknown MAC that asked for a configuration.
type Asking struct {
	MAC       string    `json:"mac"`
	Vendor    Vendor    `json:"vendor,omitempty"`
	Model     string    `json:"model,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Source    string    `json:"source"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Count     int       `json:"count"`
}

// Settings are the admin's provisioning settings.
type Settings struct {
	// WindowMinutes is how long enrolment stays open after an admin adds,
	// approves or re-provisions a phone (1–1440, default 10).
	WindowMinutes int      `json:"window_minutes"`
	NTP           string   `json:"ntp"`
	Timezone      string   `json:"timezone"`
	Language      string   `json:"language"`
	Transport     string   `json:"transport"` // tls (default), tcp, udp
	Codecs        []string `json:"codecs"`
	// DHCP is the optional DHCPv4 server for a phones VLAN (off by default).
	DHCP DHCPSettings `json:"dhcp"`
}

// DefaultSettings are secure defaults: TLS, 10-minute window.
func DefaultSettings() Settings {
	return Settings{WindowMinutes: 10, NTP: "pool.ntp.org", Timezone: "UTC", Language: "English", Transport: "tls",
		Codecs: []string{"opus", "G722", "PCMA", "PCMU"}}
}

// FieldError names the field a refusal is about.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Sentinel errors of the device API.
var (
	ErrNotFound  = errors.New("provision: no such phone")
	ErrExists    = errors.New("provision: phone already known")
	ErrDegraded  = errors.New("provision: licence degraded: no new phones")
	ErrBadState  = errors.New("provision: not allowed in this state")
	ErrTooMany   = errors.New("provision: too many phones")
	errBadString = errors.New("1-64 printable characters")
)

// Validate checks settings; errors name the field.
func (s Settings) Validate() error {
	if s.WindowMinutes < 1 || s.WindowMinutes > 1440 {
		return &FieldError{"window_minutes", errors.New("1-1440")}
	}
	for _, f := range []struct{ n, v string }{{"ntp", s.NTP}, {"timezone", s.Timezone}, {"language", s.Language}} {
		if !printable(f.v, 64) {
			return &FieldError{f.n, errBadString}
		}
	}
	if s.Transport != "tls" && s.Transport != "tcp" && s.Transport != "udp" {
		return &FieldError{"transport", errors.New("tls, tcp or udp")}
	}
	if len(s.Codecs) == 0 || len(s.Codecs) > 8 {
		return &FieldError{"codecs", errors.New("1-8 codecs")}
	}
	for _, c := range s.Codecs {
		if !validModel(c) {
			return &FieldError{"codecs", errors.New("codec names are letters, digits, - and _")}
		}
	}
	return s.DHCP.Validate()
}

func printable(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '<' || r == '>' || r == '"' || r == '&' {
			return false
		}
	}
	return true
}

const (
	maxDevices       = 10000
	maxAsking        = 256
	maxExtsPerDevice = 8
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// randomSecret returns 130 bits as 26 base32 characters (upper case,
// no padding): long enough that guessing is hopeless, short enough to type.
func randomSecret() (string, error) {
	var b [17]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("provision: random: %w", err)
	}
	return b32.EncodeToString(b[:])[:26], nil
}

func secretsAD(mac string) string { return "provision/secrets/" + mac }

func (s *Service) getSecrets(tx *store.Tx, mac string) (deviceSecrets, bool, error) {
	var sec deviceSecrets
	raw, ok, err := tx.GetSecret(bucketSecrets, mac)
	if err != nil || !ok {
		return sec, ok, err
	}
	if err := json.Unmarshal(raw, &sec); err != nil {
		return sec, false, fmt.Errorf("provision: decode secrets of %s: %w", mac, err)
	}
	return sec, true, nil
}

func (s *Service) putSecrets(tx *store.Tx, mac string, sec deviceSecrets) error {
	raw, err := json.Marshal(sec)
	if err != nil {
		return err
	}
	return tx.PutSecret(bucketSecrets, mac, raw)
}

// AddRequest is what an admin gives to add a phone.
type AddRequest struct {
	MAC        string   `json:"mac"`
	Vendor     Vendor   `json:"vendor"`
	Model      string   `json:"model,omitempty"`
	Label      string   `json:"label,omitempty"`
	Extensions []string `json:"extensions"`
	// Approve opens the enrolment window at once.
	Approve bool `json:"approve"`
}

func (s *Service) validExtensions(exts []string) error {
	if len(exts) > maxExtsPerDevice {
		return &FieldError{"extensions", fmt.Errorf("at most %d", maxExtsPerDevice)}
	}
	seen := map[string]bool{}
	for _, e := range exts {
		if seen[e] {
			return &FieldError{"extensions", fmt.Errorf("%q twice", e)}
		}
		seen[e] = true
		if s.deps.Extensions != nil && !slices.Contains(s.deps.Extensions.List(), e) {
			return &FieldError{"extensions", fmt.Errorf("no extension %q", e)}
		}
	}
	return nil
}

// Add creates a phone record (pending, or approved with its window open).
// A degraded licence refuses new phones.
func (s *Service) Add(req AddRequest, actor, source string) (Device, error) {
	if req.Vendor == Linphone && req.MAC == "" {
		// A softphone has no MAC the box can see: it gets a random,
		// locally administered one as its record's key.
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Device{}, err
		}
		b[0] = b[0]&0xfc | 0x02
		req.MAC = hex.EncodeToString(b[:])
	}
	mac, err := NormalizeMAC(req.MAC)
	if err != nil {
		return Device{}, &FieldError{"mac", err}
	}
	if req.Vendor == "" {
		req.Vendor = s.askedVendor(mac)
	}
	if !ValidVendor(req.Vendor) {
		return Device{}, &FieldError{"vendor", errors.New("one of yealink, poly, snom, grandstream, fanvil, cisco, linphone")}
	}
	if req.Model != "" && !validModel(req.Model) {
		return Device{}, &FieldError{"model", errors.New("letters, digits, - and _ (at most 32)")}
	}
	if req.Label != "" && !printable(req.Label, 64) {
		return Device{}, &FieldError{"label", errBadString}
	}
	if err := s.validExtensions(req.Extensions); err != nil {
		return Device{}, err
	}
	if s.deps.Licence != nil && !s.deps.Licence.AllowNewExtension() {
		return Device{}, ErrDegraded
	}
	now := s.now()
	d := Device{MAC: mac, Vendor: req.Vendor, Model: req.Model, Label: req.Label, Extensions: append([]string{}, req.Extensions...),
		State: Pending, Created: now}
	err = s.deps.Store.Update(func(tx *store.Tx) error {
		var old Device
		if ok, err := tx.Get(bucketDevices, mac, &old); err != nil {
			return err
		} else if ok {
			return &FieldError{"mac", ErrExists}
		}
		n := 0
		if err := tx.ForEach(bucketDevices, func(string, []byte) error { n++; return nil }); err != nil {
			return err
		}
		if n >= maxDevices {
			return ErrTooMany
		}
		cred, err := randomSecret()
		if err != nil {
			return err
		}
		sec := deviceSecrets{Credential: cred, SIP: map[string]string{}}
		if req.Approve {
			if err := s.openWindow(&d, &sec, now); err != nil {
				return err
			}
		}
		if err := s.putSecrets(tx, mac, sec); err != nil {
			return err
		}
		if err := tx.Put(bucketDevices, mac, d); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "phone.add", mac, nil, d)
	})
	if err != nil {
		return Device{}, err
	}
	s.forgetAsking(mac)
	if req.Approve {
		if err := s.applySIP(mac); err != nil {
			return d, err
		}
	}
	return d, nil
}

// applySIP gives the registrar the SIP passwords the phone's secrets hold
// (a failure leaves the phone unable to register until re-provisioned;
// nothing is half-served).
func (s *Service) applySIP(mac string) error {
	if s.deps.Extensions == nil {
		return nil
	}
	var sec deviceSecrets
	err := s.deps.Store.View(func(tx *store.Tx) error {
		var err error
		sec, _, err = s.getSecrets(tx, mac)
		return err
	})
	if err != nil {
		return err
	}
	known := s.deps.Extensions.List()
	for e, pw := range sec.SIP {
		if !slices.Contains(known, e) {
			continue // deleted meanwhile
		}
		if err := s.deps.Extensions.Set(e, pw); err != nil {
			return &FieldError{"extensions", err}
		}
	}
	return nil
}

// openWindow approves d, issues a new one-time token and SIP passwords for
// its extensions, and opens the enrolment window.
func (s *Service) openWindow(d *Device, sec *deviceSecrets, now time.Time) error {
	if s.deps.Licence != nil && !s.deps.Licence.AllowProvisioning() {
		return ErrDegraded
	}
	tok, err := randomSecret()
	if err != nil {
		return err
	}
	sec.Token = tok
	sec.SIP = map[string]string{}
	for _, e := range d.Extensions {
		pw, err := randomSecret()
		if err != nil {
			return err
		}
		sec.SIP[e] = pw
	}
	// The registrar's passwords are set after the transaction commits
	// (applySIP): Extensions writes through its own store transaction.
	d.State = Approved
	d.Enrolled, d.TokenUsed = false, false
	d.WindowUntil = now.Add(time.Duration(s.settings().WindowMinutes) * time.Minute)
	return nil
}

// change applies fn to a stored device and its secrets in one transaction.
func (s *Service) change(mac, action, actor, source string, fn func(d *Device, sec *deviceSecrets) error) (Device, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Device{}, &FieldError{"mac", err}
	}
	var d Device
	err = s.deps.Store.Update(func(tx *store.Tx) error {
		ok, err := tx.Get(bucketDevices, mac, &d)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		before := d
		sec, _, err := s.getSecrets(tx, mac)
		if err != nil {
			return err
		}
		if err := fn(&d, &sec); err != nil {
			return err
		}
		if err := s.putSecrets(tx, mac, sec); err != nil {
			return err
		}
		if err := tx.Put(bucketDevices, mac, d); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, action, mac, before, d)
	})
	return d, err
}

// Approve lets a pending phone enrol and opens its window.
func (s *Service) Approve(mac, actor, source string) (Device, error) {
	d, err := s.change(mac, "phone.approve", actor, source, func(d *Device, sec *deviceSecrets) error {
		if d.State == Revoked {
			return ErrBadState
		}
		return s.openWindow(d, sec, s.now())
	})
	if err != nil {
		return d, err
	}
	return d, s.applySIP(d.MAC)
}

// Reprovision opens a new window with a new token and new SIP passwords;
// the per-device credential is replaced too, so a phone that lost its
// configuration enrols again and one that was cloned stops working.
func (s *Service) Reprovision(mac, actor, source string) (Device, error) {
	d, err := s.change(mac, "phone.reprovision", actor, source, func(d *Device, sec *deviceSecrets) error {
		if d.State == Revoked {
			return ErrBadState
		}
		cred, err := randomSecret()
		if err != nil {
			return err
		}
		sec.Credential = cred
		return s.openWindow(d, sec, s.now())
	})
	if err != nil {
		return d, err
	}
	return d, s.applySIP(d.MAC)
}

// Assign sets the phone's extensions. An approved phone gets new SIP
// passwords for them at its next window (Reprovision).
func (s *Service) Assign(mac string, exts []string, actor, source string) (Device, error) {
	if err := s.validExtensions(exts); err != nil {
		return Device{}, err
	}
	return s.change(mac, "phone.assign", actor, source, func(d *Device, sec *deviceSecrets) error {
		if d.State == Revoked {
			return ErrBadState
		}
		d.Extensions = append([]string{}, exts...)
		return nil
	})
}

// Revoke stops serving the phone and rotates its extensions' SIP passwords
// so the configuration it holds no longer registers.
func (s *Service) Revoke(mac, actor, source string) (Device, error) {
	var old map[string]string
	d, err := s.change(mac, "phone.revoke", actor, source, func(d *Device, sec *deviceSecrets) error {
		old = sec.SIP
		*sec = deviceSecrets{SIP: map[string]string{}}
		d.State, d.WindowUntil = Revoked, time.Time{}
		return nil
	})
	if err != nil || s.deps.Extensions == nil {
		return d, err
	}
	// The passwords the phone was given stop working: each extension it
	// held gets a random one nobody knows (set it anew on the Extensions page).
	known := s.deps.Extensions.List()
	for e := range old {
		if !slices.Contains(known, e) {
			continue
		}
		pw, err := randomSecret()
		if err != nil {
			return d, err
		}
		if err := s.deps.Extensions.Set(e, pw); err != nil {
			return d, err
		}
	}
	return d, nil
}

// Delete forgets a phone (revoke it first to rotate its passwords).
func (s *Service) Delete(mac, actor, source string) error {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return &FieldError{"mac", err}
	}
	return s.deps.Store.Update(func(tx *store.Tx) error {
		var d Device
		ok, err := tx.Get(bucketDevices, mac, &d)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if d.State == Approved {
			return ErrBadState
		}
		if err := tx.Delete(bucketDevices, mac); err != nil {
			return err
		}
		if err := tx.Delete(bucketSecrets, mac); err != nil {
			return err
		}
		return s.auditTx(tx, actor, source, "phone.delete", mac, d, nil)
	})
}

// Get returns one phone.
func (s *Service) Get(mac string) (Device, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Device{}, &FieldError{"mac", err}
	}
	var d Device
	err = s.deps.Store.View(func(tx *store.Tx) error {
		ok, err := tx.Get(bucketDevices, mac, &d)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return d, err
}

// List returns every phone, by MAC.
func (s *Service) List() ([]Device, error) {
	var out []Device
	err := s.deps.Store.View(func(tx *store.Tx) error {
		return tx.ForEach(bucketDevices, func(_ string, raw []byte) error {
			var d Device
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// Enrolment is what the enrolment card shows: the one-time URL (for
// softphones and phones pointed at it by hand) while the window is open.
type Enrolment struct {
	Device Device `json:"device"`
	// URL carries the one-time token; empty once used or out of window.
	URL         string    `json:"url,omitempty"`
	WindowUntil time.Time `json:"window_until"`
}

// Enrolment returns the card data of a phone. The token URL is shown only
// while it can still be used.
func (s *Service) Enrolment(mac string) (Enrolment, error) {
	mac, err := NormalizeMAC(mac)
	if err != nil {
		return Enrolment{}, &FieldError{"mac", err}
	}
	var e Enrolment
	err = s.deps.Store.View(func(tx *store.Tx) error {
		ok, err := tx.Get(bucketDevices, mac, &e.Device)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		sec, _, err := s.getSecrets(tx, mac)
		if err != nil {
			return err
		}
		e.WindowUntil = e.Device.WindowUntil
		if e.Device.State == Approved && !e.Device.TokenUsed && s.now().Before(e.Device.WindowUntil) && sec.Token != "" {
			e.URL = s.provURL() + "t/" + sec.Token + "/" + tokenFile(e.Device)
		}
		return nil
	})
	return e, err
}

// tokenFile is the file a phone fetches under its token URL.
func tokenFile(d Device) string {
	switch d.Vendor {
	case Linphone:
		return "linphone-" + d.MAC + ".xml"
	case Grandstream:
		return "cfg" + d.MAC + ".xml"
	case Snom:
		return "snom-" + d.MAC + ".xml"
	case Cisco:
		return d.MAC + ".xml"
	case Poly:
		return "edgepbx-" + d.MAC + ".cfg"
	}
	return d.MAC + ".cfg"
}

func (s *Service) askedVendor(mac string) Vendor {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.asking[mac]; ok {
		return a.Vendor
	}
	return ""
}

// Asking returns the unknown phones that asked, newest first.
func (s *Service) Asking() []Asking {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Asking, 0, len(s.asking))
	for _, a := range s.asking {
		out = append(out, *a)
	}
	slices.SortFunc(out, func(a, b Asking) int { return b.Last.Compare(a.Last) })
	return out
}

func (s *Service) forgetAsking(mac string) {
	s.mu.Lock()
	delete(s.asking, mac)
	s.mu.Unlock()
}

// noteAsking records an unknown MAC; the list is bounded (oldest evicted)
// and a source that scans is banned long before it could fill it.
func (s *Service) noteAsking(r Request, source, ua string) {
	if r.MAC == "" {
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.asking[r.MAC]; ok {
		a.Last, a.Count, a.Source = now, a.Count+1, source
		return
	}
	if len(s.asking) >= maxAsking {
		var oldest string
		for m, a := range s.asking {
			if oldest == "" || a.Last.Before(s.asking[oldest].Last) {
				oldest = m
			}
		}
		delete(s.asking, oldest)
	}
	if len(ua) > 128 {
		ua = ua[:128]
	}
	ua = strings.ToValidUTF8(ua, "?")
	s.asking[r.MAC] = &Asking{MAC: r.MAC, Vendor: r.Vendor, Model: r.Model, UserAgent: ua, Source: source, First: now, Last: now, Count: 1}
}

// SecretsBucket holds each phone's sealed credential, token and SIP
// passwords, for backups (see ResealSecrets).
const SecretsBucket = bucketSecrets

// ResealSecrets is the store.Resealer of SecretsBucket: every value was
// written by PutSecret.
var ResealSecrets = store.SecretResealer(bucketSecrets, func(string) bool { return true })
