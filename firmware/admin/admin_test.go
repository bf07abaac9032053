package admin

import (
	"bytes"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/store"
)

func TestUnclaimedServesOnlyClaim(t *testing.T) {
	e := newEnv(t)
	c := e.client("192.0.2.50")
	for _, path := range []string{"/", "/login", "/users", "/audit", "/account"} {
		r := c.do("GET", path, nil)
		if r.code != http.StatusSeeOther || r.hdr.Get("Location") != "/claim" {
			t.Errorf("GET %s unclaimed = %d %s", path, r.code, r.hdr.Get("Location"))
		}
	}
	for _, path := range []string{"/api/v1/status", "/api/v1/accounts", "/api/v1/audit"} {
		c.must(http.StatusConflict, "GET", path, nil)
	}
	c.must(http.StatusConflict, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	r := c.must(200, "GET", "/claim", nil)
	if !contains(r.body, "Setup code") {
		t.Fatal("claim page content")
	}
	c.must(200, "GET", "/static/app.js", nil)
}

func TestClaimFlow(t *testing.T) {
	e := newEnv(t)
	c := e.client("192.0.2.50")
	tests := []struct {
		name string
		req  ClaimRequest
		code int
		want string
	}{
		{"wrong code", ClaimRequest{SetupCode: "AAAA-BBBB-CCCC", Username: "root1", Password: adminPW}, 401, "wrong setup code"},
		{"empty code", ClaimRequest{Username: "root1", Password: adminPW}, 401, "wrong setup code"},
		{"common password", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: "password1234"}, 422, "common"},
		{"weak password", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: "739182465013"}, 422, "weak"},
		{"empty password", ClaimRequest{SetupCode: setupCode, Username: "root1"}, 422, "empty"},
		{"bad user name", ClaimRequest{SetupCode: setupCode, Username: "Root 1", Password: adminPW}, 400, "user name"},
	}
	for _, tc := range tests {
		r := c.do("POST", "/api/v1/claim", tc.req)
		if r.code != tc.code || !contains(r.body, tc.want) {
			t.Errorf("%s: %d %s", tc.name, r.code, r.body)
		}
		if r.hdr.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: content type %q", tc.name, r.hdr.Get("Content-Type"))
		}
	}
	r := c.must(200, "POST", "/api/v1/claim", ClaimRequest{SetupCode: "k7qd m3xp w9rt", Username: "root1", Password: adminPW})
	if r.str("status") != "ok" || c.cookie == "" || c.csrf == "" {
		t.Fatalf("claim answer %s", r.body)
	}
	c.must(200, "GET", "/api/v1/me", nil)
	// Single use: the same code cannot claim again, not even for another name.
	other := e.client("192.0.2.51")
	other.must(http.StatusConflict, "POST", "/api/v1/claim", ClaimRequest{SetupCode: setupCode, Username: "evil", Password: adminPW})
	if r := other.do("GET", "/claim", nil); r.hdr.Get("Location") != "/login" {
		t.Errorf("claimed /claim = %d %s", r.code, r.hdr.Get("Location"))
	}
	if !e.auditHas("claim", "denied") || !e.auditHas("claim", "ok") {
		t.Error("claim attempts not audited")
	}
}

func TestClaimRateLimit(t *testing.T) {
	e := newEnv(t)
	wrong := ClaimRequest{SetupCode: "XXXX-XXXX-XXXX", Username: "root1", Password: adminPW}
	good := ClaimRequest{SetupCode: setupCode, Username: "root1", Password: adminPW}
	// Ten guesses a minute in total, from any number of sources.
	for i := 0; i < 10; i++ {
		e.client(fmt.Sprintf("198.51.100.%d", i+1)).must(401, "POST", "/api/v1/claim", wrong)
	}
	e.client("198.51.100.99").must(429, "POST", "/api/v1/claim", good) // even the right code waits
	e.clock.Advance(time.Minute)
	// Twenty per source per hour.
	c := e.client("203.0.113.5")
	for i := 0; i < 20; i++ {
		if i%10 == 9 {
			e.clock.Advance(time.Minute)
		}
		c.must(401, "POST", "/api/v1/claim", wrong)
	}
	e.clock.Advance(time.Minute)
	c.must(429, "POST", "/api/v1/claim", good)
	e.clock.Advance(time.Hour)
	c.must(200, "POST", "/api/v1/claim", good)
}

