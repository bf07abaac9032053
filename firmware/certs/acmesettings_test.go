package certs_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

func TestACMESettingsValidate(t *testing.T) {
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: selfSignedDER(t)}))
	on := func(mod func(*certs.ACMESettings)) certs.ACMESettings {
		s := certs.ACMESettings{Enabled: true, Names: []string{"pbx.example.com"}}
		mod(&s)
		return s
	}
	tests := []struct {
		name string
		s    certs.ACMESettings
		ok   bool
	}{
		{"defaults (off)", certs.DefaultACMESettings(), true},
		{"enabled, defaults filled", on(func(*certs.ACMESettings) {}), true},
		{"upper-case name, trailing dot, spaces", on(func(s *certs.ACMESettings) { s.Names = []string{" PBX.Example.COM. ", "", "pbx.example.com"} }), true},
		{"mailto: prefix", on(func(s *certs.ACMESettings) { s.Email = "mailto:ops@example.com" }), true},
		{"private CA", on(func(s *certs.ACMESettings) { s.DirectoryURL = "https://ca.lan:14000/dir"; s.CAPEM = caPEM }), true},
		{"http-01 default port", on(func(s *certs.ACMESettings) { s.Challenge = "http-01" }), true},
		{"http-01 on an address", on(func(s *certs.ACMESettings) { s.Challenge = "http-01"; s.HTTPAddr = "192.0.2.1:8080" }), true},
		{"enabled without names", certs.ACMESettings{Enabled: true}, false},
		{"http directory", on(func(s *certs.ACMESettings) { s.DirectoryURL = "http://ca.example/dir" }), false},
		{"directory with user", on(func(s *certs.ACMESettings) { s.DirectoryURL = "https://u:p@ca.example/dir" }), false},
		{"long directory", on(func(s *certs.ACMESettings) { s.DirectoryURL = "https://ca.example/" + strings.Repeat("a", 600) }), false},
		{"wildcard", on(func(s *certs.ACMESettings) { s.Names = []string{"*.example.com"} }), false},
		{"address", on(func(s *certs.ACMESettings) { s.Names = []string{"192.0.2.1"} }), false},
		{"single label", on(func(s *certs.ACMESettings) { s.Names = []string{"pbx"} }), false},
		{"label with underscore", on(func(s *certs.ACMESettings) { s.Names = []string{"a_b.example.com"} }), false},
		{"eleven names", on(func(s *certs.ACMESettings) {
			s.Names = nil
			for i := range 11 {
				s.Names = append(s.Names, string(rune('a'+i))+".example.com")
			}
		}), false},
		{"two contacts", on(func(s *certs.ACMESettings) { s.Email = "a@example.com,b@example.com" }), false},
		{"header injection", on(func(s *certs.ACMESettings) { s.Email = "a@example.com\r\nBcc: x@y.z" }), false},
		{"no domain", on(func(s *certs.ACMESettings) { s.Email = "ops@" }), false},
		{"dns-01", on(func(s *certs.ACMESettings) { s.Challenge = "dns-01" }), false},
		{"http_addr dropped with tls-alpn-01", on(func(s *certs.ACMESettings) { s.HTTPAddr = "nonsense" }), true},
		{"http_addr port 0", on(func(s *certs.ACMESettings) { s.Challenge = "http-01"; s.HTTPAddr = ":0" }), false},
		{"http_addr hostname", on(func(s *certs.ACMESettings) { s.Challenge = "http-01"; s.HTTPAddr = "box:80" }), false},
		{"CA not PEM", on(func(s *certs.ACMESettings) { s.CAPEM = "hello" }), false},
		{"CA key block", on(func(s *certs.ACMESettings) { s.CAPEM = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----" }), false},
		{"CA too large", on(func(s *certs.ACMESettings) { s.CAPEM = strings.Repeat(caPEM, 40) }), false},
	}
	for _, tt := range tests {
		s := tt.s
		s.Normalize()
		err := s.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: err %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, certs.ErrACMESettings) {
			t.Errorf("%s: error %v does not wrap ErrACMESettings", tt.name, err)
		}
	}
}

func TestACMESettingsStore(t *testing.T) {
	db := storetest.Open(t, make([]byte, 32))
	got, err := certs.LoadACMESettings(db)
	if err != nil || got.Enabled || got.DirectoryURL != certs.DefaultACMEDirectory || got.Challenge != certs.ChallengeTLSALPN01 {
		t.Fatalf("defaults: %+v %v", got, err)
	}
	want := certs.ACMESettings{Enabled: true, Names: []string{"PBX.example.com"}, Email: "ops@example.com"}
	if _, saved, err := certs.SaveACMESettings(db, want); err != nil || saved.Names[0] != "pbx.example.com" {
		t.Fatalf("save: %+v %v", saved, err)
	}
	// A refused change changes nothing.
	if _, _, err := certs.SaveACMESettings(db, certs.ACMESettings{Enabled: true}); !errors.Is(err, certs.ErrACMESettings) {
		t.Fatalf("saving no names: %v", err)
	}
	got, _ = certs.LoadACMESettings(db)
	if !got.Enabled || got.Names[0] != "pbx.example.com" || got.Contact()[0] != "mailto:ops@example.com" {
		t.Fatalf("stored %+v", got)
	}
	st := certs.ACMEStatus{State: certs.ACMEFailed, LastError: strings.Repeat("é", 900), Failures: 2}
	if err := certs.SaveACMEStatus(db, st); err != nil {
		t.Fatal(err)
	}
	back, err := certs.LoadACMEStatus(db)
	if err != nil || back.State != certs.ACMEFailed || back.Failures != 2 || len(back.LastError) > 1024 || !strings.HasPrefix(back.LastError, "é") {
		t.Fatalf("status %+v %v", back, err)
	}
}

// FuzzACMESettings: settings arrive as JSON from the admin API. Whatever
// the body, normalising and validating does not panic, and what passes
// passes again after a store round trip.
func FuzzACMESettings(f *testing.F) {
	f.Add([]byte(`{"enabled":true,"names":["pbx.example.com"],"email":"ops@example.com"}`))
	f.Add([]byte(`{"enabled":true,"names":["a.b"],"challenge":"http-01","http_addr":"[::1]:80","ca_pem":"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----"}`))
	f.Add([]byte(`{"directory_url":"https://x/\u0000","names":["*.x.y"," ."]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var s certs.ACMESettings
		if json.Unmarshal(raw, &s) != nil {
			return
		}
		s.Normalize()
		if s.Validate() != nil {
			return
		}
		enc, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back certs.ACMESettings
		if err := json.Unmarshal(enc, &back); err != nil {
			t.Fatal(err)
		}
		back.Normalize()
		if err := back.Validate(); err != nil {
			t.Fatalf("valid settings %s refused after a round trip: %v", enc, err)
		}
		if len(back.Names) > certs.MaxACMENames {
			t.Fatalf("%d names passed", len(back.Names))
		}
	})
}

func selfSignedDER(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "private ACME CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
