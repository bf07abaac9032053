package auth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"strings"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const (
	totpPeriod    = 30
	totpSkew      = 1 // steps either side: clocks drift, phones are slow to type on
	recoveryCount = 10
	// TOTPIssuer is shown in authenticator apps.
	TOTPIssuer = "edgepbx"
)

var totpOpts = totp.ValidateOpts{Period: totpPeriod, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// Enrollment is a TOTP secret waiting for its first code.
type Enrollment struct {
	Secret string `json:"secret"`
	URL    string `json:"otpauth_url"`
	QRPNG  []byte `json:"qr_png"` // base64 in JSON
}

func totpAD(user, kind string) string { return "auth/totp/" + kind + "/" + user }

// BeginTOTP starts (or restarts) enrolment for the caller after
// re-authentication: replacing a second factor needs the current one.
func (s *Service) BeginTOTP(ctx context.Context, p Principal, c Client, pr Proof) (Enrollment, error) {
	if err := s.reauth(ctx, p, c, pr, "account.totp.begin"); err != nil {
		return Enrollment{}, err
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: TOTPIssuer, AccountName: p.Username, Period: totpPeriod,
		SecretSize: 20, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return Enrollment{}, fmt.Errorf("auth: totp key: %w", err)
	}
	img, err := key.Image(256, 256)
	if err != nil {
		return Enrollment{}, fmt.Errorf("auth: totp qr: %w", err)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return Enrollment{}, fmt.Errorf("auth: totp qr: %w", err)
	}
	sealed, err := s.db.Seal([]byte(key.Secret()), totpAD(p.Username, "pending"))
	if err != nil {
		return Enrollment{}, err
	}
	err = s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, p.Username)
		if err != nil || !ok {
			return fmt.Errorf("%w %v", ErrNotFound, err)
		}
		a.TOTPPending = sealed
		return tx.Put(bAccounts, a.Username, a)
	})
	return Enrollment{Secret: key.Secret(), URL: key.URL(), QRPNG: buf.Bytes()}, err
}

// ConfirmTOTP enables the pending secret once the user proves they have it,
// and returns recovery codes, shown once and stored hashed.
func (s *Service) ConfirmTOTP(p Principal, source, code string) ([]string, error) {
	now := s.clock.Now()
	var codes []string
	err := s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, p.Username)
		if err != nil || !ok {
			return fmt.Errorf("%w %v", ErrNotFound, err)
		}
		if a.TOTPPending == nil {
			return ErrTOTPNotPending
		}
		secret, err := s.db.Unseal(a.TOTPPending, totpAD(a.Username, "pending"))
		if err != nil {
			return err
		}
		step, ok := matchTOTP(string(secret), code, now, 0)
		if !ok {
			return ErrTOTP
		}
		if a.TOTPSealed, err = s.db.Seal(secret, totpAD(a.Username, "active")); err != nil {
			return err
		}
		a.TOTPPending, a.TOTPLastStep = nil, step
		codes, a.RecoveryHashes = newRecoveryCodes(a.Username)
		if err := tx.Put(bAccounts, a.Username, a); err != nil {
			return err
		}
		if err := clearRestriction(tx, p.SessionID, RestrictEnrollTOTP); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: p.Actor(), Source: source, Action: "account.totp.enable", Target: a.Username})
	})
	return codes, err
}

// ResetTOTP removes an account's second factor (admin action or self) after
// the caller re-authenticates.
func (s *Service) ResetTOTP(ctx context.Context, actor Principal, c Client, pr Proof, name string) error {
	if err := s.reauth(ctx, actor, c, pr, "account.totp.reset"); err != nil {
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
		a.TOTPSealed, a.TOTPPending, a.RecoveryHashes, a.TOTPLastStep = nil, nil, nil, 0
		if err := tx.Put(bAccounts, name, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: source, Action: "account.totp.reset", Target: name, Outcome: audit.Warning})
	})
}

