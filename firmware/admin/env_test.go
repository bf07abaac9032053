package admin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/connlog"
	"github.com/edgepbx/edgepbx/firmware/intrusion"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/privacy"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/init/clock"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/netfw"
)

const (
	setupCode = "K7QD-M3XP-W9RT"
	boxOrigin = "https://box.example"
	adminPW   = "Vz4#mq9!Tr2$kw"
	userPW    = "Hj6&np3?Ls8%xc"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// banRecorder stands in for PID 1's control socket, which needs a booted
// appliance; it records what would be sent.
type banRecorder struct {
	mu   sync.Mutex
	bans []netfw.Ban
}

func (b *banRecorder) Ban(_ context.Context, ban netfw.Ban) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.bans = append(b.bans, ban)
	return nil
}

func (b *banRecorder) list() []netfw.Ban {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]netfw.Ban(nil), b.bans...)
}

// pid1Recorder stands in for the rest of PID 1's control socket (bans list,
// counters, power) for the same reason; it records power requests.
type pid1Recorder struct {
	mu    sync.Mutex
	bans  []netfw.Ban
	power []string
	// policy is a real control-socket client talking to a real control
	// server in front of a real netfw.Committer; only the kernel ruleset
	// underneath is kept in memory (netfw's tests apply real ones).
	policy  *control.Client
	ruleset *memRuleset
	// netc is the real network committer PID 1 runs, applying to memory
	// (init/netconf's tests apply real ones); clk the real time store.
	netc   *netconf.Committer
	netApp *memNetApply
	clk    *clock.Clock
	// reset is PID 1's factory-reset gate behind the same control socket.
	reset *pid1Reset
}

func (p *pid1Recorder) GetPolicy(ctx context.Context) (netfw.PolicyState, error) {
	return p.policy.GetPolicy(ctx)
}

func (p *pid1Recorder) SetPolicy(ctx context.Context, a netfw.Access, src netip.Addr) (netfw.Pending, error) {
	return p.policy.SetPolicy(ctx, a, src)
}

func (p *pid1Recorder) ConfirmPolicy(ctx context.Context, id string) error {
	return p.policy.ConfirmPolicy(ctx, id)
}

// memRuleset keeps the policy PID 1 would have in the kernel.
type memRuleset struct {
	mu      sync.Mutex
	running netfw.Policy
	applies int
}

func (m *memRuleset) Apply(p netfw.Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.running, m.applies = p, m.applies+1
	return nil
}

func (m *memRuleset) zones() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, z := range m.running.Zones {
		out = append(out, z.Name)
	}
	return out
}

type nopSystem struct{}

func (nopSystem) Health(control.Health) {}
func (nopSystem) Reboot() error         { return nil }
func (nopSystem) Poweroff() error       { return nil }

// startPID1Policy runs the control socket with the committer PID 1 uses.
func startPID1Policy(t testing.TB, p *pid1Recorder) {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	p.ruleset = &memRuleset{}
	if err := p.ruleset.Apply(netfw.DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	cm := netfw.NewCommitter(p.ruleset, netfw.DefaultPolicy(), netfw.WithCommitLogger(quiet))
	dir, err := os.MkdirTemp("", "ctl") // short: unix socket paths are bounded
	if err != nil {
		t.Fatal(err)
	}
	if err := cm.Restore(filepath.Join(dir, "policy.json")); err != nil {
		t.Fatal(err)
	}
	p.netApp = &memNetApply{}
	p.netc = netconf.NewCommitter(context.Background(), netconf.CommitterConfig{Apply: p.netApp, NICs: []string{"eth0", "eth1"},
		Default: bootNetwork(), Log: quiet})
	p.clk = clock.New(clock.Config{Log: quiet})
	p.reset = newPID1Reset()
	srv, err := control.Listen(control.Config{Path: filepath.Join(dir, "init.sock"), UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		Policy: cm, Network: p.netc, Clock: p.clk, System: nopSystem{}, Reset: p.reset, Log: quiet, PolicyRate: 1000, PolicyBurst: 1000, GlobalRate: 10000, GlobalBurst: 10000, ConnRate: 10000, ConnBurst: 10000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	c, err := control.Dial(filepath.Join(dir, "init.sock"))
	if err != nil {
		t.Fatal(err)
	}
	p.policy = c
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
		cm.Close()
		p.netc.Close()
		os.RemoveAll(dir)
	})
}

func (p *pid1Recorder) ListBans(context.Context) ([]netfw.Ban, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]netfw.Ban(nil), p.bans...), nil
}

