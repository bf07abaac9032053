package auth

import (
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Password strength levels and their minimum scores (points per character:
// digit 10, letter 26, symbol 28), compatible with the scheme common PBXs use.
const (
	LevelMedium = "medium"
	LevelHigh   = "high"

	scoreMedium = 120
	scoreHigh   = 200

	// MaxPasswordBytes bounds what we hash: long enough for passphrases,
	// short enough that a request cannot make hashing expensive by size.
	MaxPasswordBytes = 256
	// minDistinct rejects "aaaaaaaaaaaa", which scores high by points alone.
	minDistinct = 5
)

// Policy errors; callers show err.Error() to the user.
var (
	ErrPasswordEmpty       = errors.New("password is empty")
	ErrPasswordShort       = errors.New("password is too short")
	ErrPasswordLong        = errors.New("password is too long")
	ErrPasswordWeak        = errors.New("password is too weak")
	ErrPasswordUsername    = errors.New("password contains the user name")
	ErrPasswordCommon      = errors.New("password contains a commonly used password")
	ErrPasswordRepetitive  = errors.New("password repeats too few different characters")
	ErrPasswordInvalidUTF8 = errors.New("password is not valid UTF-8")
)

//go:embed common.txt
var commonText string

// commonPasswords is read-only after init.
var commonPasswords = func() []string {
	var out []string
	for _, l := range strings.Split(commonText, "\n") {
		l = strings.TrimSpace(strings.ToLower(l))
		if len(l) >= 5 && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}()

// Score is the password's strength in points.
func Score(pw string) int {
	n := 0
	for _, r := range pw {
		switch {
		case r >= '0' && r <= '9':
			n += 10
		case unicode.IsLetter(r):
			n += 26
		default:
			n += 28
		}
	}
	return n
}

func levelScore(level string) int {
	if level == LevelMedium {
		return scoreMedium
	}
	return scoreHigh
}

// CheckPassword applies the policy to a new password for username.
func CheckPassword(p Policy, username, pw string) error {
	switch {
	case pw == "":
		return ErrPasswordEmpty
	case !utf8.ValidString(pw):
		return ErrPasswordInvalidUTF8
	case len(pw) > MaxPasswordBytes:
		return fmt.Errorf("%w (at most %d bytes)", ErrPasswordLong, MaxPasswordBytes)
	case utf8.RuneCountInString(pw) < p.MinLength:
		return fmt.Errorf("%w (at least %d characters)", ErrPasswordShort, p.MinLength)
	case Score(pw) < levelScore(p.PasswordLevel):
		return fmt.Errorf("%w (score %d, need %d for %s)", ErrPasswordWeak, Score(pw), levelScore(p.PasswordLevel), p.PasswordLevel)
	}
	distinct := map[rune]bool{}
	for _, r := range pw {
		distinct[r] = true
	}
	if len(distinct) < minDistinct {
		return ErrPasswordRepetitive
	}
	lower := strings.ToLower(pw)
	if len(username) >= 3 && strings.Contains(lower, strings.ToLower(username)) {
		return ErrPasswordUsername
	}
	for _, c := range commonPasswords {
		if strings.Contains(lower, c) {
			return ErrPasswordCommon
		}
	}
	return nil
}