func TestLockoutAndIdenticalAnswers(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bob", Role: auth.RoleOperator, Password: userPW})
	c := e.client("192.0.2.60")
	unknown := c.login("nosuchuser", userPW)
	wrong := c.login("bob", "Wrong-pass-123!")
	if unknown.code != 401 || wrong.code != 401 || !bytes.Equal(unknown.body, wrong.body) {
		t.Fatalf("unknown vs wrong differ: %d %s / %d %s", unknown.code, unknown.body, wrong.code, wrong.body)
	}
	c.login("bob", "Wrong-pass-456!")
	c.login("bob", "Wrong-pass-789!") // third failure locks
	locked := c.login("bob", userPW)
	if locked.code != 401 || !bytes.Equal(locked.body, unknown.body) {
		t.Fatalf("locked answer differs: %d %s", locked.code, locked.body)
	}
	if !e.auditHas("auth.lockout", "warning") {
		t.Error("lockout not audited")
	}
	info, _ := e.srv.auth.Account("bob")
	if !info.Locked || !info.LockedUntil.Equal(e.clock.Now().Add(time.Hour)) {
		t.Fatalf("lock state %+v", info)
	}
	e.clock.Advance(59 * time.Minute)
	if c.login("bob", userPW).code != 401 {
		t.Fatal("lock lifted early")
	}
	e.clock.Advance(time.Minute + time.Second)
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})

	// Configurable threshold; an admin can unlock.
	a.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	e.setPolicy(a, func(p *auth.Policy) { p.LockoutThreshold = 5; p.LockoutSeconds = 600 })
	d := e.client("192.0.2.61")
	for i := 0; i < 4; i++ {
		d.login("bob", "nope-nope-nope")
	}
	d.must(200, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})
	for i := 0; i < 5; i++ {
		d.login("bob", "nope-nope-nope")
	}
	d.must(401, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})
	a.must(200, "POST", "/api/v1/accounts/bob/unlock", nil)
	d.must(200, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})
}

