package image

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

func testCert(t *testing.T, ca bool) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), IsCA: ca, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestLoadRoots: only a bundle of parseable CA certificates is carried
// into the image, re-encoded (comments and whitespace dropped).
func TestLoadRoots(t *testing.T) {
	ca1, ca2, leaf := testCert(t, true), testCert(t, true), testCert(t, false)
	key := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})
	broken := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")})
	cases := []struct {
		name, data, err string
		want            string
	}{
		{"two roots with comments", "# ACME Root\n" + string(ca1) + "\n# other\n" + string(ca2), "", string(ca1) + string(ca2)},
		{"empty", "", "no certificates", ""},
		{"text only", "# nothing here\n", "no certificates", ""},
		{"a key", string(ca1) + string(key), "unexpected", ""},
		{"unparseable", string(broken), "certificate 1", ""},
		{"leaf", string(ca1) + string(leaf), "not a CA", ""},
		{"oversize", strings.Repeat("#", maxRoots+1), "larger than", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "roots.pem")
			if err := os.WriteFile(p, []byte(c.data), 0o644); err != nil {
				t.Fatal(err)
			}
			got, sum, err := loadRoots(p)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || string(got) != c.want || len(sum) != 64 {
				t.Fatalf("got %d bytes, sum %q, err %v", len(got), sum, err)
			}
		})
	}
	if _, _, err := loadRoots(filepath.Join(t.TempDir(), "missing")); err == nil || !strings.Contains(err.Error(), "ca-certificates") {
		t.Fatalf("missing bundle: %v", err)
	}
}

// TestHostRoots: the build host's Debian bundle is accepted whole.
func TestHostRoots(t *testing.T) {
	if _, err := os.Stat(HostRoots); err != nil {
		netnstest.Unavailable(t, "needs %s (Debian package ca-certificates; .ci/deps installs it)", HostRoots)
	}
	b, _, err := loadRoots(HostRoots)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "BEGIN CERTIFICATE"); n < 50 {
		t.Fatalf("only %d roots in %s", n, HostRoots)
	}
}
