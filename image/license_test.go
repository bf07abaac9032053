package image

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/firmware/license"
)

func testCAPEM(t testing.TB) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "licence test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestWithLicenseRejects(t *testing.T) {
	ca := testCAPEM(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte("secret")})
	tests := []struct {
		name string
		url  string
		ca   []byte
		key  ed25519.PublicKey
	}{
		{"http", "http://lic.example", ca, pub},
		{"path", "https://lic.example/v1", ca, pub},
		{"user info", "https://u:p@lic.example", ca, pub},
		{"query", "https://lic.example?a", ca, pub},
		{"no host", "https:///", ca, pub},
		{"space", "https://lic.example x", ca, pub},
		{"long", "https://" + strings.Repeat("a", MaxLicenseURLBytes), ca, pub},
		{"no CA", "https://lic.example", nil, pub},
		{"CA not PEM", "https://lic.example", []byte("hello"), pub},
		{"CA with junk", "https://lic.example", append(append([]byte{}, ca...), "junk"...), pub},
		{"CA with a private key", "https://lic.example", append(append([]byte{}, ca...), keyPEM...), pub},
		{"CA not a certificate", "https://lic.example", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")}), pub},
		{"CA oversize", "https://lic.example", bytes.Repeat(ca, MaxLicenseCABytes/len(ca)+1), pub},
		{"no key", "https://lic.example", ca, nil},
		{"short key", "https://lic.example", ca, pub[:16]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o options
			if err := WithLicense(tt.url, tt.ca, tt.key)(&o); err == nil || o.license != nil {
				t.Errorf("accepted (err %v)", err)
			}
		})
	}
	var o options
	if err := WithLicense("https://lic.example:8443/", ca, pub)(&o); err != nil {
		t.Fatal(err)
	}
	if o.license.url != "https://lic.example:8443" {
		t.Errorf("url %q: want the trailing slash dropped", o.license.url)
	}
	// The key goes in the form firmware/license parses.
	got, err := license.ParsePublicKey(o.license.vendorKey)
	if err != nil || !got.Equal(pub) {
		t.Errorf("vendor key %q parses to %x, %v", o.license.vendorKey, got, err)
	}
}

func TestBuildWithLicense(t *testing.T) {
	needTools(t)
	prof, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	ca := testCAPEM(t)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	img := build(t, prof, WithLicense("https://10.0.2.100", append([]byte("# vendor roots\n"), ca...), pub))
	recs, data := readInitramfs(t, img.Initramfs)

	var cfg LicenseConfig
	if err := json.Unmarshal(data[LicensePath], &cfg); err != nil {
		t.Fatalf("%s: %v", LicensePath, err)
	}
	if cfg != (LicenseConfig{URL: "https://10.0.2.100", CAFile: "/" + LicenseCAPath}) {
		t.Errorf("%s = %+v", LicensePath, cfg)
	}
	// Only the certificate, re-encoded: the comment is gone.
	if !bytes.Equal(data[LicenseCAPath], ca) {
		t.Errorf("%s = %q, want the certificate only", LicenseCAPath, data[LicenseCAPath])
	}
	for _, p := range []string{LicensePath, LicenseCAPath} {
		if m := recs[p].Mode & 0o777; m != 0o644 {
			t.Errorf("%s mode %o, want 644 (edgepbxd reads it)", p, m)
		}
	}
	if !bytes.Contains(data[DaemonPath], []byte("1.2.3-test")) {
		t.Error("edgepbxd does not carry the image version (-X main.version)")
	}
	want := license.FormatPublicKey(pub)
	if !bytes.Contains(data[DaemonPath], []byte(want)) {
		t.Errorf("edgepbxd does not carry the vendor key %s", want)
	}

	var man Manifest
	mb, err := os.ReadFile(img.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &man); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(ca)
	if man.License == nil || man.License.URL != cfg.URL || man.License.VendorKey != want || man.License.CASHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("manifest licence = %+v", man.License)
	}
}