func TestSourceThrottleAndSprayBan(t *testing.T) {
	e, _ := claimed(t)
	c := e.client("203.0.113.7")
	for i := 0; i < 5; i++ {
		c.must(401, "POST", "/api/v1/login", LoginRequest{Username: fmt.Sprintf("user%d", i), Password: "guess-guess-1"})
	}
	bans := e.bans.list()
	if len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("203.0.113.7/32") || bans[0].Timeout != time.Hour {
		t.Fatalf("bans %+v", bans)
	}
	if !e.auditHas("auth.ban", "warning") {
		t.Error("ban not audited")
	}
	for i := 5; i < 10; i++ {
		c.login("root1", "guess-guess-2")
	}
	r := c.login("root1", adminPW) // right password, but the source is throttled
	if r.code != 429 || r.hdr.Get("Retry-After") == "" {
		t.Fatalf("throttled source: %d %s", r.code, r.body)
	}
	// Another source network is neither throttled nor locked out: the
	// guesses locked root1 for 203.0.113.0/24 only.
	if r := e.client("192.0.2.50").login("root1", adminPW); r.code != 200 {
		t.Fatalf("root1 from another network after guesses from 203.0.113.7: %d %s", r.code, r.body)
	}
	if r := e.client("203.0.113.9").login("root1", adminPW); r.code != 401 {
		t.Fatalf("root1 from the guessing /24 (other host, not throttled): %d %s", r.code, r.body)
	}
	e.clock.Advance(time.Hour + time.Second)
	c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	// IPv6 sources are counted per /64 but banned per host: the guesses
	// came over TCP from these hosts, not from their neighbours (an admin's
	// PC on the same SLAAC segment).
	for i := 0; i < 5; i++ {
		e.client(fmt.Sprintf("2001:db8:1:2::%x", i+1)).login(fmt.Sprintf("v6user%d", i), "guess-guess-3")
	}
	bans = e.bans.list()
	if len(bans) != 2 || bans[1].Prefix != netip.MustParsePrefix("2001:db8:1:2::5/128") {
		t.Fatalf("v6 bans %+v", bans)
	}
	// The next host of that /64 that keeps spraying is banned too, within a
	// bound per /64 (its attempts stay throttled past it).
	for i := 5; i < 40; i++ {
		e.client(fmt.Sprintf("2001:db8:1:2::%x", i+1)).login(fmt.Sprintf("v6user%d", i), "guess-guess-3")
	}
	bans = e.bans.list()
	if n := len(bans) - 1; n < 2 || n > 16 {
		t.Fatalf("v6 host bans in one /64: %d (want 2..16): %+v", n, bans)
	}
	for _, b := range bans[1:] {
		if b.Prefix.Bits() != 128 {
			t.Fatalf("v6 ban wider than one host: %+v", b)
		}
	}
	// An admin on the same /64 is not banned at the firewall; the /64's
	// login throttle (in process, this endpoint only) ends with its window.
	admin6 := netip.MustParseAddr("2001:db8:1:2::aaaa")
	for _, b := range e.bans.list() {
		if b.Prefix.Contains(admin6) {
			t.Fatalf("ban %+v covers the admin beside the sprayer", b)
		}
	}
	e.clock.Advance(time.Hour + time.Second)
	if r := e.client(admin6.String()).login("root1", adminPW); r.code != 200 {
		t.Fatalf("admin beside the sprayer after the throttle window: %d %s", r.code, r.body)
	}
}

func TestTOTPEnrolLoginAndStepUp(t *testing.T) {
	e, a := claimed(t)
	r := a.must(200, "POST", "/api/v1/me/totp", auth.Proof{Password: adminPW})
	secret := r.str("secret")
	qr := r.str("qr_png")
	if secret == "" || !strings.HasPrefix(r.str("otpauth_url"), "otpauth://totp/edgepbx:root1") {
		t.Fatalf("enrolment %s", r.body)
	}
	if png, _ := decodeB64(qr); !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatal("QR is not a PNG")
	}
	a.must(422, "POST", "/api/v1/me/totp/confirm", CodeRequest{Code: "000000"})
	r = a.must(200, "POST", "/api/v1/me/totp/confirm", CodeRequest{Code: e.totpCode(secret)})
	codes, _ := r.js["recovery_codes"].([]any)
	if len(codes) != 10 {
		t.Fatalf("recovery codes %s", r.body)
	}
	if acct := dumpAccount(t, e.db, "root1"); strings.Contains(acct, secret) || strings.Contains(acct, codes[0].(string)) {
		t.Fatal("TOTP secret or recovery code stored in clear")
	}

	// Known network (the claim's /24), TOTP not required by role: no challenge.
	e.clock.Advance(time.Minute)
	home := e.client("192.0.2.77")
	if r := home.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW}); r.str("status") != "ok" {
		t.Fatalf("known network: %s", r.body)
	}

	// New network: step-up.
	away := e.client("198.51.100.20")
	r = away.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if r.str("status") != "totp_required" || away.cookie != "" || r.js["new_location"] != true {
		t.Fatalf("new network: %s", r.body)
	}
	ch := r.str("challenge")
	away.must(401, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: ch, Code: "123456"})
	// The challenge is bound to the network it was issued to.
	e.client("203.0.113.1").must(401, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: ch, Code: e.totpCode(secret)})
	r = away.login("root1", adminPW)
	code := e.totpCode(secret)
	away.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: code})
	away.must(200, "GET", "/api/v1/me", nil)
	if !e.auditHas("auth.login", "ok") {
		t.Fatal("login not audited")
	}
	hist := a.must(200, "GET", "/api/v1/me/history", nil)
	if !contains(hist.body, `"new_location": true`) {
		t.Fatalf("new location not recorded: %s", hist.body)
	}
	// Now known: no second factor from there.
	if r := e.client("198.51.100.99").login("root1", adminPW); r.str("status") != "ok" {
		t.Fatalf("second login from the same /24: %s", r.body)
	}

	// Role enforcement: admins need the code on every login.
	e.setPolicy(a, func(p *auth.Policy) { p.TOTPRoles = []auth.Role{auth.RoleAdmin} })
	r = home.login("root1", adminPW)
	if r.str("status") != "totp_required" {
		t.Fatalf("role-enforced TOTP: %s", r.body)
	}
	// A code already used is refused (replay), a recovery code works once.
	home.must(401, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: code})
	home.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: codes[0].(string)})
	r = home.login("root1", adminPW)
	home.must(401, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: codes[0].(string)})
	if !e.auditHas("account.recovery_code.used", "") {
		t.Error("recovery code use not audited")
	}
}

