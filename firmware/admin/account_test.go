package admin

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
)

// auditEntry finds the newest audit entry of action (and outcome, if set).
func (e *env) auditEntry(action, outcome string) (audit.Entry, bool) {
	e.t.Helper()
	l, err := e.srv.audit.Query(audit.Filter{Action: action, Outcome: outcome})
	if err != nil {
		e.t.Fatal(err)
	}
	for i := len(l) - 1; i >= 0; i-- {
		if l[i].Action == action {
			return l[i], true
		}
	}
	return audit.Entry{}, false
}

// enrol gives the client's account a second factor and returns its secret.
func (e *env) enrol(c *client, pw string) string {
	e.t.Helper()
	secret := c.must(200, "POST", "/api/v1/me/totp", auth.Proof{Password: pw}).str("secret")
	c.must(200, "POST", "/api/v1/me/totp/confirm", CodeRequest{Code: e.totpCode(secret)})
	e.clock.Advance(time.Minute) // the next code is a fresh one
	return secret
}

// TestStolenSessionCannotTakeOver: a session alone (no password, no
// current code) changes no credential; three failed re-authentications
// lock the session's network out of the account and end the session; the
// rightful admin, who has a second factor, still logs in from that network
// with both factors and can then replace the factor with the current code.
func TestStolenSessionCannotTakeOver(t *testing.T) {
	e, a := claimed(t)
	secret := e.enrol(a, adminPW)
	thief := a // the stolen cookie, used from the admin's own network

	tests := []struct {
		name, method, path string
		body               any
	}{
		{"replace the second factor without any proof", "POST", "/api/v1/me/totp", auth.Proof{}},
		{"change the password knowing it but not the code", "POST", "/api/v1/me/password", PasswordRequest{Proof: auth.Proof{Password: adminPW}, New: "Qw8!zr5#Nb2$ty"}},
		{"create a token with a guessed password", "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: "guess-guess-1", Code: "000000"}, Name: "x", Scopes: []string{"admin"}}},
	}
	for i, tt := range tests {
		r := thief.do(tt.method, tt.path, tt.body)
		if r.code != 422 && r.code != 400 {
			t.Fatalf("%s: %d %s", tt.name, r.code, r.body)
		}
		if r.code == 422 && !contains(r.body, "current_password") {
			t.Errorf("%s: the problem does not name the fields: %s", tt.name, r.body)
		}
		if i < len(tests)-1 {
			thief.must(200, "GET", "/api/v1/me", nil)
		}
	}
	// The third failure locked 192.0.2.0/24 out of root1 and ended the session.
	thief.must(401, "GET", "/api/v1/me", nil)
	if ent, ok := e.auditEntry("auth.session.revoke", "warning"); !ok || ent.Target != "root1" {
		t.Fatalf("session end not audited: %+v", ent)
	}
	if ent, ok := e.auditEntry("account.totp.begin", "denied"); !ok || ent.Actor != "root1" || ent.Source != "192.0.2.50" {
		t.Fatalf("refused re-authentication not audited with who and where: %+v", ent)
	}
	if ent, ok := e.auditEntry("auth.lockout", "warning"); !ok || !contains([]byte(ent.Detail), "192.0.2.0/24") {
		t.Fatalf("lockout not audited with its network: %+v", ent)
	}

	// Nothing changed: the old password and the old second factor still
	// work, from the locked network too, both at once.
	admin := e.client("192.0.2.51")
	r := admin.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if r.str("status") != "totp_required" {
		t.Fatalf("locked network, TOTP holder: %s", r.body)
	}
	admin.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: e.totpCode(secret)})

	// With the current code, the admin replaces the factor and the codes.
	e.clock.Advance(time.Minute)
	admin.must(200, "POST", "/api/v1/me/totp", auth.Proof{Password: adminPW, Code: e.totpCode(secret)})
	e.clock.Advance(time.Minute)
	r = admin.must(200, "POST", "/api/v1/me/totp/recovery", auth.Proof{Password: adminPW, Code: e.totpCode(secret)})
	if codes, _ := r.js["recovery_codes"].([]any); len(codes) != 10 {
		t.Fatalf("new recovery codes: %s", r.body)
	}
	if _, ok := e.auditEntry("account.recovery_codes", "warning"); !ok {
		t.Error("recovery code replacement not audited")
	}
}

// TestReauthRequiredPerRoute: every credential, token, account and role
// change refuses a caller without the current password (an admin without
// a second factor here), changes nothing, and accepts it with it.
func TestReauthRequiredPerRoute(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "bob", Role: auth.RoleOperator, Password: userPW})
	bob := e.client("192.0.2.60")
	bob.must(200, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})
	bobSecret := e.enrol(bob, userPW)
	tests := []struct {
		name, method, path string
		without, with      any
		check              func() bool // the change did not happen
	}{
		{"role", "PUT", "/api/v1/accounts/bob/role", RoleRequest{Role: auth.RoleAdmin}, RoleRequest{Proof: auth.Proof{Password: adminPW}, Role: auth.RoleAuditor},
			func() bool { i, _ := e.srv.auth.Account("bob"); return i.Role == auth.RoleOperator }},
		{"new admin account", "POST", "/api/v1/accounts", AccountRequest{Username: "mallory", Role: auth.RoleAdmin, Password: userPW},
			AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "carol", Role: auth.RoleAuditor, Password: userPW},
			func() bool { _, err := e.srv.auth.Account("mallory"); return err != nil }},
		{"reset another's 2FA", "POST", "/api/v1/accounts/bob/totp/reset", auth.Proof{}, auth.Proof{Password: adminPW},
			func() bool { i, _ := e.srv.auth.Account("bob"); return i.TOTP }},
		{"token", "POST", "/api/v1/me/tokens", TokenRequest{Name: "t", Scopes: []string{"read"}}, TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "t", Scopes: []string{"read"}},
			func() bool { l, _ := e.srv.auth.Tokens("root1"); return len(l) == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh admin session per route: two failures never lock.
			c := e.client("192.0.2.50")
			c.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
			if r := c.do(tt.method, tt.path, tt.without); r.code != 422 {
				t.Fatalf("without proof: %d %s", r.code, r.body)
			}
			if !tt.check() {
				t.Fatal("refused request changed something")
			}
			if r := c.do(tt.method, tt.path, tt.with); r.code/100 != 2 {
				t.Fatalf("with proof: %d %s", r.code, r.body)
			}
		})
	}
	_ = bobSecret
}

