package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

var (
	deviceKey = bytes.Repeat([]byte{3}, 32)
	testID    = Identity{Serial: "EPX0001", Hostname: "pbx-lab", IPs: []net.IP{net.ParseIP("192.0.2.10")}}
	t0        = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
)

func newManager(t *testing.T, now *time.Time) (*Manager, *store.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgepbx.db")
	db := storetest.OpenAt(t, path, deviceKey)
	t.Cleanup(func() { db.Close() })
	m, err := Load(db, testID, WithClock(func() time.Time { return *now }))
	if err != nil {
		t.Fatal(err)
	}
	return m, db, path
}

func TestSelfSignedCreatedAndReused(t *testing.T) {
	now := t0
	m, db, path := newManager(t, &now)
	info := m.Current()
	if info.Source != SourceSelfSigned || info.Fingerprint != m.SelfSigned().Fingerprint {
		t.Fatalf("first start: %+v", info)
	}
	wantDNS := []string{"edgepbx-EPX0001", "pbx-lab", "localhost"}
	if !slices.Equal(info.DNSNames, wantDNS) {
		t.Fatalf("DNS names %v, want %v", info.DNSNames, wantDNS)
	}
	for _, ip := range []string{"127.0.0.1", "::1", "192.0.2.10"} {
		if !slices.Contains(info.IPs, ip) {
			t.Fatalf("IP %s missing from %v", ip, info.IPs)
		}
	}
	leaf := m.state.Load().active.cert.Leaf
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	if len(m.Fingerprint()) != 32*3-1 {
		t.Fatalf("fingerprint %q has the wrong form", m.Fingerprint())
	}
	// The private key is sealed: its scalar never appears in the file's records.
	priv := m.state.Load().active.cert.PrivateKey.(*ecdsa.PrivateKey)
	scalar, _ := priv.Bytes()
	db.View(func(tx *store.Tx) error {
		return tx.ForEach(Bucket, func(k string, raw []byte) error {
			if bytes.Contains(raw, scalar) {
				t.Errorf("record %s contains the private key in clear", k)
			}
			return nil
		})
	})
	fp := m.Fingerprint()
	db.Close()

	// Second start, different IPs and clock: same certificate.
	db = storetest.OpenAt(t, path, deviceKey)
	defer db.Close()
	id := testID
	id.IPs = []net.IP{net.ParseIP("198.51.100.7")}
	m2, err := Load(db, id)
	if err != nil {
		t.Fatal(err)
	}
	if m2.Fingerprint() != fp {
		t.Fatalf("restart made a new certificate: %s != %s", m2.Fingerprint(), fp)
	}
}

func TestLoadRefusesWrongDeviceKey(t *testing.T) {
	now := t0
	_, db, path := newManager(t, &now)
	db.Close()
	db = storetest.OpenAt(t, path, bytes.Repeat([]byte{9}, 32))
	defer db.Close()
	if _, err := Load(db, testID); !errors.Is(err, store.ErrUnseal) {
		t.Fatalf("Load with another device key: %v, want ErrUnseal", err)
	}
}