func (p *pid1Recorder) Unban(_ context.Context, pfx netip.Prefix) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bans = slices.DeleteFunc(p.bans, func(b netfw.Ban) bool { return b.Prefix == pfx })
	return nil
}

func (p *pid1Recorder) Counters(context.Context) (netfw.Counters, error) {
	return netfw.Counters{Rules: []netfw.RuleCounter{{Name: "drop-banned", Packets: 7, Bytes: 420}}}, nil
}

func (p *pid1Recorder) Reboot(context.Context) error   { p.add("reboot"); return nil }
func (p *pid1Recorder) Poweroff(context.Context) error { p.add("poweroff"); return nil }
func (p *pid1Recorder) add(s string) {
	p.mu.Lock()
	p.power = append(p.power, s)
	p.mu.Unlock()
}

type env struct {
	t      testing.TB
	srv    *Server
	db     *store.DB
	clock  *fakeClock
	bans   *banRecorder
	pid1   *pid1Recorder
	certs  *certs.Manager
	keylog *certs.KeyLog
	exts   *sipedge.Extensions
	tel    *pbxconfig.TelephonyStore
	sipset *pbxconfig.SIPStore
	intr   *intrusion.Aggregator
	priv   *privacy.Registry
	conns  *connlog.Log
}

func newEnv(t testing.TB) *env {
	return newEnvWith(t, auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 64))
}

