package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/certs/pebbletest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// alpnServer is an HTTPS listener configured like edgepbxd's: the
// certificate manager's configuration wrapped by the ACME challenges.
type alpnServer struct {
	addr       string
	challenges atomic.Int32 // handshakes that negotiated acme-tls/1
}

func serveALPN(t *testing.T, ln net.Listener, mgr *certs.Manager, ch *certs.ACMEChallenges) *alpnServer {
	t.Helper()
	base, err := mgr.TLSConfig(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &alpnServer{addr: ln.Addr().String()}
	hs := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         ch.TLSConfig(base),
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }),
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			certs.ALPNProto: func(_ *http.Server, c *tls.Conn, _ http.Handler) {
				s.challenges.Add(1)
				c.Close()
			},
		},
	}
	go hs.ServeTLS(ln, "", "")
	t.Cleanup(func() { hs.Close() })
	return s
}

// dial makes a TLS handshake with the listener by name and returns the
// leaf it was shown.
func (s *alpnServer) dial(name string, protos []string, roots *x509.CertPool) (*x509.Certificate, string, error) {
	cfg := &tls.Config{ServerName: name, NextProtos: protos, RootCAs: roots, InsecureSkipVerify: roots == nil}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", s.addr, cfg)
	if err != nil {
		return nil, "", err
	}
	defer c.Close()
	st := c.ConnectionState()
	return st.PeerCertificates[0], st.NegotiatedProtocol, nil
}

// TestACMEPebbleTLSALPN issues a certificate from pebble over real
// TLS-ALPN-01 on the HTTPS listener itself, then a client that trusts only
// pebble's root connects by the public name. acme-tls/1 is refused while no
// challenge is pending, before and after.
func TestACMEPebbleTLSALPN(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ca := pebbletest.Start(t, pebbletest.Options{TLSPort: ln.Addr().(*net.TCPAddr).Port})

	db := storetest.Open(t, nil)
	mgr, err := certs.Load(db, certs.Identity{Serial: "EPX0002"})
	if err != nil {
		t.Fatal(err)
	}
	ch := certs.NewACMEChallenges()
	srv := serveALPN(t, ln, mgr, ch)
	names := []string{"pbx.edgepbx.test", "voice.edgepbx.test"}
	a, err := certs.NewACME(db, mgr, certs.ACMEConfig{DirectoryURL: ca.DirURL, Names: names, Challenges: ch,
		Contact: []string{"mailto:ops@edgepbx.test"}, HTTPClient: ca.Client})
	if err != nil {
		t.Fatal(err)
	}

	// Nothing pending: a CA-style hello is refused, an ordinary one gets
	// the self-signed certificate without any protocol negotiated.
	if _, _, err := srv.dial(names[0], []string{certs.ALPNProto}, nil); err == nil {
		t.Fatal("acme-tls/1 handshake accepted with no challenge pending")
	}
	leaf, proto, err := srv.dial(names[0], []string{"http/1.1"}, nil)
	if err != nil || proto == certs.ALPNProto || certs.FingerprintOf(leaf.Raw) != mgr.SelfSigned().Fingerprint {
		t.Fatalf("before issuance: proto %q err %v", proto, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if renewed, err := a.RenewIfDue(ctx); err != nil || !renewed {
		t.Fatalf("issuance over tls-alpn-01: renewed=%v err=%v", renewed, err)
	}
	if n := srv.challenges.Load(); n < int32(len(names)) {
		t.Fatalf("pebble validated over acme-tls/1 %d times, want at least %d", n, len(names))
	}
	if n := ch.PendingTLSALPN(); n != 0 {
		t.Fatalf("%d challenge certificates left pending after the order", n)
	}
	cur := mgr.Current()
	if cur.Source != certs.SourceACME || !slicesEqual(cur.DNSNames, names) {
		t.Fatalf("installed %+v", cur)
	}

	roots := ca.Roots(t)
	for _, n := range names {
		leaf, _, err := srv.dial(n, []string{"http/1.1"}, roots)
		if err != nil {
			t.Fatalf("client trusting pebble's root, by %s: %v", n, err)
		}
		if certs.FingerprintOf(leaf.Raw) != cur.Fingerprint {
			t.Fatalf("%s: served %s, installed %s", n, certs.FingerprintOf(leaf.Raw), cur.Fingerprint)
		}
	}
	// The self-signed certificate is still there for the box's own name.
	if leaf, _, err := srv.dial("edgepbx-epx0002", nil, nil); err != nil || certs.FingerprintOf(leaf.Raw) != mgr.SelfSigned().Fingerprint {
		t.Fatalf("fallback by the box name: %v", err)
	}
	if _, _, err := srv.dial(names[0], []string{certs.ALPNProto}, nil); err == nil {
		t.Fatal("acme-tls/1 handshake accepted after the order finished")
	}
	t.Logf("issued %s over tls-alpn-01 (%d validations)", cur.Fingerprint[:11], srv.challenges.Load())
}

func TestACMEChallengeType(t *testing.T) {
	db := storetest.Open(t, make([]byte, 32))
	mgr, err := certs.Load(db, certs.Identity{Serial: "EPX0003"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		typ string
		ok  bool
	}{{"", true}, {certs.ChallengeTLSALPN01, true}, {certs.ChallengeHTTP01, true}, {"dns-01", false}, {"TLS-ALPN-01", false}} {
		_, err := certs.NewACME(db, mgr, certs.ACMEConfig{DirectoryURL: "https://ca.example/dir", Names: []string{"a.example.com"}, Challenge: c.typ})
		if (err == nil) != c.ok {
			t.Errorf("challenge %q: err %v, want ok=%v", c.typ, err, c.ok)
		}
	}
}