func TestLoadRefusesBadSerial(t *testing.T) {
	db := storetest.OpenAt(t, filepath.Join(t.TempDir(), "x.db"), deviceKey)
	defer db.Close()
	for _, s := range []string{"", "a b", "x/../y", string(make([]byte, 60))} {
		if _, err := Load(db, Identity{Serial: s}); err == nil {
			t.Fatalf("serial %q accepted", s)
		}
	}
}

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newCA(t *testing.T, name string, parent *ca) *ca {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: t0.Add(-24 * time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, crypto.Signer(key)
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &ca{c, key}
}

type leafOpts struct {
	dns       []string
	notBefore time.Time
	notAfter  time.Time
	key       crypto.Signer
	eku       []x509.ExtKeyUsage
}

func (c *ca) issue(t *testing.T, o leafOpts) []byte {
	t.Helper()
	if o.notBefore.IsZero() {
		o.notBefore = t0.Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = t0.Add(90 * 24 * time.Hour)
	}
	if o.eku == nil {
		o.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: o.dns[0]},
		NotBefore: o.notBefore, NotAfter: o.notAfter, DNSNames: o.dns, ExtKeyUsage: o.eku,
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, o.key.Public(), c.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestInstallValidation(t *testing.T) {
	root := newCA(t, "Test Root", nil)
	inter := newCA(t, "Test Intermediate", root)
	other := newCA(t, "Other", nil)
	key := ecKey(t)
	rsaSmall, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	names := []string{"pbx.example.com"}
	leaf := func(o leafOpts) []byte {
		if o.dns == nil {
			o.dns = names
		}
		if o.key == nil {
			o.key = key
		}
		return inter.issue(t, o)
	}
	good := leaf(leafOpts{})
	tests := []struct {
		name  string
		b     *Bundle
		names []string
		ok    bool
	}{
		{"valid chain", &Bundle{[][]byte{good, inter.cert.Raw, root.cert.Raw}, key}, names, true},
		{"valid leaf only", &Bundle{[][]byte{good}, key}, names, true},
		{"key mismatch", &Bundle{[][]byte{good, inter.cert.Raw}, ecKey(t)}, names, false},
		{"no key", &Bundle{[][]byte{good}, nil}, names, false},
		{"expired", &Bundle{[][]byte{leaf(leafOpts{notBefore: t0.Add(-48 * time.Hour), notAfter: t0.Add(-time.Hour)})}, key}, names, false},
		{"not yet valid", &Bundle{[][]byte{leaf(leafOpts{notBefore: t0.Add(time.Hour)})}, key}, names, false},
		{"name not covered", &Bundle{[][]byte{good}, key}, []string{"other.example.com"}, false},
		{"one name of two not covered", &Bundle{[][]byte{good}, key}, []string{"pbx.example.com", "edgepbx-EPX0001"}, false},
		{"no names", &Bundle{[][]byte{good}, key}, nil, false},
		{"broken chain", &Bundle{[][]byte{good, other.cert.Raw}, key}, names, false},
		{"client auth only", &Bundle{[][]byte{leaf(leafOpts{eku: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})}, key}, names, false},
		{"RSA 1024", &Bundle{[][]byte{leaf(leafOpts{key: rsaSmall})}, rsaSmall}, names, false},
		{"Ed25519", &Bundle{[][]byte{leaf(leafOpts{key: edKey})}, edKey}, names, false},
		{"garbage DER", &Bundle{[][]byte{[]byte("not a certificate")}, key}, names, false},
		{"empty", &Bundle{}, names, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			m, _, _ := newManager(t, &now)
			before := m.Fingerprint()
			err := m.Install(tc.b, tc.names, SourceUpload)
			if tc.ok {
				if err != nil {
					t.Fatalf("Install: %v", err)
				}
				if m.Fingerprint() != FingerprintOf(tc.b.Chain[0]) {
					t.Fatal("installed certificate is not active")
				}
				return
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Install error = %v, want ErrInvalid", err)
			}
			if m.Fingerprint() != before {
				t.Fatal("a refused certificate changed the active one")
			}
		})
	}
}

func TestInstallPersistsAndRollsBack(t *testing.T) {
	now := t0
	m, db, path := newManager(t, &now)
	self := m.Fingerprint()
	root := newCA(t, "Root", nil)
	k1, k2 := ecKey(t), ecKey(t)
	b1 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: []string{"a.example.com"}, key: k1})}, k1}
	b2 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: []string{"a.example.com"}, key: k2})}, k2}
	if err := m.Install(b1, []string{"a.example.com"}, SourceUpload); err != nil {
		t.Fatal(err)
	}
	if err := m.Install(b2, []string{"a.example.com"}, SourceACME); err != nil {
		t.Fatal(err)
	}
	fp1, fp2 := FingerprintOf(b1.Chain[0]), FingerprintOf(b2.Chain[0])
	if m.Fingerprint() != fp2 || m.Current().Source != SourceACME {
		t.Fatalf("active %s (%s), want %s", m.Fingerprint(), m.Current().Source, fp2)
	}
	if err := m.Install(b1, []string{"a.example.com"}, "ftp"); err == nil {
		t.Fatal("unknown source accepted")
	}

	// Restart: the replacement survives.
	db.Close()
	db = storetest.OpenAt(t, path, deviceKey)
	defer db.Close()
	clock := func() time.Time { return now }
	m, err := Load(db, testID, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if m.Fingerprint() != fp2 || m.SelfSigned().Fingerprint != self {
		t.Fatalf("after restart active %s self %s", m.Fingerprint(), m.SelfSigned().Fingerprint)
	}
	steps := []string{fp1, fp2, fp1}
	for i, want := range steps {
		if err := m.Rollback(); err != nil {
			t.Fatalf("rollback %d: %v", i, err)
		}
		if m.Fingerprint() != want {
			t.Fatalf("rollback %d: active %s, want %s", i, m.Fingerprint(), want)
		}
	}

	// Past b1's expiry a restart falls back to the previous one or self-signed.
	now = t0.Add(100 * 24 * time.Hour)
	m, err = Load(db, testID, WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	if m.Fingerprint() != self {
		t.Fatalf("expired replacement still served: %s", m.Fingerprint())
	}
	if err := m.Rollback(); err == nil {
		t.Fatal("rollback from self-signed succeeded")
	}
}

// handshake connects a real TLS client to a server using cfg and returns the
// certificate the server sent.
func handshake(t *testing.T, cfg *tls.Config, client *tls.Config) (*x509.Certificate, uint16, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.(*tls.Conn).Handshake()
		c.Close()
	}()
	client = client.Clone()
	client.InsecureSkipVerify = true // the test checks the certificate itself
	c, err := tls.Dial("tcp", ln.Addr().String(), client)
	if err != nil {
		return nil, 0, err
	}
	defer c.Close()
	st := c.ConnectionState()
	return st.PeerCertificates[0], st.Version, nil
}