func newEnvWith(t testing.TB, h *auth.Hasher) *env {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "edgepbx.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := &fakeClock{t: time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)}
	bans := &banRecorder{}
	quiet := slog.New(slog.DiscardHandler)
	cm, err := certs.Load(db, certs.Identity{Serial: "T0001", Hostname: "box.example", IPs: []net.IP{net.ParseIP("192.0.2.10")}},
		certs.WithClock(clk.Now), certs.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	kl := certs.NewKeyLog(clk.Now, quiet)
	exts, err := sipedge.LoadExtensions(db, "box.example")
	if err != nil {
		t.Fatal(err)
	}
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	sipset, err := pbxconfig.LoadSIP(db)
	if err != nil {
		t.Fatal(err)
	}
	pid1 := &pid1Recorder{}
	startPID1Policy(t, pid1)
	al := audit.New(db, clk)
	reg, err := privacy.New(db, al, clk)
	if err != nil {
		t.Fatal(err)
	}
	conns := connlog.New(db, clk, reg.Anonymiser("connections"))
	svc, err := auth.New(auth.Config{DB: db, Clock: clk, Audit: al, Hasher: h, Banner: bans, SetupCode: auth.SetupCode(setupCode), Logger: quiet,
		Connections: conns, AnonymiseSource: reg.Anonymiser("login_history")})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []privacy.Category{privacy.CDRs{DB: db, Store: cdr.New(db)}, privacy.Audit{DB: db, Log: al},
		privacy.LoginHistory{DB: db, Auth: svc}, privacy.Connections{DB: db, Log: conns}} {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	intr, err := intrusion.New(intrusion.Config{DB: db, Geo: svc, Now: clk.Now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	bk, err := backup.New(backup.Config{DB: db, Audit: al, Box: backup.Identity{Serial: "T0001", InstallID: "inst-T0001", Firmware: "test"},
		Dir: filepath.Join(t.TempDir(), "backups"), Resealers: map[string]store.Resealer{
			auth.AccountsBucket: auth.ResealAccount, sipedge.ExtensionsBucket: sipedge.ResealExtension, sipedge.TrunksBucket: sipedge.ResealTrunk,
			pbxconfig.TelephonyBucket: pbxconfig.ResealTelephony, certs.Bucket: certs.ResealCertificate, certs.ACMEBucket: certs.ResealACME},
		BoxLocal: backup.DefaultBoxLocal(certs.Bucket, certs.BoxLocalKeys()), Now: clk.Now, Log: quiet, ScryptWorkFactor: 10})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Deps{Store: db, Audit: al, Auth: svc, Clock: clk, Logger: quiet,
		Names: []string{"box.example", "192.0.2.10"},
		Certs: cm, KeyLog: kl, Extensions: exts, Firewall: pid1, System: pid1, Reset: pid1.policy, Network: pid1, Telephony: tel, SIPSettings: sipset,
		Intrusion: intr, Backups: bk, Privacy: reg, Connections: conns})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, srv: srv, db: db, clock: clk, bans: bans, pid1: pid1, certs: cm, keylog: kl, exts: exts, tel: tel, sipset: sipset, intr: intr,
		priv: reg, conns: conns}
}

// client drives the handler like a browser (cookie, CSRF header, Origin) or
// an API client (bearer token) from a chosen source address.
type client struct {
	e      *env
	addr   string
	cookie string
	csrf   string
	owner  string // a mailbox owner's session cookie (owner.go)
	token  string
	origin string // "" sends boxOrigin on state changes; "-" sends none
	header map[string]string
	// conn, if set, is the connection context (Server.ConnContext) the
	// requests arrive on.
	conn context.Context
}

func (e *env) client(addr string) *client { return &client{e: e, addr: addr} }

type resp struct {
	code int
	hdr  http.Header
	body []byte
	js   map[string]any
}

func (r resp) str(k string) string { s, _ := r.js[k].(string); return s }

func (c *client) do(method, path string, body any) resp {
	c.e.t.Helper()
	var rd *bytes.Reader
	switch b := body.(type) {
	case nil:
		rd = bytes.NewReader(nil)
	case string:
		rd = bytes.NewReader([]byte(b))
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, "https://box.example"+path, rd)
	if c.conn != nil {
		req = req.WithContext(c.conn)
	}
	req.RemoteAddr = net.JoinHostPort(c.addr, "40000")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if isStateChange(method) {
		switch c.origin {
		case "":
			req.Header.Set("Origin", boxOrigin)
		case "-":
		default:
			req.Header.Set("Origin", c.origin)
		}
	}
	if c.cookie != "" {
		req.AddCookie(&http.Cookie{Name: CookieName, Value: c.cookie})
	}
	if c.owner != "" {
		req.AddCookie(&http.Cookie{Name: OwnerCookieName, Value: c.owner})
	}
	if c.csrf != "" {
		req.Header.Set(csrfHeader, c.csrf)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	c.e.srv.ServeHTTP(w, req)
	res := w.Result()
	for _, ck := range res.Cookies() {
		if ck.Name == CookieName {
			if ck.MaxAge < 0 {
				c.cookie = ""
			} else {
				c.cookie = ck.Value
			}
		}
		if ck.Name == OwnerCookieName {
			c.owner = ck.Value
			if ck.MaxAge < 0 {
				c.owner = ""
			}
		}
	}
	r := resp{code: w.Code, hdr: w.Header(), body: w.Body.Bytes()}
	_ = json.Unmarshal(r.body, &r.js)
	if tok := r.str("csrf_token"); tok != "" {
		c.csrf = tok
	}
	return r
}

func (c *client) must(code int, method, path string, body any) resp {
	c.e.t.Helper()
	r := c.do(method, path, body)
	if r.code != code {
		c.e.t.Fatalf("%s %s = %d, want %d: %s", method, path, r.code, code, r.body)
	}
	return r
}

// claimed returns an env claimed by "root1" and that admin's client.
func claimed(t testing.TB) (*env, *client) {
	e := newEnv(t)
	c := e.client("192.0.2.50")
	c.must(200, "POST", "/api/v1/claim", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: adminPW})
	return e, c
}

func (c *client) login(user, pw string) resp {
	c.e.t.Helper()
	return c.do("POST", "/api/v1/login", LoginRequest{Username: user, Password: pw})
}

func (e *env) totpCode(secret string) string {
	code, err := totp.GenerateCode(secret, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return code
}

func (e *env) auditHas(action, outcome string) bool {
	l, err := e.srv.audit.Query(audit.Filter{Action: action})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, x := range l {
		if x.Action == action && (outcome == "" || x.Outcome == outcome) {
			return true
		}
	}
	return false
}

func (e *env) setPolicy(c *client, f func(*auth.Policy)) {
	e.t.Helper()
	p, err := e.srv.auth.Policy()
	if err != nil {
		e.t.Fatal(err)
	}
	f(&p)
	c.must(200, "PUT", "/api/v1/security/policy", p)
}

func contains(b []byte, s string) bool { return strings.Contains(string(b), s) }

func decodeB64(s string) ([]byte, error) { return base64.StdEncoding.DecodeString(s) }

func dumpAccount(t testing.TB, db *store.DB, name string) string {
	var raw json.RawMessage
	if err := db.View(func(tx *store.Tx) error { _, err := tx.Get("auth.accounts", name, &raw); return err }); err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
