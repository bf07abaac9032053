package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// Proof re-authenticates the caller of a sensitive change (password, second
// factor, API token, role or account creation): a stolen session alone must
// not be enough to take the account over. Code is the current TOTP or a
// recovery code, required when the caller's account has a second factor.
type Proof struct {
	Password string `json:"current_password"`
	Code     string `json:"current_code,omitempty"`
}

// ErrReauth answers a failed re-authentication; it says not which part was
// wrong.
var ErrReauth = errors.New("current password or second-factor code is wrong")

// reauth checks proof for actor's own account with the login's throttle and
// lockout: a failure counts against the account from the caller's network
// exactly like a failed login, and a failure that locks that network also
// ends the session it came from (a thief's session dies after three
// guesses). It returns nil when the proof holds.
func (s *Service) reauth(ctx context.Context, actor Principal, c Client, pr Proof, action string) error {
	p, err := s.Policy()
	if err != nil {
		return err
	}
	now := s.clock.Now()
	if !s.sources.attempt(c.Addr, p, now) {
		return ErrThrottled
	}
	if len(pr.Password) > MaxPasswordBytes || len(pr.Code) > 64 {
		return s.reauthFail(ctx, actor, c, p, action, "oversized input")
	}
	var a Account
	err = s.db.View(func(tx *store.Tx) error {
		var ok bool
		var err error
		a, ok, err = getAccount(tx, actor.Username)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return err
	}
	ok, _, err := s.hasher.Verify(ctx, pr.Password, a.PasswordHash)
	if errors.Is(err, ErrBusy) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	switch {
	case a.lockedFrom(lockNet(c.Addr), now) && a.TOTPSealed == nil:
		// As at the login: a locked network still lets a TOTP holder
		// through with both factors, and nobody else.
		return s.reauthFail(ctx, actor, c, p, action, "account locked for this network")
	case err != nil || !ok:
		return s.reauthFail(ctx, actor, c, p, action, "wrong current password")
	}
	if a.TOTPSealed != nil {
		var method string
		err := s.db.Update(func(tx *store.Tx) error {
			cur, ok, err := getAccount(tx, actor.Username)
			if err != nil || !ok {
				return errors.Join(err, ErrNotFound)
			}
			if method, err = s.checkSecondFactor(tx, &cur, pr.Code, now); err != nil || method == "" {
				return err
			}
			return tx.Put(bAccounts, cur.Username, cur) // the code is spent
		})
		if err != nil {
			return err
		}
		if method == "" {
			return s.reauthFail(ctx, actor, c, p, action, "wrong or missing second factor")
		}
	}
	s.sources.succeed(c.Addr)
	return nil
}

// reauthFail counts the failure like a failed login, audits it with the
// actor, and revokes the session it came from once its network is locked.
func (s *Service) reauthFail(ctx context.Context, actor Principal, c Client, p Policy, action, why string) error {
	_ = s.fail(ctx, c, p, actor.Username, "re-authentication for "+action+": "+why)
	_ = s.audit.Record(audit.Event{Actor: actor.Actor(), Source: c.String(), Action: action, Target: actor.Username,
		Outcome: audit.Denied, Detail: "re-authentication failed: " + why})
	var locked bool
	_ = s.db.View(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, actor.Username)
		locked = err == nil && ok && a.lockedFrom(lockNet(c.Addr), s.clock.Now())
		return err
	})
	if locked && actor.SessionID != "" {
		err := s.db.Update(func(tx *store.Tx) error {
			if err := tx.Delete(bSessions, actor.SessionID); err != nil {
				return err
			}
			return s.audit.RecordTx(tx, audit.Event{Actor: "-", Source: c.String(), Action: "auth.session.revoke", Target: actor.Username,
				Outcome: audit.Warning, Detail: "session ended: its network is locked out after failed re-authentication"})
		})
		if err != nil {
			s.log.Error("revoke session after failed re-authentication", "err", err)
		}
	}
	return ErrReauth
}

// Recover clears an account's lockout with the one-time setup code PID 1
// shows on the console, for an admin locked out by strangers' failures. It
// is rate-limited like claiming, needs a claimed box, audited either way,
// and trusts the caller's network for the account from now on (a login
// from it is not refused while the account is under attack).
func (s *Service) Recover(ctx context.Context, c Client, code, username string) error {
	if ok, err := s.Claimed(); err != nil || !ok {
		return errors.Join(err, ErrNotClaimed)
	}
	now := s.clock.Now()
	if !s.srcRL.allow(sourcePrefix(c.Addr).String(), now) || !s.claimRL.allow("all", now) {
		_ = s.audit.Record(audit.Event{Actor: "console-code", Source: c.String(), Action: "account.recover", Target: trim64(username),
			Outcome: audit.Denied, Detail: "rate limited"})
		return ErrThrottled
	}
	if len(code) > 64 || !s.setup.CheckSetupCode(code) {
		_ = s.audit.Record(audit.Event{Actor: "console-code", Source: c.String(), Action: "account.recover", Target: trim64(username),
			Outcome: audit.Denied, Detail: "wrong setup code"})
		s.log.Warn("account recovery with a wrong setup code", "source", c.String())
		return ErrBadSetupCode
	}
	err := s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, username)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		locked, _ := a.lockedNetworks(now)
		a.Locks, a.Failed = nil, nil
		if a.Networks == nil {
			a.Networks = map[string]time.Time{}
		}
		a.Networks[network(c.Addr)] = now
		pruneNetworks(a.Networks)
		if err := tx.Put(bAccounts, username, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: "console-code", Source: c.String(), Action: "account.recover", Target: username,
			Outcome: audit.Warning, Before: map[string]any{"locked_networks": locked},
			Detail: fmt.Sprintf("lockout cleared with the console setup code; network %s trusted for this account", network(c.Addr))})
	})
	if err != nil {
		return err
	}
	// The source's own throttle is not refunded: whoever holds the console
	// code can clear locks, not guess faster.
	s.log.Warn("account lockout cleared with the console setup code", "account", username, "source", c.String())
	return nil
}

func trim64(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// Reauth checks a Proof for a sensitive action of another package (backup
// restore, backup key): the same throttle, lockout and audit as the
// account changes here. action names it in the audit log.
func (s *Service) Reauth(ctx context.Context, actor Principal, c Client, pr Proof, action string) error {
	return s.reauth(ctx, actor, c, pr, action)
}
