package admin

import (
	"testing"
)

// TestStrictBodies: the API refuses what encoding/json alone would take
// (a key in another case, a repeated key, data after the object) with
// problem+json naming the field, and the refused claim changes nothing.
func TestStrictBodies(t *testing.T) {
	e := newEnv(t)
	c := e.client("192.0.2.50")
	for _, tc := range []struct {
		name, body, field, want string
	}{
		{"key in another case", `{"setup_code":"` + setupCode + `","username":"root1","PassWord":"` + adminPW + `"}`, "/PassWord", "unknown field"},
		{"repeated key", `{"setup_code":"` + setupCode + `","username":"root1","username":"evil","password":"` + adminPW + `"}`, "/username", "duplicate field"},
		{"trailing object", `{"setup_code":"` + setupCode + `","username":"root1","password":"` + adminPW + `"} {}`, "", "after the JSON value"},
	} {
		r := c.do("POST", "/api/v1/claim", tc.body)
		if r.code != 400 || r.hdr.Get("Content-Type") != "application/problem+json" || !contains(r.body, tc.want) {
			t.Errorf("%s: %d %s %s", tc.name, r.code, r.hdr.Get("Content-Type"), r.body)
			continue
		}
		if got := r.str("field"); got != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, got, tc.field)
		}
	}
	// Nothing was claimed by the refused bodies.
	c.must(200, "POST", "/api/v1/claim", ClaimRequest{SetupCode: setupCode, Username: "root1", Password: adminPW})
}