func TestTOTPRequiredRoleForcesEnrolment(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "carol", Role: auth.RoleAuditor, Password: userPW})
	e.setPolicy(a, func(p *auth.Policy) { p.TOTPRoles = []auth.Role{auth.RoleAuditor} })
	c := e.client("192.0.2.80")
	r := c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "carol", Password: userPW})
	if r.str("restriction") != "enroll-totp" {
		t.Fatalf("restriction: %s", r.body)
	}
	c.must(403, "GET", "/api/v1/audit", nil)
	if r := c.do("GET", "/audit", nil); r.code != 303 || r.hdr.Get("Location") != "/account" {
		t.Fatalf("restricted UI: %d %s", r.code, r.hdr.Get("Location"))
	}
	r = c.must(200, "POST", "/api/v1/me/totp", auth.Proof{Password: userPW})
	c.must(200, "POST", "/api/v1/me/totp/confirm", CodeRequest{Code: e.totpCode(r.str("secret"))})
	c.must(200, "GET", "/api/v1/audit", nil)
}

func TestSessionExpiry(t *testing.T) {
	e, a := claimed(t)
	// Idle: 3600 s without a request ends the session.
	e.clock.Advance(3599 * time.Second)
	a.must(200, "GET", "/api/v1/me", nil)
	e.clock.Advance(3601 * time.Second)
	a.must(401, "GET", "/api/v1/me", nil)
	if r := a.do("GET", "/", nil); r.code != 303 || r.hdr.Get("Location") != "/login" {
		t.Fatalf("expired UI session: %d", r.code)
	}
	// Absolute: 12 h however active.
	b := e.client("192.0.2.50")
	b.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	for i := 0; i < 23; i++ {
		e.clock.Advance(30 * time.Minute)
		b.must(200, "GET", "/api/v1/me", nil)
	}
	e.clock.Advance(30*time.Minute + time.Second)
	b.must(401, "GET", "/api/v1/me", nil)

	// List and revoke.
	c1, c2 := e.client("192.0.2.50"), e.client("192.0.2.50")
	c1.login("root1", adminPW)
	c2.login("root1", adminPW)
	r := c1.must(200, "GET", "/api/v1/me/sessions", nil)
	var ls struct {
		Sessions []auth.Session `json:"sessions"`
		Current  string         `json:"current"`
	}
	json.Unmarshal(r.body, &ls)
	if len(ls.Sessions) != 2 {
		t.Fatalf("sessions: %s", r.body)
	}
	for _, s := range ls.Sessions {
		if s.ID != ls.Current {
			c1.must(200, "DELETE", "/api/v1/me/sessions/"+s.ID, nil)
		}
	}
	c2.must(401, "GET", "/api/v1/me", nil)
	c1.must(200, "POST", "/api/v1/logout", nil)
	c1.must(401, "GET", "/api/v1/me", nil)
}

