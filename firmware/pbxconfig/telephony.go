package pbxconfig

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TelephonyBucket holds the stored telephony configuration: the current
// version under "current" and each registering trunk's password sealed
// under "trunk/<name>/password".
const TelephonyBucket = "config.telephony"

const telephonyKey = "current"

// Bounds on the configuration's lists (the admin body is bounded too, but
// the store must not depend on that).
const (
	maxTrunks     = 64
	maxRoutes     = 1024
	maxDIDs       = 4096
	maxExtensions = 4096
	maxNumbers    = 256
)

// Errors of the telephony configuration. ErrTelephony wraps every
// validation failure; ErrVersion a save against a stale version.
var (
	ErrTelephony = errors.New("telephony configuration invalid")
	ErrVersion   = errors.New("telephony configuration changed meanwhile")
)

// Trunk authentication modes.
const (
	TrunkAuthIP       = "ip"       // the ITSP is recognised by its source addresses
	TrunkAuthRegister = "register" // the box registers to the ITSP with digest
)

// Telephony is the dial plan as the admin edits it: numbering facts,
// classes of service per extension, trunks, outbound routes and inbound
// DIDs. Extensions not listed get DefaultClasses and default limits.
// Emergency numbers are never part of what can be blocked: the country's
// list always applies and Emergency only adds to it.
type Telephony struct {
	// Version counts saved changes; a save must name the version it edits.
	Version int64 `json:"version"`

	Country         string           `json:"country"` // ISO 3166 alpha-2
	Emergency       []string         `json:"emergency"`
	EmergencyTrunk  string           `json:"emergency_trunk"`
	PremiumPrefixes []string         `json:"premium_prefixes"`
	DefaultClasses  []dialplan.Class `json:"default_classes"`

	Extensions []dialplan.Extension `json:"extensions"`
	Trunks     []TelephonyTrunk     `json:"trunks"`
	Routes     []dialplan.Route     `json:"routes"`
	DIDs       []dialplan.DID       `json:"dids"`
	// CallerIDs maps an extension to the number it presents on calls out
	// through any trunk (digits, optional leading +); it takes precedence
	// over the trunk's CallerID.
	CallerIDs map[string]string `json:"caller_ids,omitempty"`
	// UnsolicitedMWI lists the extensions whose phones get message-waiting
	// NOTIFYs without subscribing (phones and ATAs that never subscribe).
	UnsolicitedMWI []string `json:"unsolicited_mwi,omitempty"`

	BurstAttempts int           `json:"burst_attempts"`
	BurstWindow   time.Duration `json:"burst_window"`

	// Features: feature-code table, ring groups, pickup groups
	// (firmware/features). Ring group numbers are dial-plan destinations
	// like extensions (DIDs may name them).
	Features features.Config `json:"features"`
	// IVR: auto-attendant menus and time conditions (firmware/ivr). Their
	// numbers are dial-plan and DID destinations like extensions.
	IVR ivr.Config `json:"ivr"`
}

// TelephonyTrunk is an ITSP: where calls go (Host), how it is
// authenticated, and its limits.
type TelephonyTrunk struct {
	Name      string `json:"name"`
	Host      string `json:"host"`      // host:port of the ITSP
	Transport string `json:"transport"` // udp, tcp, tls
	Auth      string `json:"auth"`      // ip or register
	// Peers are the ITSP's source prefixes (IP authentication).
	Peers []netip.Prefix `json:"peers"`
	// Registration credentials. Password is write-only: it is sealed in
	// the store, never kept in this struct once saved, never returned;
	// PasswordSet says one is stored.
	Username    string          `json:"username,omitempty"`
	Domain      string          `json:"domain,omitempty"`
	Password    string          `json:"password,omitempty"`
	PasswordSet bool            `json:"password_set,omitempty"`
	Limits      dialplan.Limits `json:"limits"`
	// SRTP is the media encryption policy towards the ITSP: "optional"
	// (also ""), "required" or "off".
	SRTP string `json:"srtp,omitempty"`
	// CallerID is the number presented on calls out over the trunk
	// (digits, optional leading +; empty: the extension's own).
	CallerID string `json:"caller_id,omitempty"`
	// AssertIdentity trusts the ITSP with P-Asserted-Identity (RFC 3325):
	// calls out carry the caller's number there, with Privacy: id when
	// the caller asked to be anonymous. Off: no PAI leaves the box.
	AssertIdentity bool `json:"assert_identity,omitempty"`
}

