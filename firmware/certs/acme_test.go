package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// needTool skips without CI and fails with CI when a Debian tool is missing.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found: install Debian package %s", name, pkg)
		}
		t.Skipf("%s not found (Debian package %s)", name, pkg)
	}
	return p
}

func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// pebbleCA runs Debian's pebble and pebble-challtestsrv (as its DNS, which
// answers 127.0.0.1 for every name) on loopback. HTTP-01 validation connects
// to 127.0.0.1:httpPort, where the test serves ACME.HTTPHandler; TLS-ALPN-01
// validation to 127.0.0.1:tlsPort (0: a port nobody listens on).
type pebbleCA struct {
	dirURL  string
	mgmtURL string
	client  *http.Client
}

func startPebble(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	pebble := needTool(t, "pebble", "pebble")
	challsrv := needTool(t, "pebble-challtestsrv", "pebble")
	dir := t.TempDir()

	// Pebble's own HTTPS listener needs a certificate; make one for 127.0.0.1.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pebble test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	leaf, _ := x509.ParseCertificate(der)
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	dnsPort := freePort(t, "udp")
	acmePort, mgmtPort, chMgmt := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	if tlsPort == 0 {
		tlsPort = freePort(t, "tcp")
	}
	if httpPort == 0 {
		httpPort = freePort(t, "tcp")
	}
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    filepath.Join(dir, "cert.pem"),
		"privateKey":                     filepath.Join(dir, "key.pem"),
		"httpPort":                       httpPort,
		"tlsPort":                        tlsPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}}
	raw, _ := json.Marshal(cfg)
	cfgPath := filepath.Join(dir, "pebble-config.json")
	os.WriteFile(cfgPath, raw, 0o600)

	run := func(name string, args []string, env ...string) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() {
			cancel()
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s output:\n%s", filepath.Base(name), out.String())
			}
		})
	}
	run(challsrv, []string{"-dns01", fmt.Sprintf("127.0.0.1:%d", dnsPort), "-http01", "", "-https01", "",
		"-tlsalpn01", "", "-management", fmt.Sprintf("127.0.0.1:%d", chMgmt), "-defaultIPv6", ""})
	run(pebble, []string{"-config", cfgPath, "-dnsserver", fmt.Sprintf("127.0.0.1:%d", dnsPort), "-strict"},
		"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")

	ca := &pebbleCA{
		dirURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		mgmtURL: fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	}
	// Wait until pebble answers (it starts in well under a second).
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := ca.client.Get(ca.dirURL)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ca
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("pebble did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// roots is pebble's issuing root, which a client must trust to verify what
// it issued (pebble makes a new one at every start).
func (ca *pebbleCA) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := ca.client.Get(ca.mgmtURL + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("pebble root: %s %v", resp.Status, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw) {
		t.Fatalf("pebble root is not PEM: %.200s", raw)
	}
	return pool
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestACMEPebbleHTTP01 issues a certificate from pebble over real HTTP-01, does
// not renew it while fresh, and renews it two months later.
func TestACMEPebbleHTTP01(t *testing.T) {
	// The challenge listener first, so its port can go into pebble's config.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := startPebble(t, ln.Addr().(*net.TCPAddr).Port, 0)

	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	clock := func() time.Time { return now }
	mgr, err := certs.Load(db, certs.Identity{Serial: "EPX0001"}, certs.WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"pbx.edgepbx.test", "sip.edgepbx.test"}
	a, err := certs.NewACME(db, mgr, certs.ACMEConfig{DirectoryURL: ca.dirURL, Names: names, Challenge: certs.ChallengeHTTP01,
		Contact: []string{"mailto:ops@edgepbx.test"}, HTTPClient: ca.client, Now: clock})
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
	key := make([]byte, 32)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
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
