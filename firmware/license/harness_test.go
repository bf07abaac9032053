package license_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	bolt "go.etcd.io/bbolt"
)

// fakeClock is a settable wall clock whose timers fire when it is advanced.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	armed   chan struct{} // signalled whenever a timer is registered
}

type waiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(t time.Time) *fakeClock {
	return &fakeClock{now: t, armed: make(chan struct{}, 1)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), ch: ch})
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return ch
}

// Set moves the clock to t (backwards too) and fires due timers.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// env is a real licensed (the cmd/licensed server package) on loopback TLS,
// with a switch that takes it off the air and a hook that rewrites answers.
type env struct {
	t        testing.TB
	priv     ed25519.PrivateKey
	pub      ed25519.PublicKey
	srvClock *fakeClock // the true time, the server's clock
	srv      *phonehome.Server
	ts       *httptest.Server
	roots    *x509.CertPool
	offline  atomic.Bool
	// full and resumed count check-in TLS handshakes by kind.
	full, resumed atomic.Int32
	// rewrite, when set, replaces the server's answer body (tamper tests).
	rewrite atomic.Pointer[func(body []byte) []byte]
	token   string
}

var start = time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)

func newEnv(t testing.TB) *env {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	bdb, err := bolt.Open(filepath.Join(t.TempDir(), "licensed.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bdb.Close() })
	e := &env{t: t, priv: priv, pub: pub, srvClock: newFakeClock(start), token: "test-admin-token"}
	e.srv, err = phonehome.New(bdb, priv, e.token, e.srvClock.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	inner := e.srv.Handler()
	e.ts = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if e.offline.Load() {
			// Off the air: drop the connection without an answer.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if r.URL.Path == license.CheckinPath && r.TLS != nil {
			if r.TLS.DidResume {
				e.resumed.Add(1)
			} else {
				e.full.Add(1)
			}
		}
		if fn := e.rewrite.Load(); fn != nil && r.URL.Path == license.CheckinPath {
			rec := httptest.NewRecorder()
			inner.ServeHTTP(rec, r)
			w.WriteHeader(rec.Code)
			w.Write((*fn)(rec.Body.Bytes()))
			return
		}
		inner.ServeHTTP(w, r)
	}))
	// Served like cmd/licensed: its development certificate (one small
	// ECDSA leaf) and its server-side session tickets.
	cert, _, err := phonehome.DevCertificate("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e.ts.TLS = e.srv.TLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	e.ts.StartTLS()
	t.Cleanup(e.ts.Close)
	e.roots = x509.NewCertPool()
	e.roots.AddCert(e.ts.Certificate())
	e.issue("LIC-1")
	return e
}

func (e *env) issue(id string) {
	e.t.Helper()
	err := e.srv.PutLicence(phonehome.Licence{ID: id, ValidUntil: start.Add(365 * 24 * time.Hour), MaxExtensions: 50, MaxTrunks: 4})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) setRewrite(fn func([]byte) []byte) {
	if fn == nil {
		e.rewrite.Store(nil)
		return
	}
	e.rewrite.Store(&fn)
}

// box is one appliance: its own store, clock and Manager.
type box struct {
	m      *license.Manager
	clock  *fakeClock
	db     *store.DB
	key    []byte // the device key, to reopen the store after a restore
	cfg    license.Config
	events chan license.State
}

type boxOpt func(*license.Config)

func withFingerprint(fp string) boxOpt {
	return func(c *license.Config) { c.Identity.Fingerprint = fp }
}
func withSerial(s string) boxOpt   { return func(c *license.Config) { c.Identity.Serial = s } }
func withFirmware(v string) boxOpt { return func(c *license.Config) { c.Identity.Firmware = v } }

func (e *env) newBox(opts ...boxOpt) *box {
	e.t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db := storetest.Open(e.t, key)
	b := &box{db: db, key: key, clock: newFakeClock(e.srvClock.Now()), events: make(chan license.State, 64)}
	b.cfg = license.Config{
		ServerURL: e.ts.URL,
		Identity: license.Identity{Serial: "EPX-0001", InstallID: "inst-7f3a", LicenceID: "LIC-1",
			Firmware: "1.0.0", Fingerprint: license.Fingerprint("dmi-uuid-1", "board-sn-1")},
		DB: db, VendorKey: e.pub, Clock: b.clock, RootCAs: e.roots, Logger: slog.New(slog.DiscardHandler),
		Health: func() (license.Load, license.Counts) {
			return license.Load{CPUPercent: 12, MemPercent: 40, CPUs: 4, MemMB: 4096},
				license.Counts{Extensions: 25, Trunks: 2, CallsDay: 310, PeakCalls: 9}
		},
		// Every box anchors an audit head (a quiet log: the same one daily).
		AuditHead: func() (license.Anchor, error) {
			return license.AnchorFromHead(4821, "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
		},
		OnChange: func(s license.State) {
			select {
			case b.events <- s:
			default:
			}
		},
	}
	for _, o := range opts {
		o(&b.cfg)
	}
	b.restart(e)
	return b
}

// restart builds a new Manager on the same store, like a reboot.
func (b *box) restart(e *env) {
	e.t.Helper()
	m, err := license.New(b.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	b.m = m
}

// advance moves the true time and the box clock together.
func (e *env) advance(b *box, d time.Duration) {
	e.srvClock.Advance(d)
	b.clock.Advance(d)
}

func (e *env) mustCheck(b *box) license.State {
	e.t.Helper()
	st, err := b.m.CheckNow(context.Background())
	if err != nil {
		e.t.Fatalf("check-in: %v", err)
	}
	return st
}

// connectProxy is a small real HTTP CONNECT proxy with Basic credentials.
type connectProxy struct {
	ln       net.Listener
	user     string
	pass     string
	connects atomic.Int32
	refused  atomic.Int32
}

func newConnectProxy(t testing.TB, user, pass string) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, user: user, pass: pass}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(p.user+":"+p.pass))
	if req.Method != http.MethodConnect || req.Header.Get("Proxy-Authorization") != want {
		p.refused.Add(1)
		io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	p.connects.Add(1)
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	<-done
}

// countingDial counts bytes on the wire (TLS included) in both directions.
type countingDial struct{ in, out atomic.Int64 }

func (d *countingDial) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: c, d: d}, nil
}

type countedConn struct {
	net.Conn
	d *countingDial
}

func (c *countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.d.in.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.d.out.Add(int64(n))
	return n, err
}

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}