func TestTLSConfig(t *testing.T) {
	now := t0
	m, _, _ := newManager(t, &now)
	cfgErr := []struct{ min, max uint16 }{
		{tls.VersionTLS10, 0}, {tls.VersionTLS11, tls.VersionTLS13}, {tls.VersionTLS13, tls.VersionTLS12}, {0, tls.VersionTLS11}, {0, 0x0305},
	}
	for _, c := range cfgErr {
		if _, err := m.TLSConfig(c.min, c.max); err == nil {
			t.Errorf("TLSConfig(%#x, %#x) accepted", c.min, c.max)
		}
	}
	def, err := m.TLSConfig(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	only13, err := m.TLSConfig(tls.VersionTLS13, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		server *tls.Config
		client *tls.Config
		want   uint16 // 0: handshake must fail
	}{
		{"1.3 default", def, &tls.Config{}, tls.VersionTLS13},
		{"1.2 default", def, &tls.Config{MaxVersion: tls.VersionTLS12}, tls.VersionTLS12},
		{"1.1 refused", def, &tls.Config{MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}, 0},
		{"1.2 CBC only refused", def, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, 0},
		{"1.2 chacha", def, &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}}, tls.VersionTLS12},
		{"1.2 on 1.3-only refused", only13, &tls.Config{MaxVersion: tls.VersionTLS12}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cert, v, err := handshake(t, tc.server, tc.client)
			if tc.want == 0 {
				if err == nil {
					t.Fatalf("handshake succeeded with %s", tls.VersionName(v))
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if v != tc.want || FingerprintOf(cert.Raw) != m.Fingerprint() {
				t.Fatalf("got %s with %s", tls.VersionName(v), FingerprintOf(cert.Raw))
			}
		})
	}
}