// DefaultTelephony is the secure default: Germany's numbering facts (the
// daemon's former built-in), no trunks, classes internal and national only
// (international and premium blocked).
func DefaultTelephony() Telephony {
	return Telephony{Country: "DE", DefaultClasses: dialplan.DefaultClasses()}
}

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrTelephony, fmt.Sprintf(format, a...))
}

// Validate reports the first problem with t. known says whether a SIP
// extension exists (for DID targets); nil: only the extensions listed in t
// count.
func (t Telephony) Validate(known func(string) bool) error {
	c, ok := dialplan.LookupCountry(t.Country)
	if !ok || len(t.Country) != 2 {
		return bad("country %q: want an ISO 3166 code such as DE, AT, CH, FR, GB, US, CA, AU", t.Country)
	}
	switch {
	case len(t.Trunks) > maxTrunks:
		return bad("more than %d trunks", maxTrunks)
	case len(t.Routes) > maxRoutes:
		return bad("more than %d routes", maxRoutes)
	case len(t.DIDs) > maxDIDs:
		return bad("more than %d DIDs", maxDIDs)
	case len(t.Extensions) > maxExtensions:
		return bad("more than %d extension settings", maxExtensions)
	case len(t.Emergency) > maxNumbers || len(t.PremiumPrefixes) > maxNumbers:
		return bad("more than %d emergency numbers or premium prefixes", maxNumbers)
	}
	if len(t.DefaultClasses) == 0 {
		return bad("default_classes empty: list at least %q", dialplan.Internal)
	}
	for _, cl := range t.DefaultClasses {
		if !validClass(cl) {
			return bad("default class %q: want internal, national, international or premium", cl)
		}
	}
	names := map[string]bool{}
	for _, tr := range t.Trunks {
		if err := tr.validate(); err != nil {
			return err
		}
		if names[tr.Name] {
			return bad("trunk %q listed twice", tr.Name)
		}
		names[tr.Name] = true
	}
	if len(t.CallerIDs) > maxExtensions {
		return bad("more than %d caller IDs", maxExtensions)
	}
	for ext, n := range t.CallerIDs {
		if !digits(ext) || !digits(strings.TrimPrefix(n, "+")) {
			return bad("caller ID %q for extension %q: digits, optionally with a leading +", n, ext)
		}
	}
	if len(t.UnsolicitedMWI) > maxExtensions {
		return bad("more than %d extensions with unsolicited MWI", maxExtensions)
	}
	for i, ext := range t.UnsolicitedMWI {
		if !digits(ext) || slices.Contains(t.UnsolicitedMWI[:i], ext) {
			return bad("unsolicited MWI extension %q: digits, listed once", ext)
		}
	}
	for _, r := range t.Routes {
		if r.Prefix != "" && r.Prefix != "+" && !digits(r.Prefix) {
			return bad("route prefix %q: digits only, \"+\" or empty (default route)", r.Prefix)
		}
	}
	for _, p := range t.PremiumPrefixes {
		if !digits(p) {
			return bad("premium prefix %q: digits only", p)
		}
	}
	for _, n := range t.Emergency {
		if !digits(n) {
			return bad("emergency number %q: digits only", n)
		}
	}
	listed := map[string]bool{}
	for _, x := range t.Extensions {
		listed[x.Number] = true
	}
	isExt := func(n string) bool { return listed[n] || known != nil && known(n) }
	if err := t.Features.Validate(isExt); err != nil {
		return fmt.Errorf("%w: %w", ErrTelephony, err)
	}
	groups := map[string]bool{}
	for _, g := range t.Features.Groups {
		groups[g.Number] = true
	}
	if err := t.validateIVR(c, isExt, groups); err != nil {
		return err
	}
	for _, n := range t.IVR.Numbers() {
		groups[n] = true // DID destinations like ring groups
	}
	slots := t.Features.Park.Slots()
	for _, s := range slots {
		if groups[s] {
			return bad("park slot %s is already a menu or time condition", s)
		}
	}
	for _, d := range t.DIDs {
		if !listed[d.Extension] && !groups[d.Extension] && (known == nil || !known(d.Extension)) {
			return bad("DID %s: unknown extension %q", d.Number, d.Extension)
		}
	}
	// Emergency numbers must stay reachable whatever else is configured.
	emergency := append(slices.Clone(c.Emergency), t.Emergency...)
	for _, n := range emergency {
		if listed[n] {
			return bad("extension %s is an emergency number", n)
		}
		if groups[n] {
			return bad("ring group %s is an emergency number", n)
		}
		if slices.Contains(slots, n) {
			return bad("park slot %s is an emergency number", n)
		}
		for _, p := range t.PremiumPrefixes {
			if strings.HasPrefix(n, p) {
				return bad("premium prefix %s would block emergency number %s", p, n)
			}
		}
		if len(t.Trunks) > 0 && t.EmergencyTrunk == "" && !routed(t.Routes, n) {
			return bad("emergency number %s has no route: set emergency_trunk or a route covering it", n)
		}
	}
	// The rest (classes, limits, route trunks, strip/add, DID numbers) is
	// the dial plan's own validation over every extension named here.
	exts := slices.Clone(t.Extensions)
	for _, d := range t.DIDs {
		if !listed[d.Extension] {
			listed[d.Extension] = true
			exts = append(exts, dialplan.Extension{Number: d.Extension})
		}
	}
	p := t.plan(exts)
	if err := p.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrTelephony, err)
	}
	return nil
}

