package sdes

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// From RFC 4568 §6: 30 bytes of key||salt.
const rfcKey = "PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		suite   Suite
		keyLen  int
		life    uint64
		wantErr error
	}{
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20", AES128CMSHA1_80, 16, 1 << 20, nil},
		{"2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey, AES128CMSHA1_32, 16, 0, nil},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + strings.TrimRight(rfcKey, "=") + " KDR=0 -X", AES128CMSHA1_80, 16, 0, nil},
		{"3 AEAD_AES_128_GCM inline:" + b64(28), AEADAES128GCM, 16, 0, nil},
		{"4 AEAD_AES_256_GCM inline:" + b64(44), AEADAES256GCM, 32, 0, nil},
		{"5 AES_256_CM_HMAC_SHA1_80 inline:" + b64(46) + "|1000", AES256CMSHA1_80, 32, 1000, nil},
		{"6 AES_256_CM_HMAC_SHA1_32 inline:" + b64(46), AES256CMSHA1_32, 32, 0, nil},
		{"1 F8_128_HMAC_SHA1_80 inline:" + rfcKey, "", 0, 0, ErrSuite},
		{"1 NULL_HMAC_SHA1_80 inline:" + rfcKey, "", 0, 0, ErrSuite},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + b64(29), "", 0, 0, ErrKey},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4", "", 0, 0, ErrKey},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^60", "", 0, 0, ErrKey},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + ";inline:" + rfcKey, "", 0, 0, ErrKey},
		{"1 AES_CM_128_HMAC_SHA1_80 uri:" + rfcKey, "", 0, 0, ErrKey},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " UNENCRYPTED_SRTP", "", 0, 0, ErrSession},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + " KDR=24", "", 0, 0, ErrSession},
		{"-1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey, "", 0, 0, ErrCrypto},
		{"1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey, "", 0, 0, ErrCrypto},
		{"1 AES_CM_128_HMAC_SHA1_80", "", 0, 0, ErrCrypto},
		{"1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", "", 0, 0, ErrKey},
		{strings.Repeat("1", MaxLineBytes+1), "", 0, 0, ErrCrypto},
	}
	for _, tc := range tests {
		t.Run(tc.in[:min(len(tc.in), 40)], func(t *testing.T) {
			c, err := Parse(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Suite != tc.suite || len(c.Key) != tc.keyLen || c.Lifetime != tc.life {
				t.Fatalf("got %v key %d life %d", c, len(c.Key), c.Lifetime)
			}
		})
	}
}

func b64(n int) string {
	c := Crypto{Tag: 1, Suite: AES128CMSHA1_80, Key: bytes.Repeat([]byte{7}, n)}
	s := c.Marshal()
	return s[strings.Index(s, "inline:")+len("inline:"):]
}

func TestRoundTripAndRedaction(t *testing.T) {
	for _, s := range Suites() {
		c, err := New(9, s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(c.Marshal())
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if !bytes.Equal(got.Key, c.Key) || !bytes.Equal(got.Salt, c.Salt) || got.Tag != 9 {
			t.Fatalf("%s: round trip changed the key", s)
		}
		key := c.Marshal()[strings.Index(c.Marshal(), "inline:")+7:]
		var buf bytes.Buffer
		slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "crypto", c)
		for _, out := range []string{c.String(), fmt.Sprint(c), fmt.Sprintf("%+v", c), buf.String()} {
			if strings.Contains(out, key[:10]) {
				t.Fatalf("key leaked in %q", out)
			}
		}
	}
}

func TestSelect(t *testing.T) {
	offer := []string{"1 F8_128_HMAC_SHA1_80 inline:" + rfcKey, "2 AES_CM_128_HMAC_SHA1_32 inline:" + rfcKey, "3 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey}
	c, ok := Select(offer, []Suite{AES128CMSHA1_80, AES128CMSHA1_32})
	if !ok || c.Tag != 2 {
		t.Fatalf("got %v %v, want tag 2 (offerer order)", c, ok)
	}
	if _, ok := Select(offer, []Suite{AEADAES128GCM}); ok {
		t.Fatal("selected a suite not allowed")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20")
	f.Add("3 AEAD_AES_128_GCM inline:" + b64(28) + " KDR=0")
	f.Add("1 AES_CM_128_HMAC_SHA1_80 inline:" + rfcKey + "|2^20|1:4")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		p, err := c.Suite.Profile()
		if err != nil {
			t.Fatalf("accepted unknown suite %q", c.Suite)
		}
		kl, _ := p.KeyLen()
		sl, _ := p.SaltLen()
		if len(c.Key) != kl || len(c.Salt) != sl {
			t.Fatalf("accepted wrong key sizes %d/%d", len(c.Key), len(c.Salt))
		}
		again, err := Parse(c.Marshal())
		if err != nil || !bytes.Equal(again.Key, c.Key) || again.Lifetime != c.Lifetime {
			t.Fatalf("marshal/parse not stable: %v", err)
		}
	})
}