func TestGetCertificateKeepsSelfSignedForOtherNames(t *testing.T) {
	now := t0
	m, _, _ := newManager(t, &now)
	root := newCA(t, "Root", nil)
	k := ecKey(t)
	b := &Bundle{[][]byte{root.issue(t, leafOpts{dns: []string{"pbx.example.com"}, key: k})}, k}
	if err := m.Install(b, []string{"pbx.example.com"}, SourceUpload); err != nil {
		t.Fatal(err)
	}
	cfg, _ := m.TLSConfig(0, 0)
	tests := []struct{ sni, want string }{
		{"pbx.example.com", FingerprintOf(b.Chain[0])},
		{"", FingerprintOf(b.Chain[0])},
		{"edgepbx-EPX0001", m.SelfSigned().Fingerprint},
		{"localhost", m.SelfSigned().Fingerprint},
		{"unknown.example.org", FingerprintOf(b.Chain[0])},
	}
	for _, tc := range tests {
		cert, _, err := handshake(t, cfg, &tls.Config{ServerName: tc.sni})
		if err != nil {
			t.Fatalf("SNI %q: %v", tc.sni, err)
		}
		if got := FingerprintOf(cert.Raw); got != tc.want {
			t.Errorf("SNI %q: served %s, want %s", tc.sni, got, tc.want)
		}
	}
}

func TestParsePEM(t *testing.T) {
	root := newCA(t, "Root", nil)
	key := ecKey(t)
	der := root.issue(t, leafOpts{dns: []string{"pbx.example.com"}, key: key})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw})
	pk8, _ := x509.MarshalPKCS8PrivateKey(key)
	sec1, _ := x509.MarshalECPrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8})
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})
	encPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: sec1})
	join := func(b ...[]byte) []byte { return bytes.Join(b, nil) }
	tests := []struct {
		name      string
		chain     []byte
		key       []byte
		wantChain int
	}{
		{"pkcs8", certPEM, keyPEM, 1},
		{"sec1 with root", join(certPEM, rootPEM), ecPEM, 2},
		{"key in chain", join(certPEM, keyPEM), keyPEM, 0},
		{"no certificate", []byte("hello"), keyPEM, 0},
		{"trailing junk", join(certPEM, []byte("junk")), keyPEM, 0},
		{"two keys", certPEM, join(keyPEM, keyPEM), 0},
		{"encrypted key", certPEM, encPEM, 0},
		{"too many certs", bytes.Repeat(certPEM, MaxChainLen+1), keyPEM, 0},
		{"oversize chain", make([]byte, MaxChainPEM+1), keyPEM, 0},
		{"oversize key", certPEM, make([]byte, MaxKeyPEM+1), 0},
		{"bad key bytes", certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ParsePEM(tc.chain, tc.key)
			if tc.wantChain == 0 {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("ParsePEM error = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Chain) != tc.wantChain {
				t.Fatalf("chain of %d, want %d", len(b.Chain), tc.wantChain)
			}
			if _, err := Validate(b, []string{"pbx.example.com"}, t0); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func FuzzParsePEM(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: []string{"a.example"}, NotBefore: t0, NotAfter: t0.Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	pk8, _ := x509.MarshalPKCS8PrivateKey(key)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, chain, key []byte) {
		b, err := ParsePEM(chain, key)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || b != nil {
				t.Fatalf("error %v (bundle %v) not a clean ErrInvalid", err, b)
			}
			return
		}
		if len(b.Chain) == 0 || len(b.Chain) > MaxChainLen || b.Key == nil {
			t.Fatalf("accepted bundle out of bounds: %d certs", len(b.Chain))
		}
		// Whatever parsed must go through Validate without panicking.
		Validate(b, []string{"a.example"}, t0.Add(time.Minute))
	})
}
