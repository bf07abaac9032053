package admin

import (
	"net/http"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

// TestRoleMatrix sends every route of the table as every role (browser
// session) and as scoped API tokens, and checks that exactly the
// combinations the role table forbids are answered 403.
func TestRoleMatrix(t *testing.T) {
	e, admin := claimed(t)
	for _, u := range []struct {
		name string
		role auth.Role
	}{{"op1", auth.RoleOperator}, {"aud1", auth.RoleAuditor}} {
		admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: u.name, Role: u.role, Password: userPW})
	}
	login := func(user, pw string) *client {
		c := e.client("192.0.2.50")
		c.must(200, "POST", "/api/v1/login", LoginRequest{Username: user, Password: pw})
		return c
	}
	token := func(scope string) *client {
		r := admin.must(201, "POST", "/api/v1/me/tokens", TokenRequest{Proof: auth.Proof{Password: adminPW}, Name: "m-" + scope, Scopes: []string{scope}})
		c := e.client("192.0.2.99")
		c.token, c.origin = r.str("token"), "-"
		return c
	}
	type principal struct {
		name  string
		c     *client
		relog func() *client
		p     auth.Principal
		pw    string // the account's password, for routes that re-authenticate
	}
	var ps []principal
	for _, u := range []struct {
		name, pw string
		role     auth.Role
	}{{"root1", adminPW, auth.RoleAdmin}, {"op1", userPW, auth.RoleOperator}, {"aud1", userPW, auth.RoleAuditor}} {
		u := u
		ps = append(ps, principal{name: string(u.role), c: login(u.name, u.pw), relog: func() *client { return login(u.name, u.pw) },
			p: auth.Principal{Username: u.name, Role: u.role, SessionID: "s"}, pw: u.pw})
	}
	for _, sc := range auth.Scopes {
		ps = append(ps, principal{name: "admin token " + sc, c: token(sc), p: auth.Principal{Username: "root1", Role: auth.RoleAdmin, TokenID: "t", Scopes: []string{sc}}, pw: adminPW})
	}
	checked := 0
	for _, rt := range e.srv.routes {
		if rt.public || rt.owner { // owner routes: TestOwnerSessionReachesNothingElse
			continue
		}
		path := strings.NewReplacer("{id}", "00000000", "{name}", "nobody", "{$}", "").Replace(rt.path)
		for i := range ps {
			pr := &ps[i]
			var body any
			if isStateChange(rt.method) && rt.method != "DELETE" {
				// The right current password: routes that re-authenticate
				// get past it to their permission and input checks; the
				// others refuse the unknown field (400, not 403).
				body = `{"current_password":"` + pr.pw + `"}`
			}
			r := pr.c.do(rt.method, path, body)
			want := pr.p.Can(rt.perm)
			if got := r.code != http.StatusForbidden; got != want {
				t.Errorf("%s %s as %s: %d %s (allowed=%v)", rt.method, rt.path, pr.name, r.code, r.body, want)
			}
			if r.code == http.StatusUnauthorized || r.code >= 500 {
				t.Errorf("%s %s as %s: unexpected %d %s", rt.method, rt.path, pr.name, r.code, r.body)
			}
			if rt.path == "/api/v1/logout" && pr.relog != nil && r.code == 200 {
				pr.c = pr.relog()
			}
			checked++
		}
	}
	if checked < 30*len(ps) {
		t.Fatalf("only %d route×principal checks", checked)
	}
	if !e.auditHas("http.forbidden", "denied") {
		t.Error("forbidden requests not audited")
	}
}

// TestRoleTable pins the role table itself so a change is deliberate.
func TestRoleTable(t *testing.T) {
	want := map[auth.Role]string{
		auth.RoleAdmin:    "status.read self telephony.read telephony.write users.read users.write security.read security.write audit.read system.write metrics.read",
		auth.RoleOperator: "status.read self telephony.read telephony.write",
		auth.RoleAuditor:  "status.read self telephony.read users.read security.read audit.read metrics.read",
	}
	for role, perms := range want {
		var got []string
		for _, p := range auth.Permissions {
			if auth.RoleCan(role, p) {
				got = append(got, string(p))
			}
		}
		if strings.Join(got, " ") != perms {
			t.Errorf("%s: %v", role, got)
		}
	}
}
