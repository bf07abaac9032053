// Package pebbletest runs Debian's pebble ACME test CA on loopback for the
// tests of firmware/certs and cmd/edgepbxd: one copy of the setup (its
// listener certificate, configuration, DNS, readiness wait).
package pebbletest

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
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// CA is a running pebble with pebble-challtestsrv as its DNS server, which
// answers 127.0.0.1 for every name: HTTP-01 validation connects to
// 127.0.0.1:HTTPPort, TLS-ALPN-01 validation to 127.0.0.1:TLSPort.
type CA struct {
	DirURL  string // the ACME directory
	MgmtURL string // pebble's management interface (roots, intermediates)
	// ListenerPEM is the certificate of pebble's own HTTPS listeners, which
	// an ACME client must trust to reach the directory.
	ListenerPEM []byte
	// Client trusts ListenerPEM.
	Client *http.Client
}

// Options say where pebble validates; 0 picks a port nobody listens on.
type Options struct {
	HTTPPort int
	TLSPort  int
}

// Start runs pebble until the test ends and waits until it answers.
// PEBBLE_VA_NOSLEEP makes validation immediate; authorisations are not
// reused, so every order is validated afresh.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	pebble := netnstest.NeedTool(t, "pebble", "pebble")
	challsrv := netnstest.NeedTool(t, "pebble-challtestsrv", "pebble")
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
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile := write("cert.pem", certPEM)
	keyFile := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)

	if o.HTTPPort == 0 {
		o.HTTPPort = netnstest.FreePort(t, "tcp")
	}
	if o.TLSPort == 0 {
		o.TLSPort = netnstest.FreePort(t, "tcp")
	}
	dnsPort := netnstest.FreePort(t, "udp")
	acmePort, mgmtPort, chMgmt := netnstest.FreePort(t, "tcp"), netnstest.FreePort(t, "tcp"), netnstest.FreePort(t, "tcp")
	raw, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress":        fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := write("pebble-config.json", raw)

	run := func(name string, args []string, env ...string) {
		ctx, cancel := context.WithCancel(context.Background())
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Env = append(os.Environ(), env...)
		out := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			cancel()
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

	ca := &CA{
		DirURL:      fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort),
		MgmtURL:     fmt.Sprintf("https://127.0.0.1:%d", mgmtPort),
		ListenerPEM: certPEM,
		Client:      &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}},
	}
	t.Cleanup(ca.Client.CloseIdleConnections)
	// Wait until pebble answers (it starts in well under a second).
	deadline := time.Now().Add(30 * time.Second) // a hang, not a performance limit
	for {
		resp, err := ca.Client.Get(ca.DirURL)
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

// Roots is pebble's issuing root, which a client must trust to verify what
// it issued (pebble makes a new one at every start).
func (ca *CA) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := ca.Client.Get(ca.MgmtURL + "/roots/0")
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