func TestSessionStoredHashed(t *testing.T) {
	e, a := claimed(t)
	_ = e.db.View(func(tx *store.Tx) error {
		return tx.ForEach("auth.sessions", func(k string, raw []byte) error {
			if a.cookie == "" || k == a.cookie || strings.Contains(string(raw), a.cookie) {
				t.Error("cookie secret stored in clear")
			}
			return nil
		})
	})
}

func TestCSRFAndOrigin(t *testing.T) {
	e, a := claimed(t)
	body := AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "dave", Role: auth.RoleOperator, Password: userPW}
	tok := a.csrf
	// wrong differs from tok in its first character (a fixed "x" equals it
	// for one token in 64).
	wrong := "x" + tok[1:]
	if tok[0] == 'x' {
		wrong = "y" + tok[1:]
	}
	tests := []struct {
		name   string
		csrf   string
		origin string
		hdr    map[string]string
		code   int
		action string
	}{
		{"missing token", "", "", nil, 403, "http.csrf_refused"},
		{"wrong token", wrong, "", nil, 403, "http.csrf_refused"},
		{"foreign origin", tok, "https://evil.example", nil, 403, "http.origin_refused"},
		{"http origin of own name", tok, "http://box.example", nil, 403, "http.origin_refused"},
		{"null origin", tok, "null", nil, 403, "http.origin_refused"},
		{"no origin, cross-site fetch", tok, "-", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, "http.origin_refused"},
		{"own address origin with port", tok, "https://192.0.2.10:8443", nil, 201, ""},
	}
	for _, tc := range tests {
		c := *a
		c.csrf, c.origin, c.header = tc.csrf, tc.origin, tc.hdr
		r := c.do("POST", "/api/v1/accounts", body)
		if r.code != tc.code {
			t.Errorf("%s: %d %s", tc.name, r.code, r.body)
		}
		if tc.action != "" && !e.auditHas(tc.action, "denied") {
			t.Errorf("%s: not logged as %s", tc.name, tc.action)
		}
	}
	// The allowlist admits an integration origin.
	c := *a
	c.origin = "https://crm.example.net"
	c.must(403, "DELETE", "/api/v1/accounts/dave", nil)
	a.must(400, "PUT", "/api/v1/security/origins", OriginsRequest{Origins: []string{"http://crm.example.net"}})
	a.must(200, "PUT", "/api/v1/security/origins", OriginsRequest{Origins: []string{"https://CRM.example.net"}})
	c.must(200, "DELETE", "/api/v1/accounts/dave", nil)
	// Login CSRF: a foreign page cannot log the browser in.
	f := e.client("192.0.2.50")
	f.origin = "https://evil.example"
	f.must(403, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	// Bearer tokens need no CSRF token but still cannot come from a foreign page.
	r := a.must(201, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "ci", Scopes: []string{"admin"}})
	api := e.client("192.0.2.90")
	api.token, api.origin = r.str("token"), "-"
	api.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "erin", Role: auth.RoleAuditor, Password: userPW})
	api.origin = "https://evil.example"
	api.must(403, "DELETE", "/api/v1/accounts/erin", nil)
}

