package dialplan

import (
	"errors"
	"fmt"
	"strings"
)

// MaxDigits bounds a dialled number (E.164 allows 15 digits; prefixes,
// '*' codes and extensions stay well below this).
const MaxDigits = 32

// ErrInvalidNumber is returned for dialled strings that are not numbers.
var ErrInvalidNumber = errors.New("dialplan: invalid number")

// Normalize turns a dialled string (a SIP/tel user part) into the digits
// that routing compares: visual separators ( space - . ( ) ) are removed,
// a leading '+' is kept, '*' and '#' are allowed (feature codes), anything
// else is refused. The result is never empty.
func Normalize(s string) (string, error) {
	if len(s) > 4*MaxDigits {
		return "", fmt.Errorf("%w: too long", ErrInvalidNumber)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9', c == '*', c == '#':
			b.WriteByte(c)
		case c == '+':
			if b.Len() != 0 {
				return "", fmt.Errorf("%w: '+' not at the start", ErrInvalidNumber)
			}
			b.WriteByte(c)
		case c == ' ', c == '-', c == '.', c == '(', c == ')':
		default:
			return "", fmt.Errorf("%w: character %q", ErrInvalidNumber, c)
		}
	}
	out := b.String()
	if out == "" || out == "+" {
		return "", fmt.Errorf("%w: no digits", ErrInvalidNumber)
	}
	if len(out) > MaxDigits {
		return "", fmt.Errorf("%w: more than %d digits", ErrInvalidNumber, MaxDigits)
	}
	if out[0] == '+' && strings.ContainsAny(out, "*#") {
		return "", fmt.Errorf("%w: '*' or '#' in an E.164 number", ErrInvalidNumber)
	}
	return out, nil
}

// Country holds the numbering plan facts the dial plan needs.
type Country struct {
	Code                string   // calling code without '+', e.g. "49"
	InternationalPrefix string   // e.g. "00", "011"
	NationalPrefix      string   // trunk prefix, e.g. "0", "1"
	Emergency           []string // always-allowed numbers
	// Premium lists national-format prefixes of premium-rate and
	// similar toll-fraud-prone ranges.
	Premium []string
}

// Countries are the built-in numbering plans. Emergency lists include 112
// where networks route it; Plan.Emergency adds local numbers.
var countries = map[string]Country{
	"DE": {Code: "49", InternationalPrefix: "00", NationalPrefix: "0", Emergency: []string{"112", "110"}, Premium: []string{"0900", "0137", "0138", "0190", "118"}},
	"AT": {Code: "43", InternationalPrefix: "00", NationalPrefix: "0", Emergency: []string{"112", "122", "133", "144"}, Premium: []string{"0900", "0901", "0930", "0931", "118"}},
	"CH": {Code: "41", InternationalPrefix: "00", NationalPrefix: "0", Emergency: []string{"112", "117", "118", "144"}, Premium: []string{"0900", "0901", "0906"}},
	"FR": {Code: "33", InternationalPrefix: "00", NationalPrefix: "0", Emergency: []string{"112", "15", "17", "18", "114"}, Premium: []string{"089", "0836", "118"}},
	"GB": {Code: "44", InternationalPrefix: "00", NationalPrefix: "0", Emergency: []string{"999", "112"}, Premium: []string{"09", "0871", "0872", "0873", "118"}},
	"US": {Code: "1", InternationalPrefix: "011", NationalPrefix: "1", Emergency: []string{"911"}, Premium: []string{"1900", "1976"}},
	"CA": {Code: "1", InternationalPrefix: "011", NationalPrefix: "1", Emergency: []string{"911"}, Premium: []string{"1900", "1976"}},
	"AU": {Code: "61", InternationalPrefix: "0011", NationalPrefix: "0", Emergency: []string{"000", "112"}, Premium: []string{"190"}},
}

// LookupCountry returns the built-in plan for an ISO 3166 alpha-2 code.
func LookupCountry(iso string) (Country, bool) {
	c, ok := countries[strings.ToUpper(iso)]
	if ok {
		c.Emergency = append([]string(nil), c.Emergency...)
		c.Premium = append([]string(nil), c.Premium...)
	}
	return c, ok
}

// national converts a normalised number to national format and reports
// whether it leaves the country. Numbers without '+' or the international
// prefix are national (or local) already.
func (c Country) national(n string) (nat string, international bool) {
	var rest string
	switch {
	case strings.HasPrefix(n, "+"):
		rest = n[1:]
	case c.InternationalPrefix != "" && strings.HasPrefix(n, c.InternationalPrefix):
		rest = n[len(c.InternationalPrefix):]
	default:
		return n, false
	}
	if c.Code != "" && strings.HasPrefix(rest, c.Code) {
		return c.NationalPrefix + rest[len(c.Code):], false
	}
	return "+" + rest, true
}
