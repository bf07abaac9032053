package certs_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/certs/pebbletest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestACMEPebbleHTTP01 issues a certificate from pebble over real HTTP-01, does
// not renew it while fresh, and renews it two months later.
func TestACMEPebbleHTTP01(t *testing.T) {
	// The challenge listener first, so its port can go into pebble's config.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := pebbletest.Start(t, pebbletest.Options{HTTPPort: ln.Addr().(*net.TCPAddr).Port})

	db := storetest.Open(t, nil)
	now := time.Now()
	clock := func() time.Time { return now }
	mgr, err := certs.Load(db, certs.Identity{Serial: "EPX0001"}, certs.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"pbx.edgepbx.test", "sip.edgepbx.test"}
	a, err := certs.NewACME(db, mgr, certs.ACMEConfig{DirectoryURL: ca.DirURL, Names: names, Challenge: certs.ChallengeHTTP01,
		Contact: []string{"mailto:ops@edgepbx.test"}, HTTPClient: ca.Client, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	var validations atomic.Int32 // pebble's HTTP-01 fetches
	h := a.HTTPHandler(nil)
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		validations.Add(1)
		h.ServeHTTP(w, r)
	})}
	go hs.Serve(ln)
	defer hs.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	renewed, err := a.RenewIfDue(ctx)
	if err != nil || !renewed {
		t.Fatalf("first issuance: renewed=%v err=%v", renewed, err)
	}
	first := mgr.Current()
	if validations.Load() < int32(len(names)) {
		t.Fatalf("pebble fetched %d challenges, want at least %d", validations.Load(), len(names))
	}
	if first.Source != certs.SourceACME || !slicesEqual(first.DNSNames, names) {
		t.Fatalf("installed %+v", first)
	}
	// Served to TLS clients.
	c, err := mgr.GetCertificate(&tls.ClientHelloInfo{ServerName: "pbx.edgepbx.test"})
	if err != nil || certs.FingerprintOf(c.Certificate[0]) != first.Fingerprint {
		t.Fatalf("GetCertificate: %v", err)
	}

	steps := []struct {
		after time.Duration
		renew bool
	}{
		{0, false},
		{59 * 24 * time.Hour, false},
		{61 * 24 * time.Hour, true},
	}
	for _, s := range steps {
		now = first.NotBefore.Add(s.after)
		renewed, err := a.RenewIfDue(ctx)
		if err != nil || renewed != s.renew {
			t.Fatalf("%s after issuance: renewed=%v err=%v, want %v", s.after, renewed, err, s.renew)
		}
	}
	second := mgr.Current()
	if second.Fingerprint == first.Fingerprint || !second.NotBefore.After(first.NotBefore.Add(-time.Second)) {
		t.Fatalf("renewal did not install a new certificate: %+v", second)
	}
	t.Logf("issued %s (valid %s .. %s), renewed as %s", first.Fingerprint[:11], first.NotBefore.Format(time.DateOnly),
		first.NotAfter.Format(time.DateOnly), second.Fingerprint[:11])
}

func slicesEqual(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func TestACMEDue(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	acmeCert := certs.Info{Source: certs.SourceACME, DNSNames: []string{"a.example.com"}, NotBefore: t0, NotAfter: t0.Add(90 * 24 * time.Hour)}
	tests := []struct {
		name string
		cur  certs.Info
		nms  []string
		now  time.Time
		want bool
	}{
		{"self-signed", certs.Info{Source: certs.SourceSelfSigned, NotAfter: t0.AddDate(100, 0, 0)}, []string{"a.example.com"}, t0, true},
		{"uploaded", certs.Info{Source: certs.SourceUpload, DNSNames: []string{"a.example.com"}, NotAfter: t0.AddDate(1, 0, 0)}, []string{"a.example.com"}, t0, true},
		{"fresh", acmeCert, []string{"a.example.com"}, t0.Add(24 * time.Hour), false},
		{"59 days", acmeCert, []string{"a.example.com"}, t0.Add(59 * 24 * time.Hour), false},
		{"60 days", acmeCert, []string{"a.example.com"}, t0.Add(60 * 24 * time.Hour), true},
		{"new name", acmeCert, []string{"a.example.com", "b.example.com"}, t0, true},
		{"short-lived cert near expiry", certs.Info{Source: certs.SourceACME, DNSNames: []string{"a.example.com"}, NotBefore: t0, NotAfter: t0.Add(40 * 24 * time.Hour)}, []string{"a.example.com"}, t0.Add(11 * 24 * time.Hour), true},
	}
	for _, tt := range tests {
		if got, why := certs.ACMEDue(tt.cur, tt.nms, tt.now); got != tt.want {
			t.Errorf("%s: due=%v (%s), want %v", tt.name, got, why, tt.want)
		}
	}
}

func TestACMEConfig(t *testing.T) {
	db := storetest.Open(t, make([]byte, 32))
	mgr, err := certs.Load(db, certs.Identity{Serial: "EPX0001"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []certs.ACMEConfig{
		{DirectoryURL: "http://ca.example/dir", Names: []string{"a.example.com"}},
		{DirectoryURL: "https://ca.example/dir"},
		{DirectoryURL: "https://ca.example/dir", Names: []string{"*.example.com"}},
		{DirectoryURL: "https://ca.example/dir", Names: []string{"192.0.2.1.", "x"}},
	} {
		if _, err := certs.NewACME(db, mgr, cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	a, err := certs.NewACME(db, mgr, certs.ACMEConfig{DirectoryURL: "https://ca.example/dir", Names: []string{"a.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	// No challenge pending: every token is unknown.
	srv := a.HTTPHandler(nil)
	for _, path := range []string{"/.well-known/acme-challenge/abc", "/.well-known/acme-challenge/", "/other"} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("%s: %d", path, rec.Code)
		}
	}
}