func TestSecurityHeaders(t *testing.T) {
	e, a := claimed(t)
	for _, path := range []string{"/", "/api/v1/me", "/login"} {
		c := a
		if path == "/login" {
			c = e.client("192.0.2.9")
		}
		r := c.must(200, "GET", path, nil)
		h := r.hdr
		csp := h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: CSP allows inline", path)
		}
		for k, v := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
			"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
			if h.Get(k) != v {
				t.Errorf("%s: %s = %q", path, k, h.Get(k))
			}
		}
		if !strings.HasPrefix(h.Get("Strict-Transport-Security"), "max-age=") {
			t.Errorf("%s: no HSTS", path)
		}
		if contains(r.body, "<script>") || contains(r.body, "onclick=") || contains(r.body, "style=") {
			t.Errorf("%s: inline script or style", path)
		}
	}
}

// TestOverTLS runs the real handler behind a TLS listener with a cookie
// jar, as a browser would, and checks the cookie attributes.
func TestOverTLS(t *testing.T) {
	e := newEnv(t)
	e.srv.names = append(e.srv.names, "127.0.0.1")
	ts := httptest.NewTLSServer(e.srv)
	defer ts.Close()
	jar, _ := cookiejar.New(nil)
	hc := ts.Client()
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	post := func(path string, v any, csrf string) *http.Response {
		raw, _ := json.Marshal(v)
		req, _ := http.NewRequest("POST", ts.URL+path, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", ts.URL)
		if csrf != "" {
			req.Header.Set(csrfHeader, csrf)
		}
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := post("/api/v1/claim", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: adminPW}, "")
	if res.StatusCode != 200 {
		t.Fatalf("claim over TLS: %d", res.StatusCode)
	}
	sc := res.Header.Get("Set-Cookie")
	for _, want := range []string{CookieName + "=", "Path=/", "HttpOnly", "Secure", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %q", sc, want)
		}
	}
	if strings.Contains(sc, "Domain=") {
		t.Error("session cookie has a Domain")
	}
	var la loginAnswer
	json.NewDecoder(res.Body).Decode(&la)
	res.Body.Close()
	if got := post("/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "x", Scopes: []string{"read"}}, la.CSRFToken); got.StatusCode != 201 {
		t.Fatalf("token over TLS: %d", got.StatusCode)
	}
	if got := post("/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "x", Scopes: []string{"read"}}, ""); got.StatusCode != 403 {
		t.Fatalf("no CSRF over TLS: %d", got.StatusCode)
	}
	if ts.TLS == nil || ts.Client().Transport.(*http.Transport).TLSClientConfig.MinVersion > tls.VersionTLS13 {
		t.Fatal("not TLS")
	}
}

func TestAuditTamperVisibleInAPI(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bob", Role: auth.RoleOperator, Password: userPW})
	r := a.must(200, "GET", "/api/v1/audit/verify", nil)
	if r.js["ok"] != true {
		t.Fatalf("fresh chain: %s", r.body)
	}
	r = a.must(200, "GET", "/api/v1/audit?action=account.create", nil)
	if contains(r.body, userPW) || !contains(r.body, `"bob"`) {
		t.Fatalf("audit query: %s", r.body)
	}
	e.db.Update(func(tx *store.Tx) error {
		var m map[string]any
		tx.Get("audit.log", fmt.Sprintf("%020d", 2), &m)
		m["actor"] = "someone"
		return tx.Put("audit.log", fmt.Sprintf("%020d", 2), m)
	})
	r = a.must(200, "GET", "/api/v1/audit/verify", nil)
	if r.js["ok"] != false || !strings.Contains(r.str("error"), "entry 2") {
		t.Fatalf("tamper not detected: %s", r.body)
	}
	if p := a.must(200, "GET", "/", nil); !contains(p.body, "BROKEN") {
		t.Error("dashboard does not flag the broken chain")
	}
}

