package provision

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icholy/digest"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type auditClock struct{ c *fakeClock }

func (a auditClock) Now() time.Time { return a.c.Now() }

// exts is a real-enough extension table: it keeps the passwords it is given
// so tests can check the phone got the one the registrar holds.
type exts struct {
	mu sync.Mutex
	pw map[string]string
}

func (e *exts) Set(u, p string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pw[u] = p
	return nil
}

func (e *exts) List() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for u := range e.pw {
		out = append(out, u)
	}
	return out
}

func (e *exts) get(u string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.pw[u]
}

type banRecorder struct {
	mu   sync.Mutex
	bans []fwspec.Ban
}

func (b *banRecorder) Ban(_ context.Context, ban fwspec.Ban) error {
	if _, err := fwspec.BanPrefix(ban.Prefix); err != nil {
		return err
	}
	b.mu.Lock()
	b.bans = append(b.bans, ban)
	b.mu.Unlock()
	return nil
}

func (b *banRecorder) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.bans)
}

type licence struct{ degraded bool }

func (l *licence) AllowNewExtension() bool { return !l.degraded }
func (l *licence) AllowProvisioning() bool { return !l.degraded }

type harness struct {
	t     *testing.T
	svc   *Service
	db    *store.DB
	clock *fakeClock
	exts  *exts
	bans  *banRecorder
	lic   *licence
	https *httptest.Server
	http  *httptest.Server
}

const testCA = "-----BEGIN CERTIFICATE-----\nTESTCA\n-----END CERTIFICATE-----"

func newHarness(t *testing.T, mod ...func(*Deps)) *harness {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	dir := t.TempDir()
	db, err := store.Open(filepath.Join(dir, "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clock := &fakeClock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	h := &harness{t: t, db: db, clock: clock, exts: &exts{pw: map[string]string{"101": "x", "102": "y"}}, bans: &banRecorder{}, lic: &licence{}}
	d := Deps{Store: db, Audit: audit.New(db, auditClock{clock}), Extensions: h.exts, Licence: h.lic, Banner: h.bans, Host: "pbx.example.test",
		CAPEM: func() []byte { return []byte(testCA) }, DataDir: dir, Clock: clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mod {
		m(&d)
	}
	svc, err := New(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	h.svc = svc
	return h
}

// listen starts the HTTPS (client certificate asked for) and HTTP listeners.
func (h *harness) listen() {
	h.https = httptest.NewUnstartedServer(h.svc.HTTPSHandler())
	h.https.TLS = TLSConfig(&tls.Config{})
	h.https.StartTLS()
	h.t.Cleanup(h.https.Close)
	h.http = httptest.NewServer(h.svc.HTTPHandler())
	h.t.Cleanup(h.http.Close)
}

type answer struct {
	status int
	body   string
	hdr    http.Header
}

// do runs one request through the handler in process, from src.
func (h *harness) do(secure bool, method, path, ua, src string, body io.Reader, mod ...func(*http.Request)) answer {
	h.t.Helper()
	r := httptest.NewRequest(method, path, body)
	r.RemoteAddr = src + ":40000"
	if ua != "" {
		r.Header.Set("User-Agent", ua)
	}
	for _, m := range mod {
		m(r)
	}
	w := httptest.NewRecorder()
	if secure {
		h.svc.HTTPSHandler().ServeHTTP(w, r)
	} else {
		h.svc.HTTPHandler().ServeHTTP(w, r)
	}
	return answer{status: w.Code, body: w.Body.String(), hdr: w.Header()}
}

// withDigest answers the service's challenge as a phone does.
func (h *harness) withDigest(user, pass string) func(*http.Request) {
	return func(r *http.Request) {
		chal, err := digest.ParseChallenge(h.svc.challenge())
		if err != nil {
			h.t.Fatal(err)
		}
		cred, err := digest.Digest(chal, digest.Options{Method: r.Method, URI: r.URL.RequestURI(), Username: user, Password: pass, Count: 1})
		if err != nil {
			h.t.Fatal(err)
		}
		r.Header.Set("Authorization", cred.String())
	}
}

func (h *harness) secrets(mac string) deviceSecrets {
	h.t.Helper()
	var sec deviceSecrets
	err := h.db.View(func(tx *store.Tx) error {
		var err error
		sec, _, err = h.svc.getSecrets(tx, mac)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return sec
}

func (h *harness) add(mac string, v Vendor, approve bool, ext ...string) Device {
	h.t.Helper()
	d, err := h.svc.Add(AddRequest{MAC: mac, Vendor: v, Extensions: ext, Approve: approve}, "admin", "192.0.2.1")
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func mustContain(t *testing.T, body string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(body, w) {
			t.Fatalf("body lacks %q:\n%s", w, body)
		}
	}
}

func mustNotContain(t *testing.T, body string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if b != "" && strings.Contains(body, b) {
			t.Fatalf("body contains %q:\n%s", b, body)
		}
	}
}
