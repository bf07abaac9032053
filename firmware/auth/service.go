// Package auth owns the admin accounts and everything that proves who a
// request is: claiming, password policy and argon2id hashes, lockout and
// per-source throttling, TOTP and recovery codes, sessions, API tokens, login
// history and roles. Buckets: auth.accounts, auth.sessions, auth.tokens,
// auth.challenges, auth.history, auth.meta, auth.geoip.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

const (
	bAccounts   = "auth.accounts"
	bSessions   = "auth.sessions"
	bTokens     = "auth.tokens"
	bChallenges = "auth.challenges"
	bHistory    = "auth.history"
	bMeta       = "auth.meta"
)

// Clock gives the current time; tests inject a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Banner cuts a source off at the firewall (PID 1's netfw through the
// control socket). Used for sources that spray many accounts.
type Banner interface {
	Ban(ctx context.Context, b fwspec.Ban) error
}

// SetupCodeChecker checks the one-time setup code PID 1 shows on the console.
type SetupCodeChecker interface {
	CheckSetupCode(code string) bool
}

// Errors callers map to answers. ErrInvalidCredentials is the one answer
// for an unknown user, a wrong password, a wrong code and a locked account.
var (
	ErrInvalidCredentials = errors.New("invalid user name or password")
	ErrThrottled          = errors.New("too many failed attempts from this address; try again later")
	ErrNotClaimed         = errors.New("the box is not claimed yet")
	ErrAlreadyClaimed     = errors.New("the box is already claimed")
	ErrBadSetupCode       = errors.New("wrong setup code")
	ErrBadUsername        = errors.New("user name must be 1-32 characters: a-z 0-9 . _ -, starting with a letter")
	ErrBadRole            = errors.New("unknown role")
	ErrNotFound           = errors.New("not found")
	ErrExists             = errors.New("already exists")
	ErrNoSession          = errors.New("not logged in or session expired")
	ErrLastAdmin          = errors.New("the last admin account cannot be removed or demoted")
	ErrTOTP               = errors.New("wrong or reused code")
	ErrTOTPNotPending     = errors.New("no two-factor enrolment in progress")
	// ErrWrongCurrentPassword answers a logged-in user; it reveals nothing new.
	ErrWrongCurrentPassword = errors.New("current password is wrong")
)

var usernameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,31}$`)

// Account is one admin-interface user.
type Account struct {
	Username        string    `json:"username"`
	Role            Role      `json:"role"`
	PasswordHash    string    `json:"password_hash"`
	PasswordChanged time.Time `json:"password_changed"`
	Created         time.Time `json:"created"`
	// Locks are the failed logins per source network (lockNet); Failed the
	// recent failures from all networks (see lockout.go).
	Locks          map[string]NetLock   `json:"locks,omitempty"`
	Failed         []time.Time          `json:"failed,omitempty"`
	TOTPSealed     []byte               `json:"totp_sealed,omitempty"`    // enabled secret, sealed
	TOTPPending    []byte               `json:"totp_pending,omitempty"`   // enrolment in progress, sealed
	TOTPLastStep   int64                `json:"totp_last_step,omitempty"` // codes at or before this step are spent
	RecoveryHashes []string             `json:"recovery_hashes,omitempty"`
	Networks       map[string]time.Time `json:"networks,omitempty"`  // /24 or /48 → last successful login
	Countries      map[string]time.Time `json:"countries,omitempty"` // GeoIP country → last successful login
}

// AccountInfo is what the UI and API show about an account.
type AccountInfo struct {
	Username        string    `json:"username"`
	Role            Role      `json:"role"`
	Created         time.Time `json:"created"`
	PasswordChanged time.Time `json:"password_changed"`
	TOTP            bool      `json:"totp"`
	Locked          bool      `json:"locked"`
	LockedUntil     time.Time `json:"locked_until,omitzero"`
	LockedNetworks  []string  `json:"locked_networks,omitempty"` // source networks locked out now
	UnderAttack     bool      `json:"under_attack,omitempty"`    // AttackFailures failures recently, from any networks
	RecoveryLeft    int       `json:"recovery_codes_left"`
	KnownNetworks   int       `json:"known_networks"`
}

func (a Account) info(p Policy, now time.Time) AccountInfo {
	i := AccountInfo{Username: a.Username, Role: a.Role, Created: a.Created, PasswordChanged: a.PasswordChanged,
		TOTP: a.TOTPSealed != nil, RecoveryLeft: len(a.RecoveryHashes), KnownNetworks: len(a.Networks)}
	i.LockedNetworks, i.LockedUntil = a.lockedNetworks(now)
	i.Locked = len(i.LockedNetworks) > 0
	i.UnderAttack = a.underAttack(p, now)
	return i
}

// Config holds the service's dependencies.
type Config struct {
	DB        *store.DB
	Clock     Clock
	Audit     *audit.Log
	Hasher    *Hasher // nil: DefaultParams, DefaultConcurrency, DefaultQueue
	Banner    Banner  // nil: sprays are only logged
	SetupCode SetupCodeChecker
	Logger    *slog.Logger
	// Attacks receives failed admin logins and sprayer bans for the
	// security log (intrusion report, remote syslog); nil: audit only.
	// It runs on the login path and must return at once.
	Attacks func(AdminAttack)
}

// AdminAttack is a failed admin login (Ban false) or a source banned for
// trying many accounts (Ban true, Prefix set).
type AdminAttack struct {
	Ban    bool
	Source netip.Addr
	Prefix netip.Prefix
	User   string
	Reason string
}

// Service is the auth API.
type Service struct {
	db      *store.DB
	clock   Clock
	audit   *audit.Log
	hasher  *Hasher
	banner  Banner
	setup   SetupCodeChecker
	log     *slog.Logger
	attacks func(AdminAttack)
	claimMu sync.Mutex
	claimed atomic.Bool
	claimRL *limiter
	srcRL   *limiter
	sources *sourceGuard

	dummyOnce sync.Once
	dummy     string

	geoMu     sync.Mutex // serialises GeoIP replacements
	geoImport sync.Mutex // one upload parsed at a time (TryLock)
	geo       atomic.Pointer[GeoDB]
}

// New returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Clock == nil || cfg.Audit == nil || cfg.SetupCode == nil {
		return nil, errors.New("auth: DB, Clock, Audit and SetupCode are required")
	}
	s := &Service{db: cfg.DB, clock: cfg.Clock, audit: cfg.Audit, hasher: cfg.Hasher, banner: cfg.Banner,
		setup: cfg.SetupCode, log: cfg.Logger, attacks: cfg.Attacks}
	if s.hasher == nil {
		s.hasher = NewHasher(DefaultParams, DefaultConcurrency, DefaultQueue)
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	p := DefaultPolicy()
	s.claimRL = newLimiter(p.ClaimPerMinute, time.Minute, 1)
	s.srcRL = newLimiter(p.ClaimPerSourceHour, time.Hour, 4096)
	s.sources = newSourceGuard(4096)
	if _, err := s.Claimed(); err != nil {
		return nil, err
	}
	if err := s.loadGeoIP(); err != nil {
		s.log.Error("GeoIP database unusable; logins use networks only until a new upload", "err", err)
	}
	return s, nil
}

// Hasher returns the service's password hasher (benchmarks, status page).
func (s *Service) Hasher() *Hasher { return s.hasher }

// Policy returns the current policy.
func (s *Service) Policy() (Policy, error) {
	var p Policy
	err := s.db.View(func(tx *store.Tx) error { var e error; p, e = policyTx(tx); return e })
	return p, err
}

func policyTx(tx *store.Tx) (Policy, error) {
	p := DefaultPolicy()
	if _, err := tx.Get(bMeta, "policy", &p); err != nil {
		return p, err
	}
	d := DefaultPolicy()
	p.ClaimPerMinute, p.ClaimPerSourceHour = d.ClaimPerMinute, d.ClaimPerSourceHour
	if p.TOTPRoles == nil {
		p.TOTPRoles = []Role{}
	}
	return p, nil
}

// SetPolicy validates and stores p, auditing before and after.
func (s *Service) SetPolicy(actor Principal, source string, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	return s.db.Update(func(tx *store.Tx) error {
		old, err := policyTx(tx)
		if err != nil {
			return err
		}
		if err := tx.Put(bMeta, "policy", p); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "security.policy.update", Before: old, After: p})
	})
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("auth: crypto/rand failed: " + err.Error()) // the kernel's RNG does not fail on Linux ≥ 3.17
	}
	return b
}

func randomToken(n int) string { return base64.RawURLEncoding.EncodeToString(randomBytes(n)) }

// SetupCode is the setup code PID 1 handed to edgepbxd at boot. It compares
// in constant time and ignores case, spaces and dashes, as typed from the
// console. An empty code matches nothing.
type SetupCode string

// CheckSetupCode implements SetupCodeChecker.
func (c SetupCode) CheckSetupCode(code string) bool {
	norm := func(s string) string {
		return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s))
	}
	want, got := norm(string(c)), norm(code)
	if want == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// secretID is how session and token secrets are stored: only their hash,
// so a copy of the database does not yield a usable cookie or token.
func secretID(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:16])
}

// network is the account's "location" for step-up: the /24 or /48.
func network(a netip.Addr) string {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return "invalid"
	}
	return p.String()
}

func getAccount(tx *store.Tx, name string) (Account, bool, error) {
	var a Account
	ok, err := tx.Get(bAccounts, name, &a)
	return a, ok, err
}

// Account returns one account's public view.
func (s *Service) Account(name string) (AccountInfo, error) {
	var info AccountInfo
	err := s.db.View(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		p, err := policyTx(tx)
		if err != nil {
			return err
		}
		info = a.info(p, s.clock.Now())
		return nil
	})
	return info, err
}

// Accounts lists every account.
func (s *Service) Accounts() ([]AccountInfo, error) {
	var out []AccountInfo
	now := s.clock.Now()
	err := s.db.View(func(tx *store.Tx) error {
		p, err := policyTx(tx)
		if err != nil {
			return err
		}
		return tx.ForEach(bAccounts, func(_ string, raw []byte) error {
			var a Account
			if err := jsonUnmarshal(raw, &a); err != nil {
				return err
			}
			out = append(out, a.info(p, now))
			return nil
		})
	})
	return out, err
}

func countAdmins(tx *store.Tx) (int, error) {
	n := 0
	err := tx.ForEach(bAccounts, func(_ string, raw []byte) error {
		var a Account
		if err := jsonUnmarshal(raw, &a); err != nil {
			return err
		}
		if a.Role == RoleAdmin {
			n++
		}
		return nil
	})
	return n, err
}

// CreateAccount adds an account with a password that satisfies the policy;
// the caller re-authenticates (a new admin account is a role grant).
func (s *Service) CreateAccount(ctx context.Context, actor Principal, c Client, pr Proof, name string, role Role, password string) error {
	source := c.String()
	if !usernameRE.MatchString(name) {
		return ErrBadUsername
	}
	if !role.Valid() {
		return ErrBadRole
	}
	p, err := s.Policy()
	if err != nil {
		return err
	}
	if err := CheckPassword(p, name, password); err != nil {
		return err
	}
	if err := s.reauth(ctx, actor, c, pr, "account.create"); err != nil {
		return err
	}
	h, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return err
	}
	now := s.clock.Now()
	return s.db.Update(func(tx *store.Tx) error {
		if _, ok, err := getAccount(tx, name); err != nil || ok {
			return errors.Join(err, fmt.Errorf("account %q: %w", name, ErrExists))
		}
		a := Account{Username: name, Role: role, PasswordHash: h, PasswordChanged: now, Created: now}
		if err := tx.Put(bAccounts, name, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.create", Target: name,
			After: map[string]any{"username": name, "role": role}})
	})
}

// SetRole changes an account's role after the caller re-authenticates; the
// last admin cannot be demoted.
func (s *Service) SetRole(ctx context.Context, actor Principal, c Client, pr Proof, name string, role Role) error {
	if !role.Valid() {
		return ErrBadRole
	}
	if err := s.reauth(ctx, actor, c, pr, "account.role"); err != nil {
		return err
	}
	source := c.String()
	return s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if a.Role == RoleAdmin && role != RoleAdmin {
			if n, err := countAdmins(tx); err != nil || n <= 1 {
				return errors.Join(err, ErrLastAdmin)
			}
		}
		before := a.Role
		a.Role = role
		if err := tx.Put(bAccounts, name, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.role", Target: name,
			Before: map[string]any{"role": before}, After: map[string]any{"role": role}})
	})
}

// DeleteAccount removes an account with its sessions and tokens.
func (s *Service) DeleteAccount(actor Principal, source, name string) error {
	return s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		if a.Role == RoleAdmin {
			if n, err := countAdmins(tx); err != nil || n <= 1 {
				return errors.Join(err, ErrLastAdmin)
			}
		}
		if err := tx.Delete(bAccounts, name); err != nil {
			return err
		}
		if err := deleteOwned(tx, name); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.delete", Target: name,
			Before: map[string]any{"username": name, "role": a.Role}})
	})
}

// Unlock clears an account's lockout.
func (s *Service) Unlock(actor Principal, source, name string) error {
	return s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, name)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		locked, _ := a.lockedNetworks(s.clock.Now())
		a.Locks, a.Failed = nil, nil
		if err := tx.Put(bAccounts, name, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.unlock", Target: name,
			Before: map[string]any{"locked_networks": locked}})
	})
}

// ChangePassword sets a user's own password after re-authentication (the
// current password, and the second factor where one is set, with the
// login's lockout); every other session of the user is revoked.
func (s *Service) ChangePassword(ctx context.Context, actor Principal, c Client, pr Proof, next string) error {
	source := c.String()
	p, err := s.Policy()
	if err != nil {
		return err
	}
	if err := CheckPassword(p, actor.Username, next); err != nil {
		return err
	}
	if pr.Password == next {
		return fmt.Errorf("%w (must differ from the current one)", ErrPasswordWeak)
	}
	if err := s.reauth(ctx, actor, c, pr, "account.password"); err != nil {
		return err
	}
	h, err := s.hasher.Hash(ctx, next)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, actor.Username)
		if err != nil || !ok {
			return errors.Join(err, ErrNotFound)
		}
		a.PasswordHash, a.PasswordChanged = h, s.clock.Now()
		if err := tx.Put(bAccounts, a.Username, a); err != nil {
			return err
		}
		if err := revokeSessionsExcept(tx, a.Username, actor.SessionID); err != nil {
			return err
		}
		if err := clearRestriction(tx, actor.SessionID, RestrictChangePassword); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.password", Target: a.Username,
			Detail: "password changed; other sessions revoked"})
	})
}