func TestAuditExport(t *testing.T) {
	_, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bob", Role: auth.RoleOperator, Password: userPW})
	r := a.must(200, "GET", "/api/v1/audit/export?format=csv&actor=root1", nil)
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(recs) < 3 || recs[0][0] != "seq" {
		t.Fatalf("csv export: %v %q", err, r.body)
	}
	r = a.must(200, "GET", "/api/v1/audit/export?format=jsonl", nil)
	if n := bytes.Count(r.body, []byte("\n")); n < 2 {
		t.Fatalf("jsonl export: %s", r.body)
	}
	a.must(400, "GET", "/api/v1/audit/export?format=xml", nil)
	a.must(400, "GET", "/api/v1/audit?limit=0", nil)
	a.must(400, "GET", "/api/v1/audit?since=yesterday", nil)
	a.must(200, "GET", "/audit?actor=root1&outcome=ok", nil)
}

func TestPasswordChangeRevokesOtherSessions(t *testing.T) {
	e, a := claimed(t)
	other := e.client("192.0.2.50")
	other.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	a.must(422, "POST", "/api/v1/me/password", PasswordRequest{Proof: auth.Proof{Password: "wrong-wrong-1"}, New: userPW})
	a.must(422, "POST", "/api/v1/me/password", PasswordRequest{Proof: auth.Proof{Password: adminPW}, New: "root1-Pass-77!"})
	a.must(200, "POST", "/api/v1/me/password", PasswordRequest{Proof: auth.Proof{Password: adminPW}, New: userPW})
	other.must(401, "GET", "/api/v1/me", nil)
	a.must(200, "GET", "/api/v1/me", nil)
	e.client("192.0.2.50").must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: userPW})
}

func TestPasswordMaxAge(t *testing.T) {
	e, a := claimed(t)
	e.setPolicy(a, func(p *auth.Policy) { p.MaxAgeDays = 180 })
	e.clock.Advance(181 * 24 * time.Hour)
	c := e.client("192.0.2.50")
	r := c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if r.str("restriction") != "change-password" {
		t.Fatalf("expired password: %s", r.body)
	}
	c.must(403, "GET", "/api/v1/accounts", nil)
	c.must(200, "POST", "/api/v1/me/password", PasswordRequest{Proof: auth.Proof{Password: adminPW}, New: userPW})
	c.must(200, "GET", "/api/v1/accounts", nil)
}

func TestTokens(t *testing.T) {
	e, a := claimed(t)
	a.must(400, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "x", Scopes: []string{"root"}})
	a.must(400, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "x"})
	r := a.must(201, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "monitoring", Scopes: []string{"read"}})
	secret := r.str("token")
	info, _ := r.js["info"].(map[string]any)
	if exp, _ := time.Parse(time.RFC3339, info["expires"].(string)); !exp.Equal(e.clock.Now().Add(30 * 24 * time.Hour)) {
		t.Fatalf("default expiry %v", info["expires"])
	}
	api := e.client("192.0.2.91")
	api.token = secret
	api.must(200, "GET", "/api/v1/audit", nil)
	api.must(403, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "x1", Role: auth.RoleOperator, Password: userPW}) // scope read
	api.must(403, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "y", Scopes: []string{"admin"}})                       // tokens never mint tokens
	bad := e.client("192.0.2.91")
	bad.token = secret[:len(secret)-2] + map[bool]string{true: "AB", false: "BA"}[strings.HasSuffix(secret, "A")]
	bad.must(401, "GET", "/api/v1/status", nil)
	_ = e.db.View(func(tx *store.Tx) error {
		return tx.ForEach("auth.tokens", func(k string, raw []byte) error {
			if strings.Contains(string(raw), secret) || k == secret {
				t.Error("token stored in clear")
			}
			return nil
		})
	})
	e.clock.Advance(30*24*time.Hour + time.Second)
	api.must(401, "GET", "/api/v1/status", nil)
	a.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	r = a.must(200, "GET", "/api/v1/me/tokens", nil)
	toks := r.js["tokens"].([]any)
	id := toks[0].(map[string]any)["id"].(string)
	a.must(200, "DELETE", "/api/v1/me/tokens/"+id, nil)
	a.must(404, "DELETE", "/api/v1/me/tokens/"+id, nil)
}
