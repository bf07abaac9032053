package dialplan

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxDigits bounds a normalised number (E.164 allows 15 digits; prefixes,
// feature codes and extensions stay well below this).
const MaxDigits = 32

// maxInput bounds the raw dialled string (a URI with parameters).
const maxInput = 256

// maxCodes bounds the leading feature codes of one number.
const maxCodes = 4

// ErrInvalidNumber is returned for dialled strings that are not numbers.
var ErrInvalidNumber = errors.New("dialplan: invalid number")

// ErrFeatureCode refuses a number with '*' / '#' feature codes towards a
// trunk whose route does not list them: many ITSPs and GSM gateways act
// on such codes (*31#, #31#, *67) and dial the rest, which the box must
// have classified itself.
var ErrFeatureCode = errors.New("dialplan: feature code not allowed towards a trunk")

// NumberError says why a dialled string was refused. Suspicious marks
// forms a phone does not produce by mistake (hidden or double-encoded
// characters, malformed codes, a trunk prefix behind a country code): the
// engine logs those as security events.
type NumberError struct {
	Reason     string
	Suspicious bool
}

func (e *NumberError) Error() string { return "dialplan: invalid number: " + e.Reason }

// Unwrap makes a NumberError an ErrInvalidNumber.
func (e *NumberError) Unwrap() error { return ErrInvalidNumber }

func invalid(suspicious bool, format string, a ...any) error {
	return &NumberError{Reason: fmt.Sprintf(format, a...), Suspicious: suspicious}
}

// Normalize turns a dialled string into the characters routing compares:
// digits, '*' and '#' (feature codes) and a leading '+'. It accepts what
// phones and trunks send and what people type:
//
//   - a tel:, sip: or sips: URI, or a SIP user part, with its parameters
//     (";phone-context=…", ";user=phone", "?headers") dropped; the trunk
//     is always sent the classified number, never the dialled string;
//   - percent-encoding, decoded exactly once ("%23" is '#'; a '%' left
//     after that, as from "%2523", is refused);
//   - visual separators: space, '-', '.', '(', ')' (RFC 3966), every
//     Unicode space and dash;
//   - Unicode decimal digits (full-width, Arabic-Indic, Devanagari, …)
//     and the full-width '＋', '＊', '＃', which are mapped to ASCII: the
//     result is pure ASCII, so what is classified is what a trunk gets.
//
// Letters and every other character are refused. The result is never
// empty and holds at most MaxDigits characters.
func Normalize(s string) (string, error) {
	if len(s) > maxInput {
		return "", invalid(true, "longer than %d bytes", maxInput)
	}
	u, err := userPart(s)
	if err != nil {
		return "", err
	}
	dec, err := percentDecode(u)
	if err != nil {
		return "", err
	}
	if !utf8.ValidString(dec) {
		return "", invalid(true, "not UTF-8")
	}
	var b strings.Builder
	b.Grow(len(dec))
	for _, r := range dec {
		switch {
		case r >= '0' && r <= '9', r == '*', r == '#', r == '+':
			b.WriteRune(r)
		case r == '＊':
			b.WriteByte('*')
		case r == '＃':
			b.WriteByte('#')
		case r == '＋':
			b.WriteByte('+')
		case separator(r):
		case unicode.Is(unicode.Nd, r):
			b.WriteByte('0' + digitValue(r))
		case r < utf8.RuneSelf && unicode.IsLetter(r):
			return "", invalid(false, "letter %q: a number has digits only", r)
		default:
			return "", invalid(r == '%' || r >= utf8.RuneSelf || unicode.IsControl(r), "character %q", r)
		}
		if b.Len() > MaxDigits {
			return "", invalid(false, "more than %d digits", MaxDigits)
		}
	}
	out := b.String()
	if strings.Trim(out, "+*#") == "" {
		return "", invalid(false, "no digits")
	}
	// '+' starts the number: the first character, or the first after
	// leading feature codes ("*31#+44…").
	for i := 1; i < len(out); i++ {
		if out[i] == '+' && (out[i-1] != '#' || strings.Trim(out[:i], "0123456789*#") != "" || strings.ContainsAny(out[:i], "+") ||
			(out[0] != '*' && out[0] != '#')) {
			return "", invalid(true, "'+' inside the number")
		}
	}
	if out[0] == '+' && strings.ContainsAny(out, "*#") {
		return "", invalid(true, "'*' or '#' in an E.164 number")
	}
	return out, nil
}

// userPart strips a URI down to its user part without parameters.
func userPart(s string) (string, error) {
	scheme := ""
	if i := strings.IndexByte(s, ':'); i > 0 && i <= 4 {
		switch strings.ToLower(s[:i]) {
		case "tel", "sip", "sips":
			scheme, s = strings.ToLower(s[:i]), s[i+1:]
		}
	}
	if scheme == "sip" || scheme == "sips" {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			return "", invalid(false, "%s URI without a user part", scheme)
		}
		s = s[:at]
	}
	if i := strings.IndexAny(s, ";?"); i >= 0 {
		s = s[:i]
	}
	return s, nil
}

func percentDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", invalid(true, "bad percent-encoding")
		}
		b = append(b, byte(unhex(s[i+1])<<4|unhex(s[i+2])))
		i += 2
	}
	return string(b), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// separator reports the visual separators people and phones put in numbers.
func separator(r rune) bool {
	switch r {
	case ' ', '-', '.', '(', ')', '\u2212', '．', '（', '）', '・':
		return true
	}
	return unicode.Is(unicode.Zs, r) || unicode.Is(unicode.Pd, r)
}

// digitValue is the value of a Unicode decimal digit. Unicode encodes each
// set of decimal digits as one contiguous run 0..9 and Go's Nd table
// starts every range at a zero with whole runs of ten (checked in
// TestDigitValueTable).
func digitValue(r rune) byte {
	for _, rg := range unicode.Nd.R16 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return byte((r - rune(rg.Lo)) % 10)
		}
	}
	for _, rg := range unicode.Nd.R32 {
		if r >= rune(rg.Lo) && r <= rune(rg.Hi) {
			return byte((r - rune(rg.Lo)) % 10)
		}
	}
	return 0
}

// Number is a dialled number split into its leading feature codes and the
// number proper, which is what the dial plan classifies.
type Number struct {
	Codes string // leading codes as dialled, e.g. "*31#", "#31#", "*67"; "" none
	Core  string // digits with an optional leading '+'; "" for codes alone
}

func (n Number) String() string { return n.Codes + n.Core }

// Parse normalises a dialled string and splits off its leading feature
// codes: GSM supplementary service codes (3GPP TS 22.030: "*31#", "#31#",
// "*#31#", "**21*…#") everywhere, NANP vertical service codes ("*67")
// in NANP countries. '*' and '#' anywhere else are refused.
func (c Country) Parse(dialled string) (Number, error) {
	s, err := Normalize(dialled)
	if err != nil {
		return Number{}, err
	}
	var n Number
	for k := 0; s != "" && (s[0] == '*' || s[0] == '#'); k++ {
		if k == maxCodes {
			return Number{}, invalid(true, "more than %d feature codes", maxCodes)
		}
		l := mmiCode(s)
		if l == 0 && c.NANP() {
			l = verticalCode(s)
		}
		if l == 0 {
			return Number{}, invalid(true, "malformed feature code at %q", s)
		}
		n.Codes += s[:l]
		s = s[l:]
	}
	switch {
	case strings.HasSuffix(s, "#") && !strings.ContainsAny(s[:len(s)-1], "*#"):
		return Number{}, invalid(false, "'#' after the number (a phone's send key?)")
	case strings.ContainsAny(s, "*#"):
		return Number{}, invalid(true, "'*' or '#' inside the number")
	case s == "+":
		return Number{}, invalid(false, "no digits after '+'")
	}
	n.Core = s
	return n, nil
}

// mmiCode is the length of a leading GSM MMI code: a procedure (*, #, *#,
// **, ##), a service code of digits, supplementary parts after '*', and
// the closing '#'. 0: not one.
func mmiCode(s string) int {
	i := 1
	if len(s) > 1 && (s[1] == '*' || s[1] == '#') {
		i = 2
	}
	if i >= len(s) || s[i] < '0' || s[i] > '9' {
		return 0
	}
	for ; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9', c == '*':
		case c == '#':
			return i + 1
		default:
			return 0
		}
	}
	return 0
}

// verticalCode is the length of a leading NANP vertical service code
// (*XX, ATIS-0300052). 0: not one.
func verticalCode(s string) int {
	if len(s) >= 3 && s[0] == '*' && s[1] >= '0' && s[1] <= '9' && s[2] >= '0' && s[2] <= '9' {
		return 3
	}
	return 0
}

// CallerID returns a caller number from an untrusted source (a trunk's
// From user part) if it is a plain number: digits with an optional
// leading '+', no feature codes.
func CallerID(s string) (string, bool) {
	n, err := Normalize(s)
	if err != nil || !plainNumber(n) {
		return "", false
	}
	return n, true
}

// plainNumber: digits with an optional leading '+'.
func plainNumber(s string) bool {
	s = strings.TrimPrefix(s, "+")
	if s == "" || len(s) > MaxDigits {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func digitsOnly(s string) bool { return s != "" && !strings.HasPrefix(s, "+") && plainNumber(s) }