func (tr TelephonyTrunk) validate() error {
	if tr.Name == "" || len(tr.Name) > 32 || strings.ContainsFunc(tr.Name, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_'))
	}) {
		return bad("trunk name %q: 1-32 letters, digits, - or _", tr.Name)
	}
	host, port, err := net.SplitHostPort(tr.Host)
	if err != nil || host == "" || len(host) > 253 || strings.ContainsAny(host, " \t\r\n;@<>\"/") {
		return bad("trunk %s: host %q: want host:port", tr.Name, tr.Host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return bad("trunk %s: port %q: want 1-65535", tr.Name, port)
	}
	switch tr.Transport {
	case "udp", "tcp", "tls":
	default:
		return bad("trunk %s: transport %q: want udp, tcp or tls", tr.Name, tr.Transport)
	}
	switch tr.SRTP {
	case "", "optional", "required", "off":
	default:
		return bad("trunk %s: srtp %q: want optional, required or off", tr.Name, tr.SRTP)
	}
	if tr.CallerID != "" && !digits(strings.TrimPrefix(tr.CallerID, "+")) {
		return bad("trunk %s: caller ID %q: digits, optionally with a leading +", tr.Name, tr.CallerID)
	}
	for _, p := range tr.Peers {
		if !p.IsValid() {
			return bad("trunk %s: invalid peer prefix", tr.Name)
		}
	}
	switch tr.Auth {
	case TrunkAuthIP:
		if len(tr.Peers) == 0 {
			return bad("trunk %s: IP authentication needs at least one peer prefix", tr.Name)
		}
		if tr.Username != "" || tr.Password != "" {
			return bad("trunk %s: IP authentication takes no username or password", tr.Name)
		}
	case TrunkAuthRegister:
		if tr.Username == "" || tr.Domain == "" || len(tr.Username) > 128 || len(tr.Domain) > 253 ||
			strings.ContainsAny(tr.Username+tr.Domain, " \t\r\n:;@<>\"") {
			return bad("trunk %s: registration needs a username and a domain (no spaces, quotes, ':' ';' '@')", tr.Name)
		}
		if len(tr.Password) > 128 || strings.ContainsFunc(tr.Password, unicode.IsControl) {
			return bad("trunk %s: password: at most 128 characters, no control characters", tr.Name)
		}
		if tr.Password == "" && !tr.PasswordSet {
			return bad("trunk %s: registration needs a password", tr.Name)
		}
	default:
		return bad("trunk %s: auth %q: want ip or register", tr.Name, tr.Auth)
	}
	return nil
}

