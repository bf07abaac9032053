package voicemail

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// PIN length bounds. Six digits is the floor the policy asks for; twelve
// bounds what a caller types (and what is hashed).
const (
	MinPINLen = 6
	MaxPINLen = 12
)

// ErrWeakPIN wraps every PIN the policy refuses.
var ErrWeakPIN = errors.New("voicemail: PIN refused")

// CheckPIN applies the PIN policy for the mailbox of ext: 6-12 digits,
// not one digit repeated, not a repeated group (121212, 123123, 112233),
// not a run up or down (123456, 987654, 890123), and not containing the
// extension number forwards or backwards.
func CheckPIN(pin, ext string) error {
	if len(pin) < MinPINLen || len(pin) > MaxPINLen {
		return fmt.Errorf("%w: %d to %d digits", ErrWeakPIN, MinPINLen, MaxPINLen)
	}
	for i := 0; i < len(pin); i++ {
		if pin[i] < '0' || pin[i] > '9' {
			return fmt.Errorf("%w: digits only", ErrWeakPIN)
		}
	}
	for p := 1; p <= len(pin)/2; p++ {
		if periodic(pin, p) {
			return fmt.Errorf("%w: a repeated digit or group", ErrWeakPIN)
		}
	}
	if pairs(pin) {
		return fmt.Errorf("%w: repeated digits", ErrWeakPIN)
	}
	for _, step := range []int{1, 9} { // up, down (mod 10)
		if run(pin, step) {
			return fmt.Errorf("%w: a sequence", ErrWeakPIN)
		}
	}
	if len(ext) >= 2 && (strings.Contains(pin, ext) || strings.Contains(pin, reverse(ext))) {
		return fmt.Errorf("%w: contains the extension number", ErrWeakPIN)
	}
	return nil
}

// periodic reports whether pin repeats its first p digits throughout.
func periodic(pin string, p int) bool {
	for i := p; i < len(pin); i++ {
		if pin[i] != pin[i-p] {
			return false
		}
	}
	return true
}

// pairs reports digits that come in equal pairs (112233) or triples.
func pairs(pin string) bool {
	for _, n := range []int{2, 3} {
		if len(pin)%n != 0 {
			continue
		}
		same := true
		for i := 0; i < len(pin) && same; i += n {
			for j := 1; j < n; j++ {
				same = same && pin[i+j] == pin[i]
			}
		}
		if same {
			return true
		}
	}
	return false
}

// run reports whether every digit is the previous plus step (mod 10).
func run(pin string, step int) bool {
	for i := 1; i < len(pin); i++ {
		if int(pin[i]-'0') != (int(pin[i-1]-'0')+step)%10 {
			return false
		}
	}
	return true
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// GeneratePIN makes a random PIN of n digits (MinPINLen if n is smaller)
// that passes the policy for ext: what an admin is shown once.
func GeneratePIN(ext string, n int) (string, error) {
	n = max(n, MinPINLen)
	n = min(n, MaxPINLen)
	for range 100 {
		b := make([]byte, n)
		for i := range b {
			d, err := rand.Int(rand.Reader, big.NewInt(10))
			if err != nil {
				return "", err
			}
			b[i] = byte('0' + d.Int64())
		}
		if CheckPIN(string(b), ext) == nil {
			return string(b), nil
		}
	}
	return "", errors.New("voicemail: no acceptable PIN found") // 100 misses: not with a working RNG
}
