// Package mailtest runs a real SMTP submission server (Debian's
// python3-aiosmtpd, smtpd.py here) with TLS and AUTH for the tests of
// the mailer and of the daemon, and reads back what it received.
package mailtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Python is Debian's interpreter (the one python3-aiosmtpd installs for).
const Python = "/usr/bin/python3"

// Server is one running SMTP server.
type Server struct {
	Host  string // 127.0.0.1
	Port  int
	CAPEM string // the CA that signed the server's certificate
	User  string
	Pass  string
	Dir   string // N.eml and N.env per accepted message
}

// Received is one accepted message.
type Received struct {
	From string
	To   []string
	TLS  bool
	Raw  []byte
	Mail *mail.Message
}

// Start runs the server in mode "starttls", "tls" or "plain". Without
// aiosmtpd the test is skipped when CI is unset and fails in CI.
func Start(t testing.TB, mode string) *Server {
	t.Helper()
	if err := exec.Command(Python, "-c", "import aiosmtpd").Run(); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("python3-aiosmtpd is not installed (apt-get install python3-aiosmtpd; .ci/deps): %v", err)
		}
		t.Fatalf("python3-aiosmtpd missing in CI: %v", err)
	}
	dir := t.TempDir()
	caPEM, certPEM, keyPEM := certs(t)
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "mail")
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	_, self, _, _ := runtime.Caller(0)
	s := &Server{Host: "127.0.0.1", CAPEM: string(caPEM), User: "vm-sender", Pass: "s3cret-Submission-pw", Dir: out}
	cmd := exec.Command(Python, filepath.Join(filepath.Dir(self), "smtpd.py"), mode, cert, key, out, s.User, s.Pass)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	port, perr := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "port ")))
	if err != nil || perr != nil {
		cmd.Process.Kill()
		t.Fatalf("smtpd.py did not start (%q, %v): %s", line, err, stderr.String())
	}
	s.Port = port
	return s
}

// Wait waits (up to timeout) for the n-th message (1-based).
func (s *Server) Wait(t testing.TB, n int, timeout time.Duration) Received {
	t.Helper()
	base := filepath.Join(s.Dir, strconv.Itoa(n))
	for deadline := time.Now().Add(timeout); ; {
		raw, err := os.ReadFile(base + ".eml")
		if err == nil {
			env, err := os.ReadFile(base + ".env")
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(env)), "\n")
			m, err := mail.ReadMessage(strings.NewReader(string(raw)))
			if err != nil {
				t.Fatalf("message %d does not parse: %v\n%s", n, err, raw)
			}
			return Received{From: lines[0], To: lines[1 : len(lines)-1], TLS: lines[len(lines)-1] == "tls=True", Raw: raw, Mail: m}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message %d after %s", n, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Count is the number of messages received so far.
func (s *Server) Count() int {
	m, _ := filepath.Glob(filepath.Join(s.Dir, "*.eml"))
	return len(m)
}

// certs makes a CA and a server certificate for 127.0.0.1.
func certs(t testing.TB) (caPEM, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caT := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mailtest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kDER})
}
