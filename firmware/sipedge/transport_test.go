package sipedge

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgepbx-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: k}}}
}

func registerOverStream(t *testing.T, c net.Conn, transport string) string {
	t.Helper()
	msg := "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/" + transport + " " + c.LocalAddr().String() + ";branch=z9hG4bK" + randHex(6) +
		"\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=1\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: " + randHex(6) +
		"\r\nCSeq: 1 REGISTER\r\nContact: <sip:101@" + c.LocalAddr().String() + ";transport=" + strings.ToLower(transport) + ">\r\nContent-Length: 0\r\n\r\n"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer over %s: %v", transport, err)
	}
	return strings.TrimSpace(line)
}

func TestTLSTransport(t *testing.T) {
	cert := selfSigned(t)
	cfg := testConfig()
	cfg.TLS = "127.0.0.1:0"
	s := startServerTLS(t, cfg, cert)
	addr := s.Addr("tls").String()
	// TLS 1.1 is refused by default.
	if c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil {
		c.Close()
		t.Fatal("TLS 1.1 handshake accepted")
	}
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	defer c.Close()
	if st := c.ConnectionState(); st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 && st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 && st.CipherSuite != tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 {
		t.Fatalf("suite %s", tls.CipherSuiteName(st.CipherSuite))
	}
	if got := registerOverStream(t, c, "TLS"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("over TLS: %q", got)
	}
}

func startServerTLS(t *testing.T, cfg pbxconfig.SIP, tc *tls.Config) *testServer {
	t.Helper()
	return startServerWithTLS(t, func(c *pbxconfig.SIP) { *c = cfg }, tc)
}

func TestTCPConnectionCapsAndIdle(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) {
		c.MaxConnsPerSource = 2
		c.IdleTimeout = time.Second
	})
	addr := s.Addr("tcp").String()
	var open []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		open = append(open, c)
	}
	if got := registerOverStream(t, open[0], "TCP"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("over TCP: %q", got)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := third.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("third connection from one source: read err %v, want EOF (closed)", err)
	}
	if s.conns.OverSource.Load() != 1 {
		t.Fatalf("over-source counter %d", s.conns.OverSource.Load())
	}
	// The silent second connection is closed by the idle timeout.
	open[1].SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := open[1].Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) || err == nil {
		t.Fatalf("idle connection not closed by the server: %v", err)
	}
}