// NewRecoveryCodes replaces the caller's recovery codes after
// re-authentication; the new ones are returned once.
func (s *Service) NewRecoveryCodes(ctx context.Context, actor Principal, c Client, pr Proof) ([]string, error) {
	if err := s.reauth(ctx, actor, c, pr, "account.recovery_codes"); err != nil {
		return nil, err
	}
	var codes []string
	err := s.db.Update(func(tx *store.Tx) error {
		a, ok, err := getAccount(tx, actor.Username)
		if err != nil || !ok {
			return errors.Join(err, ErrNotFound)
		}
		if a.TOTPSealed == nil {
			return ErrTOTPNotPending
		}
		old := len(a.RecoveryHashes)
		codes, a.RecoveryHashes = newRecoveryCodes(a.Username)
		if err := tx.Put(bAccounts, a.Username, a); err != nil {
			return err
		}
		return s.audit.RecordTx(tx, audit.Event{Actor: actor.Actor(), Source: c.String(), Action: "account.recovery_codes", Target: a.Username,
			Outcome: audit.Warning, Detail: fmt.Sprintf("recovery codes replaced (%d unused codes voided)", old)})
	})
	return codes, err
}

// matchTOTP returns the time step code belongs to, within ±totpSkew of now,
// refusing steps at or before lastStep so a code works only once.
func matchTOTP(secret, code string, now time.Time, lastStep int64) (int64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, false
	}
	cur := now.Unix() / totpPeriod
	for d := int64(-totpSkew); d <= totpSkew; d++ {
		step := cur + d
		if step <= lastStep {
			continue
		}
		want, err := totpCode(secret, time.Unix(step*totpPeriod, 0))
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return step, true
		}
	}
	return 0, false
}

// checkSecondFactor tries code as a TOTP code, then as a recovery code. It
// updates a (spent step or recovery code) and returns the method, or "".
func (s *Service) checkSecondFactor(tx *store.Tx, a *Account, code string, now time.Time) (string, error) {
	if a.TOTPSealed == nil {
		return "", nil
	}
	secret, err := s.db.Unseal(a.TOTPSealed, totpAD(a.Username, "active"))
	if err != nil {
		return "", err
	}
	if step, ok := matchTOTP(string(secret), code, now, a.TOTPLastStep); ok {
		a.TOTPLastStep = step
		return "totp", nil
	}
	h := recoveryHash(a.Username, code)
	for i, rh := range a.RecoveryHashes {
		if subtle.ConstantTimeCompare([]byte(rh), []byte(h)) == 1 {
			a.RecoveryHashes = append(a.RecoveryHashes[:i:i], a.RecoveryHashes[i+1:]...)
			_ = s.audit.RecordTx(tx, audit.Event{Actor: a.Username, Action: "account.recovery_code.used", Target: a.Username,
				Outcome: audit.Warning, Detail: fmt.Sprintf("%d recovery codes left", len(a.RecoveryHashes))})
			return "recovery code", nil
		}
	}
	return "", nil
}

var recoveryEnc = base32.StdEncoding.WithPadding(base32.NoPadding)

func newRecoveryCodes(user string) (codes, hashes []string) {
	for range recoveryCount {
		raw := strings.ToLower(recoveryEnc.EncodeToString(randomBytes(8)))[:12]
		c := raw[:4] + "-" + raw[4:8] + "-" + raw[8:12]
		codes = append(codes, c)
		hashes = append(hashes, recoveryHash(user, c))
	}
	return codes, hashes
}

// recoveryHash: recovery codes carry 60 random bits, so a fast salted hash
// suffices (unlike passwords); the user name salts it.
func recoveryHash(user, code string) string {
	c := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(code), "-", ""))
	sum := sha256.Sum256([]byte("edgepbx-recovery\x00" + user + "\x00" + c))
	return hex.EncodeToString(sum[:])
}

func totpCode(secret string, at time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, at, totpOpts)
}
