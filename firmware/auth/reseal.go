package auth

import (
	"encoding/json"
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// AccountsBucket holds the accounts, whose TOTP seeds are sealed.
const AccountsBucket = bAccounts

// ResealAccount is the store.Resealer of AccountsBucket: the active and the
// pending TOTP seed.
func ResealAccount(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	var a Account
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, fmt.Errorf("auth: decode account %s: %w", key, err)
	}
	if a.Username != key {
		return nil, fmt.Errorf("auth: account stored under %q names %q", key, a.Username)
	}
	var err error
	if a.TOTPSealed != nil {
		if a.TOTPSealed, err = f(a.TOTPSealed, totpAD(a.Username, "active")); err != nil {
			return nil, err
		}
	}
	if a.TOTPPending != nil {
		if a.TOTPPending, err = f(a.TOTPPending, totpAD(a.Username, "pending")); err != nil {
			return nil, err
		}
	}
	return json.Marshal(a)
}