func validClass(c dialplan.Class) bool {
	switch c {
	case dialplan.Internal, dialplan.National, dialplan.International, dialplan.Premium:
		return true
	}
	return false
}

func digits(s string) bool {
	if s == "" || len(s) > dialplan.MaxDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// routed reports whether a route covers the national number n.
func routed(routes []dialplan.Route, n string) bool {
	for _, r := range routes {
		if strings.HasPrefix(n, r.Prefix) && r.Prefix != "+" {
			return true
		}
	}
	return false
}

func (t Telephony) plan(exts []dialplan.Extension) dialplan.Plan {
	p := dialplan.Plan{Country: strings.ToUpper(t.Country), Emergency: t.Emergency, EmergencyTrunk: t.EmergencyTrunk,
		PremiumPrefixes: t.PremiumPrefixes, Extensions: exts, Routes: t.Routes, DIDs: t.DIDs,
		BurstAttempts: t.BurstAttempts, BurstWindow: t.BurstWindow}
	for _, tr := range t.Trunks {
		p.Trunks = append(p.Trunks, dialplan.Trunk{Name: tr.Name, Limits: tr.Limits})
	}
	return p
}

// Plan is the dial plan over the SIP extensions that exist (numbers): each
// gets its configured classes and limits, or DefaultClasses. Settings and
// DIDs for extensions that do not exist (deleted since) are left out.
func (t Telephony) Plan(numbers []string) dialplan.Plan {
	set := map[string]dialplan.Extension{}
	for _, x := range t.Extensions {
		set[x.Number] = x
	}
	var exts []dialplan.Extension
	have := map[string]bool{}
	ivrNums := t.IVR.Numbers()
	for _, n := range numbers {
		x, ok := set[n]
		if !ok {
			x = dialplan.Extension{Number: n, Classes: slices.Clone(t.DefaultClasses)}
		}
		if x.Classes == nil {
			x.Classes = slices.Clone(t.DefaultClasses)
		}
		if !ok && slices.Contains(ivrNums, n) {
			// A menu or time condition answers many callers at once
			// (a DID's calls count here); the trunks' limits and the
			// B2BUA's bound still apply.
			x.Limits.MaxConcurrent = ivrConcurrent
		}
		exts = append(exts, x)
		have[n] = true
	}
	p := t.plan(exts)
	p.DIDs = slices.DeleteFunc(slices.Clone(p.DIDs), func(d dialplan.DID) bool { return !have[d.Extension] })
	return p
}

// Trunk returns the named trunk.
func (t Telephony) Trunk(name string) (TelephonyTrunk, bool) {
	for _, tr := range t.Trunks {
		if tr.Name == name {
			return tr, true
		}
	}
	return TelephonyTrunk{}, false
}

// clone copies t deeply enough that callers cannot change the stored value.
func (t Telephony) clone() Telephony {
	t.Emergency = slices.Clone(t.Emergency)
	t.PremiumPrefixes = slices.Clone(t.PremiumPrefixes)
	t.DefaultClasses = slices.Clone(t.DefaultClasses)
	t.Extensions = slices.Clone(t.Extensions)
	for i := range t.Extensions {
		t.Extensions[i].Classes = slices.Clone(t.Extensions[i].Classes)
	}
	t.Trunks = slices.Clone(t.Trunks)
	for i := range t.Trunks {
		t.Trunks[i].Peers = slices.Clone(t.Trunks[i].Peers)
	}
	t.Routes = slices.Clone(t.Routes)
	t.DIDs = slices.Clone(t.DIDs)
	t.Features = t.Features.Clone()
	t.IVR = t.IVR.Clone()
	t.UnsolicitedMWI = slices.Clone(t.UnsolicitedMWI)
	return t
}

// TelephonyStore keeps the telephony configuration in the store and the
// current version in memory; readers (the dial plan) see a change as soon
// as Save returns. It is safe for concurrent use.
type TelephonyStore struct {
	db *store.DB

	mu  sync.RWMutex
	cur Telephony
}

// LoadTelephony reads the stored configuration, or the defaults (version
// 0) when none was saved yet.
func LoadTelephony(db *store.DB) (*TelephonyStore, error) {
	s := &TelephonyStore{db: db, cur: DefaultTelephony()}
	err := db.View(func(tx *store.Tx) error {
		_, err := tx.Get(TelephonyBucket, telephonyKey, &s.cur)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("config: load telephony: %w", err)
	}
	// Not re-validated here: DID targets are checked against the SIP
	// extensions, which the caller has; the dial plan refuses to build
	// from a value that no longer holds.
	return s, nil
}

// Current returns a copy of the configuration in force.
func (s *TelephonyStore) Current() Telephony {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.clone()
}

// Version is the version in force (cheap; the dial plan polls it per call).
func (s *TelephonyStore) Version() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cur.Version
}

func passwordKey(trunk string) string { return "trunk/" + trunk + "/password" }

// Save validates next and stores it as version next.Version+1 in one
// transaction: a registering trunk's new password is sealed (an empty one
// keeps the stored password of the trunk with that name), passwords of
// trunks that no longer register are erased. next.Version must be the
// version in force (ErrVersion otherwise). On any error nothing changes,
// in the store or in memory. It returns the saved configuration (no
// passwords).
func (s *TelephonyStore) Save(next Telephony, known func(string) bool) (Telephony, error) {
	return s.SaveWith(next, known, nil)
}

// SaveWith is Save with also run inside the same write transaction, given
// the configuration as saved (the caller's audit entry): both commit, or
// neither does.
func (s *TelephonyStore) SaveWith(next Telephony, known func(string) bool, also func(tx *store.Tx, saved Telephony) error) (Telephony, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if next.Version != s.cur.Version {
		return Telephony{}, fmt.Errorf("%w: you edited version %d, version %d is in force: reload and edit again", ErrVersion, next.Version, s.cur.Version)
	}
	next = next.clone()
	next.Country = strings.ToUpper(next.Country)
	old := map[string]TelephonyTrunk{}
	for _, tr := range s.cur.Trunks {
		old[tr.Name] = tr
	}
	for i := range next.Trunks {
		tr := &next.Trunks[i]
		// A stored password counts only for the same trunk still registering.
		o, ok := old[tr.Name]
		tr.PasswordSet = ok && o.Auth == TrunkAuthRegister && o.PasswordSet && tr.Auth == TrunkAuthRegister
	}
	if err := next.Validate(known); err != nil {
		return Telephony{}, err
	}
	secrets := map[string]string{}
	for i := range next.Trunks {
		tr := &next.Trunks[i]
		if tr.Password != "" {
			secrets[tr.Name] = tr.Password
			tr.Password, tr.PasswordSet = "", true
		}
	}
	next.Version = s.cur.Version + 1
	err := s.db.Update(func(tx *store.Tx) error {
		for name, pw := range secrets {
			if err := tx.PutSecret(TelephonyBucket, passwordKey(name), []byte(pw)); err != nil {
				return err
			}
		}
		for name := range old {
			if tr, ok := next.Trunk(name); !ok || !tr.PasswordSet {
				if err := tx.Delete(TelephonyBucket, passwordKey(name)); err != nil {
					return err
				}
			}
		}
		if err := tx.Put(TelephonyBucket, telephonyKey, next); err != nil {
			return err
		}
		if also != nil {
			return also(tx, next.clone())
		}
		return nil
	})
	if err != nil {
		return Telephony{}, fmt.Errorf("config: save telephony: %w", err)
	}
	s.cur = next
	return next.clone(), nil
}

// TrunkPassword unseals a registering trunk's password (for the SIP edge's
// outbound REGISTER).
func (s *TelephonyStore) TrunkPassword(name string) ([]byte, error) {
	var pw []byte
	err := s.db.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		pw, ok, err = tx.GetSecret(TelephonyBucket, passwordKey(name))
		if err == nil && !ok {
			err = fmt.Errorf("config: trunk %s: no password stored", name)
		}
		return err
	})
	return pw, err
}

// ResealTelephony is the store.Resealer of TelephonyBucket: the trunk
// passwords stored with PutSecret.
func ResealTelephony(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	return store.SecretResealer(TelephonyBucket, func(key string) bool {
		return strings.HasPrefix(key, "trunk/") && strings.HasSuffix(key, "/password")
	})(key, raw, f)
}
