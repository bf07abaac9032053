package auth

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

// challengeTTL bounds how long a password-verified login may wait for its
// second factor; challengeTries bounds codes tried against one challenge.
const (
	challengeTTL   = 5 * time.Minute
	challengeTries = 3
)

// Client describes where a request comes from.
type Client struct {
	Addr      netip.Addr
	UserAgent string
}

func (c Client) String() string { return c.Addr.String() }

// LoginResult is the outcome of a successful step. Either Session is set
// (logged in) or Challenge is (send the second factor with it).
type LoginResult struct {
	Session     *NewSession `json:"-"`
	Challenge   string      `json:"challenge,omitempty"`
	NewLocation bool        `json:"new_location,omitempty"` // new network or new country
	Country     string      `json:"country,omitempty"`      // from the GeoIP database, if any
	NewCountry  bool        `json:"new_country,omitempty"`
	Restriction Restriction `json:"restriction,omitempty"`
}

type challenge struct {
	Username    string    `json:"username"`
	Network     string    `json:"network"`
	Expires     time.Time `json:"expires"`
	Tries       int       `json:"tries"`
	NewLocation bool      `json:"new_location"`
	NewNetwork  bool      `json:"new_network,omitempty"`
	Country     string    `json:"country,omitempty"`
	NewCountry  bool      `json:"new_country,omitempty"`
	// Strict: the account was locked for this network or under attack when
	// the password was checked, so the challenge was issued whatever the
	// password; PasswordOK carries its verdict to the second step.
	Strict     bool `json:"strict,omitempty"`
	PasswordOK bool `json:"password_ok,omitempty"`
}

// location is where a login comes from, compared with the account's past.
type location struct {
	network    string
	newNetwork bool
	country    string // "" without a GeoIP database or for unknown addresses
	newCountry bool
}

func (l location) isNew() bool { return l.newNetwork || l.newCountry }

// locate compares c with the networks and countries a has logged in from.
func (s *Service) locate(a Account, c Client) location {
	l := location{network: network(c.Addr), country: s.Country(c.Addr)}
	_, seen := a.Networks[l.network]
	l.newNetwork = !seen
	if l.country != "" {
		_, seen = a.Countries[l.country]
		l.newCountry = !seen
	}
	return l
}

// describe is the audit wording for a login's location.
func (l location) describe() string {
	var parts []string
	if l.newNetwork {
		parts = append(parts, "from a new network "+l.network)
	}
	if l.newCountry {
		parts = append(parts, "from a new country "+l.country)
	} else if l.country != "" {
		parts = append(parts, "country "+l.country)
	}
	return strings.Join(parts, ", ")
}

// Claimed reports whether the first admin account exists.
func (s *Service) Claimed() (bool, error) {
	if s.claimed.Load() {
		return true, nil
	}
	var c bool
	err := s.db.View(func(tx *store.Tx) error { _, err := tx.Get(bMeta, "claimed", &c); return err })
	if err != nil {
		return false, fmt.Errorf("auth: read claim state: %w", err)
	}
	if c {
		s.claimed.Store(true)
	}
	return c, nil
}

// IsClaimed reads the claim record without a Service: the licence manager,
// built before the admin side, uses it to tell a first start from a
// deleted licence state.
func IsClaimed(db *store.DB) (bool, error) {
	var c bool
	err := db.View(func(tx *store.Tx) error { _, err := tx.Get(bMeta, "claimed", &c); return err })
	if err != nil {
		return false, fmt.Errorf("auth: read claim state: %w", err)
	}
	return c, nil
}