// TestLockoutPerSourceNetwork: three failures lock the failing source's
// network (IPv4 /24, IPv6 /64) out of the account for an hour; the admin
// from another network is not locked out.
func TestLockoutPerSourceNetwork(t *testing.T) {
	tests := []struct{ attacker, sameNet, otherNet string }{
		{"203.0.113.7", "203.0.113.9", "192.0.2.77"},
		{"2001:db8:1:2::1", "2001:db8:1:2::99", "2001:db8:1:3::1"},
	}
	for _, tt := range tests {
		t.Run(tt.attacker, func(t *testing.T) {
			e, _ := claimed(t)
			x := e.client(tt.attacker)
			for range 3 {
				x.must(401, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: "guess-guess-1"})
			}
			if r := e.client(tt.otherNet).login("root1", adminPW); r.code != 200 {
				t.Fatalf("admin from %s after failures from %s: %d %s", tt.otherNet, tt.attacker, r.code, r.body)
			}
			if r := e.client(tt.sameNet).login("root1", adminPW); r.code != 401 {
				t.Fatalf("right password from the locked network %s: %d", tt.sameNet, r.code)
			}
			info, _ := e.srv.auth.Account("root1")
			if !info.Locked || len(info.LockedNetworks) != 1 {
				t.Fatalf("account info %+v", info)
			}
			e.clock.Advance(time.Hour + time.Second)
			e.client(tt.sameNet).must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
		})
	}
}

// TestManySourcesCannotGuess: failures spread over many networks (one
// each, never a per-network lock) put the account under attack: a new
// network is refused even with the right password (no second factor), a
// network the admin used before is not; a TOTP holder on a new network
// gets a challenge whatever the password, so the password cannot be told
// right from wrong, and gets in only with both.
func TestManySourcesCannotGuess(t *testing.T) {
	e, a := claimed(t)
	spray := func(from int) {
		for i := range auth.AttackFailures {
			// 401, or a challenge for a TOTP holder under attack
			e.client(fmt.Sprintf("2001:db8:%x::1", from+i)).login("root1", "guess-guess-1")
		}
	}
	spray(0x100)
	if info, _ := e.srv.auth.Account("root1"); !info.UnderAttack || info.Locked {
		t.Fatalf("after %d failures from %d networks: %+v", auth.AttackFailures, auth.AttackFailures, info)
	}
	if _, ok := e.auditEntry("auth.under_attack", "warning"); !ok {
		t.Error("attack not audited")
	}
	// The right password from yet another new network: refused.
	if r := e.client("2001:db8:ffff::1").login("root1", adminPW); r.code != 401 {
		t.Fatalf("new network under attack, no second factor: %d %s", r.code, r.body)
	}
	// From the claim's network: in.
	home := e.client("192.0.2.99")
	home.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})

	secret := e.enrol(home, adminPW)
	spray(0x200)
	away := e.client("198.51.100.20")
	wrong := away.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: "guess-guess-2"})
	right := away.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if wrong.str("status") != "totp_required" || right.str("status") != "totp_required" {
		t.Fatalf("answers differ: wrong %s, right %s", wrong.body, right.body)
	}
	away.must(401, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: wrong.str("challenge"), Code: e.totpCode(secret)})
	e.clock.Advance(time.Minute)
	away.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: right.str("challenge"), Code: e.totpCode(secret)})
	_ = a
}

// TestConsoleRecovery: an admin without a second factor, refused on a new
// network while the account is under attack, clears the lockout with the
// setup code from the console; a wrong code is refused; both are audited
// with the source, and the recovering network stays trusted.
func TestConsoleRecovery(t *testing.T) {
	e, _ := claimed(t)
	spray := func(from int) {
		for i := range auth.AttackFailures {
			e.client(fmt.Sprintf("2001:db8:%x::1", from+i)).login("root1", "guess-guess-1")
		}
	}
	spray(0x100)
	admin := e.client("198.51.100.20")
	for range 3 { // and its own network gets locked while it tries
		admin.must(401, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	}
	admin.must(401, "POST", "/api/v1/recover", RecoverRequest{SetupCode: "AAAA-BBBB-CCCC", Username: "root1"})
	if ent, ok := e.auditEntry("account.recover", "denied"); !ok || ent.Source != "198.51.100.20" {
		t.Fatalf("refused recovery not audited: %+v", ent)
	}
	admin.must(200, "POST", "/api/v1/recover", RecoverRequest{SetupCode: setupCode, Username: "root1"})
	ent, ok := e.auditEntry("account.recover", "warning")
	if !ok || ent.Source != "198.51.100.20" || ent.Target != "root1" || ent.Actor != "console-code" {
		t.Fatalf("recovery not audited: %+v", ent)
	}
	admin.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	spray(0x200) // the attack goes on
	e.client("198.51.100.21").must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if r := e.client("203.0.113.5").login("root1", adminPW); r.code != 401 {
		t.Fatalf("other new network under attack: %d", r.code)
	}
}
