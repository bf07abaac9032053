// Package sdes parses and formats SDP security descriptions (a=crypto,
// RFC 4568) for SRTP. Values come from untrusted SDP: every field is bounded
// and anything we would not use safely is rejected. Keys never appear in
// String or log output.
package sdes

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/pion/srtp/v3"
)

// MaxLineBytes bounds one a=crypto value; real ones are under 200 bytes.
const MaxLineBytes = 512

// Suite is an SRTP crypto suite name as used in a=crypto.
type Suite string

// The suites we accept (RFC 4568, RFC 6188, RFC 7714). NULL and unencrypted
// variants are deliberately absent.
const (
	AES128CMSHA1_80 Suite = "AES_CM_128_HMAC_SHA1_80"
	AES128CMSHA1_32 Suite = "AES_CM_128_HMAC_SHA1_32"
	AES256CMSHA1_80 Suite = "AES_256_CM_HMAC_SHA1_80"
	AES256CMSHA1_32 Suite = "AES_256_CM_HMAC_SHA1_32"
	AEADAES128GCM   Suite = "AEAD_AES_128_GCM"
	AEADAES256GCM   Suite = "AEAD_AES_256_GCM"
)

// Suites lists the accepted suites, strongest-and-most-compatible first: the
// order we offer them in.
var suites = []Suite{AES128CMSHA1_80, AEADAES128GCM, AES256CMSHA1_80, AEADAES256GCM, AES128CMSHA1_32, AES256CMSHA1_32}

// Suites returns the accepted suites in offer order.
func Suites() []Suite { return append([]Suite(nil), suites...) }

// Profile maps a suite to pion's SRTP protection profile.
func (s Suite) Profile() (srtp.ProtectionProfile, error) {
	switch s {
	case AES128CMSHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case AES128CMSHA1_32:
		return srtp.ProtectionProfileAes128CmHmacSha1_32, nil
	case AES256CMSHA1_80:
		return srtp.ProtectionProfileAes256CmHmacSha1_80, nil
	case AES256CMSHA1_32:
		return srtp.ProtectionProfileAes256CmHmacSha1_32, nil
	case AEADAES128GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	case AEADAES256GCM:
		return srtp.ProtectionProfileAeadAes256Gcm, nil
	}
	return 0, fmt.Errorf("%w: %.40q", ErrSuite, string(s))
}

// Errors returned by Parse; all wrap ErrCrypto.
var (
	ErrCrypto  = errors.New("sdes: invalid a=crypto")
	ErrSuite   = fmt.Errorf("%w: unsupported crypto suite", ErrCrypto)
	ErrKey     = fmt.Errorf("%w: bad key parameter", ErrCrypto)
	ErrSession = fmt.Errorf("%w: unsupported session parameter", ErrCrypto)
)

// Crypto is one a=crypto attribute value.
type Crypto struct {
	Tag   int
	Suite Suite
	Key   []byte // master key
	Salt  []byte // master salt
	// Lifetime is the optional key lifetime in packets (0: not given).
	Lifetime uint64
}

// Parse parses an a=crypto value (without "a=crypto:"), for example
// "1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20".
// Only one inline key is accepted: several keys need MKIs, which we do not
// negotiate. Session parameters that weaken protection are refused.
func Parse(v string) (Crypto, error) {
	var c Crypto
	if len(v) > MaxLineBytes {
		return c, fmt.Errorf("%w: %d bytes", ErrCrypto, len(v))
	}
	f := strings.Fields(v)
	if len(f) < 3 {
		return c, fmt.Errorf("%w: need tag, suite and key parameters", ErrCrypto)
	}
	tag, err := strconv.Atoi(f[0])
	// RFC 4568: tag is 1*9DIGIT.
	if err != nil || tag < 0 || len(f[0]) > 9 || f[0][0] == '+' || f[0][0] == '-' {
		return c, fmt.Errorf("%w: bad tag", ErrCrypto)
	}
	c.Tag = tag
	c.Suite = Suite(f[1])
	p, err := c.Suite.Profile()
	if err != nil {
		return Crypto{}, err
	}
	keyLen, _ := p.KeyLen()
	saltLen, _ := p.SaltLen()
	if strings.Contains(f[2], ";") {
		return Crypto{}, fmt.Errorf("%w: more than one key", ErrKey)
	}
	kp, ok := strings.CutPrefix(f[2], "inline:")
	if !ok {
		return Crypto{}, fmt.Errorf("%w: key method must be inline", ErrKey)
	}
	parts := strings.Split(kp, "|")
	if len(parts) > 3 {
		return Crypto{}, fmt.Errorf("%w: too many fields", ErrKey)
	}
	raw, err := decodeKey(parts[0])
	if err != nil || len(raw) != keyLen+saltLen {
		return Crypto{}, fmt.Errorf("%w: key||salt must be %d bytes of base64", ErrKey, keyLen+saltLen)
	}
	c.Key, c.Salt = raw[:keyLen:keyLen], raw[keyLen:]
	for _, p := range parts[1:] {
		if strings.Contains(p, ":") {
			// MKI:length. We never send with an MKI and a peer using one
			// would put bytes in packets that we cannot map to a key.
			return Crypto{}, fmt.Errorf("%w: MKI not supported", ErrKey)
		}
		lt, err := parseLifetime(p)
		if err != nil {
			return Crypto{}, err
		}
		c.Lifetime = lt
	}
	for _, s := range f[3:] {
		if err := checkSessionParam(s); err != nil {
			return Crypto{}, err
		}
	}
	return c, nil
}