// Claim creates the first admin account. It takes the one-time setup code
// from the console; attempts are rate-limited per source and in total, so the
// code cannot be guessed, and the code is dead once the box is claimed.
func (s *Service) Claim(ctx context.Context, c Client, code, username, password string) (LoginResult, error) {
	s.claimMu.Lock()
	defer s.claimMu.Unlock()
	if ok, err := s.Claimed(); err != nil || ok {
		return LoginResult{}, errors.Join(err, ErrAlreadyClaimed)
	}
	now := s.clock.Now()
	if !s.srcRL.allow(sourcePrefix(c.Addr).String(), now) || !s.claimRL.allow("all", now) {
		_ = s.audit.Record(audit.Event{Source: c.String(), Action: "claim", Outcome: audit.Denied, Detail: "rate limited"})
		return LoginResult{}, ErrThrottled
	}
	if !usernameRE.MatchString(username) {
		return LoginResult{}, ErrBadUsername
	}
	p, err := s.Policy()
	if err != nil {
		return LoginResult{}, err
	}
	// The password is checked before the code so a policy error tells
	// nothing about the code.
	if err := CheckPassword(p, username, password); err != nil {
		return LoginResult{}, err
	}
	if len(code) > 64 || !s.setup.CheckSetupCode(code) {
		_ = s.audit.Record(audit.Event{Source: c.String(), Action: "claim", Outcome: audit.Denied, Detail: "wrong setup code"})
		s.log.Warn("claim with wrong setup code", "source", c.String())
		return LoginResult{}, ErrBadSetupCode
	}
	h, err := s.hasher.Hash(ctx, password)
	if err != nil {
		return LoginResult{}, err
	}
	var res LoginResult
	err = s.db.Update(func(tx *store.Tx) error {
		a := Account{Username: username, Role: RoleAdmin, PasswordHash: h, PasswordChanged: now, Created: now,
			Networks: map[string]time.Time{network(c.Addr): now}}
		if cc := s.Country(c.Addr); cc != "" {
			a.Countries = map[string]time.Time{cc: now}
		}
		if err := tx.Put(bAccounts, username, a); err != nil {
			return err
		}
		if err := tx.Put(bMeta, "claimed", true); err != nil {
			return err
		}
		if err := s.audit.RecordTx(tx, audit.Event{Actor: username, Source: c.String(), Action: "claim",
			Detail: "box claimed; first admin account created", After: map[string]any{"username": username, "role": RoleAdmin}}); err != nil {
			return err
		}
		restr := RestrictNone
		if p.requiresTOTP(RoleAdmin) {
			restr = RestrictEnrollTOTP
		}
		ns, err := s.createSession(tx, a, c, p, restr, now)
		res = LoginResult{Session: &ns, Restriction: restr}
		return err
	})
	if err != nil {
		return LoginResult{}, fmt.Errorf("auth: claim: %w", err)
	}
	s.claimed.Store(true)
	s.log.Info("box claimed", "admin", username, "source", c.String())
	return res, nil
}

// dummyHash is verified for unknown users so their answer takes as long as
// a real one.
func (s *Service) dummyHash(ctx context.Context) string {
	s.dummyOnce.Do(func() {
		h, err := s.hasher.Hash(ctx, randomToken(16))
		if err == nil {
			s.dummy = h
		}
	})
	if s.dummy == "" {
		return encodeHash(s.hasher.params, make([]byte, saltLen), make([]byte, keyLen))
	}
	return s.dummy
}

// Login checks a user name and password. Unknown user, wrong password and
// locked account all return ErrInvalidCredentials after the same work.
func (s *Service) Login(ctx context.Context, c Client, username, password string) (LoginResult, error) {
	if ok, err := s.Claimed(); err != nil || !ok {
		return LoginResult{}, errors.Join(err, ErrNotClaimed)
	}
	p, err := s.Policy()
	if err != nil {
		return LoginResult{}, err
	}
	now := s.clock.Now()
	if !s.sources.attempt(c.Addr, p, now) {
		// No disk write here: a flood of throttled requests must stay cheap.
		return LoginResult{}, ErrThrottled
	}
	if len(username) > 64 || len(password) > MaxPasswordBytes {
		return LoginResult{}, s.fail(ctx, c, p, username, "oversized input")
	}
	var a Account
	var known bool
	err = s.db.View(func(tx *store.Tx) error {
		var e error
		a, known, e = getAccount(tx, username)
		return e
	})
	if err != nil {
		return LoginResult{}, err
	}
	hash := a.PasswordHash
	if !known {
		hash = s.dummyHash(ctx)
	}
	ok, rehash, err := s.hasher.Verify(ctx, password, hash)
	if errors.Is(err, ErrBusy) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return LoginResult{}, err
	}
	if !known {
		return LoginResult{}, s.fail(ctx, c, p, username, "unknown user")
	}
	pwOK := err == nil && ok
	net := lockNet(c.Addr)
	_, knownNet := a.Networks[network(c.Addr)]
	locked := a.lockedFrom(net, now)
	strict := locked || (a.underAttack(p, now) && !knownNet)
	if strict {
		why := "account locked for network " + net
		if !locked {
			why = "account under attack: login from a network it never used refused"
		}
		if a.TOTPSealed == nil {
			return LoginResult{}, s.fail(ctx, c, p, username, why)
		}
		// Both factors at once: the answer is a challenge whether or not
		// the password was right, so it cannot be guessed on its own.
		if !pwOK {
			_ = s.fail(ctx, c, p, username, "wrong password ("+why+"; second factor asked regardless)")
		}
		return s.challenge(c, username, a, s.locate(a, c), now, true, pwOK)
	}
	if !pwOK {
		return LoginResult{}, s.fail(ctx, c, p, username, "wrong password")
	}
	if rehash {
		if h, err := s.hasher.Hash(ctx, password); err == nil {
			_ = s.db.Update(func(tx *store.Tx) error {
				cur, ok, err := getAccount(tx, username)
				if err != nil || !ok || cur.PasswordHash != a.PasswordHash {
					return err
				}
				cur.PasswordHash = h
				return tx.Put(bAccounts, username, cur)
			})
		}
	}
	loc := s.locate(a, c)
	needTOTP := a.TOTPSealed != nil && (p.requiresTOTP(a.Role) || (p.StepUpNewLocation && loc.isNew()))
	if needTOTP {
		return s.challenge(c, username, a, loc, now, false, true)
	}
	return s.finishLogin(c, p, username, loc, "password")
}

