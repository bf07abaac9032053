package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"testing"
	"time"
)

// boxAdmin is an admin API client for a booted appliance, pinned to the
// certificate fingerprint its console shows.
type boxAdmin struct {
	t      *testing.T
	base   string
	c      *http.Client
	csrf   string
	certPE []byte // the box's certificate, PEM, as served
}

func newBoxAdmin(t *testing.T, base, fingerprint string) *boxAdmin {
	t.Helper()
	a := &boxAdmin{t: t, base: base}
	want := normFingerprint(fingerprint)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	a.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // self-signed: pinned to the console's fingerprint instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != want {
				return fmt.Errorf("certificate sha256 %s, console shows %s", got, want)
			}
			a.certPE = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cs.PeerCertificates[0].Raw})
			return nil
		},
	}}}
	t.Cleanup(a.c.CloseIdleConnections)
	return a
}

// do sends a JSON request as a browser on the admin origin would.
func (a *boxAdmin) do(want int, method, path string, body any) []byte {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", a.base)
	if a.csrf != "" {
		req.Header.Set("X-CSRF-Token", a.csrf)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s = %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	return out
}

// claim claims the box with the console's setup code.
func (a *boxAdmin) claim(code string) {
	a.t.Helper()
	var ans struct {
		Status    string `json:"status"`
		CSRFToken string `json:"csrf_token"`
	}
	out := a.do(http.StatusOK, "POST", "/api/v1/claim", map[string]string{
		"setup_code": code, "username": "owner1", "password": "Vz4#mq9!Tr2$kw-lab"})
	if err := json.Unmarshal(out, &ans); err != nil || ans.Status != "ok" {
		a.t.Fatalf("claim answer %s (%v)", out, err)
	}
	a.csrf = ans.CSRFToken
}

// extension creates a SIP extension and returns its generated password.
func (a *boxAdmin) extension(user string) string {
	a.t.Helper()
	var ans struct{ User, Password string }
	if err := json.Unmarshal(a.do(http.StatusCreated, "POST", "/api/v1/extensions", map[string]string{"user": user}), &ans); err != nil || ans.Password == "" {
		a.t.Fatalf("create extension %s: %v", user, err)
	}
	return ans.Password
}