func decodeKey(s string) ([]byte, error) {
	if len(s) > 128 {
		return nil, ErrKey
	}
	// Some phones omit the padding; both are the same key.
	s = strings.TrimRight(s, "=")
	return base64.RawStdEncoding.Strict().DecodeString(s)
}

// parseLifetime accepts "2^N" (N ≤ 48, RFC 3711's limit for SRTP) or a
// decimal number of packets.
func parseLifetime(s string) (uint64, error) {
	if e, ok := strings.CutPrefix(s, "2^"); ok {
		n, err := strconv.ParseUint(e, 10, 8)
		if err != nil || n > 48 || len(e) > 2 {
			return 0, fmt.Errorf("%w: bad lifetime", ErrKey)
		}
		return 1 << n, nil
	}
	if len(s) == 0 || len(s) > 15 {
		return 0, fmt.Errorf("%w: bad lifetime", ErrKey)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || n > 1<<48 {
		return 0, fmt.Errorf("%w: bad lifetime", ErrKey)
	}
	return n, nil
}

// checkSessionParam refuses parameters that switch protection off or that
// pion cannot honour (KDR other than 0, FEC order, window sizes are ignored).
func checkSessionParam(s string) error {
	switch {
	case s == "UNENCRYPTED_SRTP", s == "UNENCRYPTED_SRTCP", s == "UNAUTHENTICATED_SRTP":
		return fmt.Errorf("%w: %s", ErrSession, s)
	case strings.HasPrefix(s, "KDR="):
		if s != "KDR=0" {
			return fmt.Errorf("%w: key derivation rate", ErrSession)
		}
	case strings.HasPrefix(s, "WSH="), strings.HasPrefix(s, "FEC_ORDER="), strings.HasPrefix(s, "FEC_KEY="):
		// Harmless hints; our replay window is fixed.
	case strings.HasPrefix(s, "-"):
		// RFC 4568 §6.3: unknown parameters prefixed "-" may be ignored.
	default:
		return fmt.Errorf("%w: %.32q", ErrSession, s)
	}
	return nil
}

// New makes a crypto attribute with a fresh random key for suite.
func New(tag int, suite Suite) (Crypto, error) {
	p, err := suite.Profile()
	if err != nil {
		return Crypto{}, err
	}
	kl, _ := p.KeyLen()
	sl, _ := p.SaltLen()
	b := make([]byte, kl+sl)
	if _, err := rand.Read(b); err != nil {
		return Crypto{}, fmt.Errorf("sdes: random key: %w", err)
	}
	return Crypto{Tag: tag, Suite: suite, Key: b[:kl:kl], Salt: b[kl:]}, nil
}

// Marshal returns the wire value for SDP (it contains the key: never log it).
func (c Crypto) Marshal() string {
	kb := append(append([]byte{}, c.Key...), c.Salt...)
	s := fmt.Sprintf("%d %s inline:%s", c.Tag, c.Suite, base64.StdEncoding.EncodeToString(kb))
	if c.Lifetime != 0 {
		s += "|" + strconv.FormatUint(c.Lifetime, 10)
	}
	return s
}

// String is redacted so a stray %v never leaks a key.
func (c Crypto) String() string { return fmt.Sprintf("%d %s inline:[redacted]", c.Tag, c.Suite) }

// LogValue keeps keys out of slog output.
func (c Crypto) LogValue() slog.Value {
	return slog.GroupValue(slog.Int("tag", c.Tag), slog.String("suite", string(c.Suite)))
}

// Select picks the first offered attribute whose suite is in allowed (in the
// offerer's order, as RFC 4568 §7.1 asks) and skips unparsable ones.
func Select(offered []string, allowed []Suite) (Crypto, bool) {
	for _, v := range offered {
		c, err := Parse(v)
		if err != nil {
			continue
		}
		for _, a := range allowed {
			if c.Suite == a {
				return c, true
			}
		}
	}
	return Crypto{}, false
}