// challenge stores a second-factor challenge for a password step.
func (s *Service) challenge(c Client, username string, a Account, loc location, now time.Time, strict, pwOK bool) (LoginResult, error) {
	ch := randomToken(24)
	err := s.db.Update(func(tx *store.Tx) error {
		return tx.Put(bChallenges, secretID(ch), challenge{Username: username, Network: loc.network, Expires: now.Add(challengeTTL),
			NewLocation: loc.isNew(), NewNetwork: loc.newNetwork, Country: loc.country, NewCountry: loc.newCountry,
			Strict: strict, PasswordOK: pwOK})
	})
	if err != nil {
		return LoginResult{}, err
	}
	s.history(c, username, "password-step-totp-required", loc)
	return LoginResult{Challenge: ch, NewLocation: loc.isNew(), Country: loc.country, NewCountry: loc.newCountry}, nil
}

// LoginSecondFactor completes a login with a TOTP or recovery code.
func (s *Service) LoginSecondFactor(ctx context.Context, c Client, chal, code string) (LoginResult, error) {
	p, err := s.Policy()
	if err != nil {
		return LoginResult{}, err
	}
	now := s.clock.Now()
	if !s.sources.attempt(c.Addr, p, now) {
		return LoginResult{}, ErrThrottled
	}
	if len(chal) > 64 || len(code) > 64 {
		return LoginResult{}, ErrInvalidCredentials
	}
	var ch challenge
	var method, why string
	err = s.db.Update(func(tx *store.Tx) error {
		ok, err := tx.Get(bChallenges, secretID(chal), &ch)
		if err != nil || !ok {
			return errors.Join(err, ErrInvalidCredentials)
		}
		if now.After(ch.Expires) || ch.Network != network(c.Addr) || ch.Tries >= challengeTries {
			return errors.Join(tx.Delete(bChallenges, secretID(chal)), ErrInvalidCredentials)
		}
		a, ok, err := getAccount(tx, ch.Username)
		// A lock that arrived after a normal password step ends it; a
		// strict challenge was issued for a locked network on purpose.
		if err != nil || !ok || (!ch.Strict && a.lockedFrom(lockNet(c.Addr), now)) {
			return errors.Join(err, tx.Delete(bChallenges, secretID(chal)), ErrInvalidCredentials)
		}
		method, err = s.checkSecondFactor(tx, &a, code, now)
		if err != nil {
			return err
		}
		if method == "" {
			why = "wrong second factor"
			ch.Tries++
			return tx.Put(bChallenges, secretID(chal), ch)
		}
		if ch.Strict && !ch.PasswordOK {
			// The code was right but the password was not: the code is
			// spent and the challenge dies, and the answer is the same as
			// for a wrong code.
			method, why = "", "right second factor with a wrong password (both asked at once)"
			if err := tx.Put(bAccounts, a.Username, a); err != nil {
				return err
			}
			return tx.Delete(bChallenges, secretID(chal))
		}
		if err := tx.Put(bAccounts, a.Username, a); err != nil {
			return err
		}
		return tx.Delete(bChallenges, secretID(chal))
	})
	if err != nil {
		return LoginResult{}, err
	}
	if method == "" {
		return LoginResult{}, s.fail(ctx, c, p, ch.Username, why)
	}
	// The location as judged when the password was checked: the GeoIP
	// database may have changed since.
	loc := location{network: ch.Network, newNetwork: ch.NewNetwork || (ch.NewLocation && !ch.NewCountry),
		country: ch.Country, newCountry: ch.NewCountry}
	return s.finishLogin(c, p, ch.Username, loc, method)
}

