package auth

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// Policy is the account security policy, stored in auth.policy and edited by
// admins. Durations are whole seconds so the JSON API stays plain.
type Policy struct {
	PasswordLevel      string `json:"password_level"`        // medium | high
	MinLength          int    `json:"min_length"`            // characters, ≥ 12
	MaxAgeDays         int    `json:"max_age_days"`          // 0 = passwords never expire
	LockoutThreshold   int    `json:"lockout_threshold"`     // failed attempts before lock
	LockoutSeconds     int64  `json:"lockout_seconds"`       //
	IdleSeconds        int64  `json:"idle_seconds"`          // session idle timeout
	AbsoluteSeconds    int64  `json:"absolute_seconds"`      // session absolute lifetime
	TokenDays          int    `json:"token_days"`            // default API token lifetime
	HistoryDays        int    `json:"history_days"`          // login history retention
	TOTPRoles          []Role `json:"totp_roles"`            // roles that must use 2FA on every login
	StepUpNewLocation  bool   `json:"step_up_new_location"`  // new /24 or /48 requires the second factor
	SourceMaxFailures  int    `json:"source_max_failures"`   // failures per source per window before throttling
	SprayAccounts      int    `json:"spray_accounts"`        // distinct accounts failed from one source before a ban
	SourceWindowSecs   int64  `json:"source_window_seconds"` //
	BanSeconds         int64  `json:"ban_seconds"`           //
	ClaimPerMinute     int    `json:"-"`                     // fixed: claim attempts per minute, all sources together
	ClaimPerSourceHour int    `json:"-"`                     // fixed: claim attempts per source per hour
}

// DefaultPolicy is the secure default.
func DefaultPolicy() Policy {
	return Policy{
		PasswordLevel: LevelHigh, MinLength: 12, LockoutThreshold: 3, LockoutSeconds: 3600,
		IdleSeconds: 3600, AbsoluteSeconds: 12 * 3600, TokenDays: 30, HistoryDays: 14,
		TOTPRoles: []Role{}, StepUpNewLocation: true, SourceMaxFailures: 10, SprayAccounts: 5,
		SourceWindowSecs: 600, BanSeconds: 3600, ClaimPerMinute: 10, ClaimPerSourceHour: 20,
	}
}

// MinIdleSeconds is the shortest idle timeout: short enough for a kiosk
// or a test, and still three LastSeen refreshes long.
const MinIdleSeconds = 15

// ErrPolicy wraps every policy validation error.
var ErrPolicy = errors.New("invalid policy")

// Validate checks bounds; a bad policy is refused and changes nothing.
func (p Policy) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrPolicy}, a...)...) }
	switch {
	case p.PasswordLevel != LevelMedium && p.PasswordLevel != LevelHigh:
		return bad("password_level must be %q or %q", LevelMedium, LevelHigh)
	case p.MinLength < 12 || p.MinLength > 128:
		return bad("min_length must be 12..128")
	case p.MaxAgeDays < 0 || p.MaxAgeDays > 3650:
		return bad("max_age_days must be 0..3650")
	case p.LockoutThreshold < 1 || p.LockoutThreshold > 20:
		return bad("lockout_threshold must be 1..20")
	case p.LockoutSeconds < 60 || p.LockoutSeconds > 7*86400:
		return bad("lockout_seconds must be 60..604800")
	case p.IdleSeconds < MinIdleSeconds || p.IdleSeconds > 86400:
		return bad("idle_seconds must be %d..86400", MinIdleSeconds)
	case p.AbsoluteSeconds < p.IdleSeconds || p.AbsoluteSeconds > 30*86400:
		return bad("absolute_seconds must be idle_seconds..2592000")
	case p.TokenDays < 1 || p.TokenDays > 365:
		return bad("token_days must be 1..365")
	case p.HistoryDays < 1 || p.HistoryDays > 365:
		return bad("history_days must be 1..365")
	case p.SourceMaxFailures < 3 || p.SourceMaxFailures > 1000:
		return bad("source_max_failures must be 3..1000")
	case p.SprayAccounts < 2 || p.SprayAccounts > 1000:
		return bad("spray_accounts must be 2..1000")
	case p.SourceWindowSecs < 60 || p.SourceWindowSecs > 86400:
		return bad("source_window_seconds must be 60..86400")
	case p.BanSeconds < 60 || p.BanSeconds > 30*86400:
		return bad("ban_seconds must be 60..2592000")
	}
	for _, r := range p.TOTPRoles {
		if !r.Valid() {
			return bad("unknown role %q in totp_roles", r)
		}
	}
	return nil
}

func (p Policy) requiresTOTP(r Role) bool { return slices.Contains(p.TOTPRoles, r) }

func secs(n int64) time.Duration { return time.Duration(n) * time.Second }