func (s *Service) finishLogin(c Client, p Policy, username string, loc location, method string) (LoginResult, error) {
	now := s.clock.Now()
	var res LoginResult
	err := s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, username)
		if err != nil || !ok {
			return errors.Join(err, ErrInvalidCredentials)
		}
		a.clearLock(lockNet(c.Addr))
		if a.Networks == nil {
			a.Networks = map[string]time.Time{}
		}
		a.Networks[network(c.Addr)] = now
		pruneNetworks(a.Networks)
		if loc.country != "" {
			if a.Countries == nil {
				a.Countries = map[string]time.Time{}
			}
			a.Countries[loc.country] = now
			pruneNetworks(a.Countries)
		}
		if err := tx.Put(bAccounts, username, a); err != nil {
			return err
		}
		restr := RestrictNone
		switch {
		case p.requiresTOTP(a.Role) && a.TOTPSealed == nil:
			restr = RestrictEnrollTOTP
		case p.MaxAgeDays > 0 && now.Sub(a.PasswordChanged) > time.Duration(p.MaxAgeDays)*24*time.Hour:
			restr = RestrictChangePassword
		}
		ns, err := s.createSession(tx, a, c, p, restr, now)
		if err != nil {
			return err
		}
		res = LoginResult{Session: &ns, NewLocation: loc.isNew(), Country: loc.country, NewCountry: loc.newCountry, Restriction: restr}
		detail := "login via " + method
		if d := loc.describe(); d != "" {
			detail += " " + d
		}
		outcome := audit.OK
		if loc.isNew() && a.TOTPSealed == nil {
			outcome, detail = audit.Warning, detail+" (no second factor enrolled)"
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: username, Source: c.String(), Action: "auth.login", Outcome: outcome, Detail: detail})
	})
	if err != nil {
		return LoginResult{}, err
	}
	s.sources.succeed(c.Addr)
	s.history(c, username, "ok", loc)
	return res, nil
}

// pruneNetworks keeps a known-network or known-country list bounded (most recent 64).
func pruneNetworks(m map[string]time.Time) {
	for len(m) > 64 {
		var oldest string
		for k, t := range m {
			if oldest == "" || t.Before(m[oldest]) {
				oldest = k
			}
		}
		delete(m, oldest)
	}
}

// fail counts a failed attempt against the account and the source, locks
// the account at the threshold, bans sprayers, and returns the one answer.
func (s *Service) fail(ctx context.Context, c Client, p Policy, username, why string) error {
	now := s.clock.Now()
	if len(username) > 64 {
		username = username[:64]
	}
	_ = s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, username)
		if err != nil || !ok {
			return err
		}
		net := lockNet(c.Addr)
		wasAttack := a.underAttack(p, now)
		if a.recordFailure(net, p, now) {
			until := a.Locks[net].LockedUntil
			s.log.Warn("account locked for a source network", "account", username, "network", net, "source", c.String(), "until", until)
			if err := s.audit.RecordTx(tx, audit.Event{Actor: "-", Source: c.String(), Action: "auth.lockout", Target: username,
				Outcome: audit.Warning, Detail: fmt.Sprintf("network %s locked out after %d failed attempts until %s; other networks unaffected",
					net, p.LockoutThreshold, until.UTC().Format(time.RFC3339))}); err != nil {
				return err
			}
		}
		if !wasAttack && a.underAttack(p, now) {
			s.log.Warn("account under attack: failures from many networks", "account", username, "failures", len(a.Failed))
			if err := s.audit.RecordTx(tx, audit.Event{Actor: "-", Source: c.String(), Action: "auth.under_attack", Target: username,
				Outcome: audit.Warning, Detail: fmt.Sprintf("%d failed logins within %s from any networks: new networks need both factors at once, or are refused without a second factor", AttackFailures, secs(p.LockoutSeconds))}); err != nil {
				return err
			}
		}
		return tx.Put(bAccounts, username, a)
	})
	_ = s.audit.Record(audit.Event{Source: c.String(), Action: "auth.login", Target: username, Outcome: audit.Denied, Detail: why})
	s.history(c, username, "failed", location{country: s.Country(c.Addr)})
	if s.attacks != nil {
		s.attacks(AdminAttack{Source: c.Addr, User: username, Reason: why})
	}
	if pfx, ban := s.sources.fail(c.Addr, username, p, now); ban && pfx.IsValid() {
		s.log.Warn("source sprays many accounts; banning", "prefix", pfx)
		detail := "no firewall connected"
		if s.banner != nil {
			err := s.banner.Ban(ctx, fwspec.Ban{Prefix: pfx, Timeout: secs(p.BanSeconds), Reason: "admin-login-spray"})
			detail = "banned at the firewall"
			if err != nil {
				detail = "ban failed: " + err.Error()
			}
		}
		_ = s.audit.Record(audit.Event{Source: c.String(), Action: "auth.ban", Target: pfx.String(), Outcome: audit.Warning,
			Detail: fmt.Sprintf("failed logins on %d accounts: %s", p.SprayAccounts, detail)})
		if s.attacks != nil {
			s.attacks(AdminAttack{Ban: true, Source: c.Addr, Prefix: pfx, Reason: "admin-login-spray"})
		}
	}
	return ErrInvalidCredentials
}
