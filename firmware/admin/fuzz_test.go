package admin

import (
	"encoding/json"
	"errors"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzDecodeBody: every API request type decodes any bytes without panic,
// and anything it accepts is a single JSON object.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"username":"a","password":"b"}`, `{"setup_code":"x"} {}`, `[]`, `{"scopes":["read"],"days":3}`,
		`{"origins":["https://a"]}`, `{"zones":[{"name":"a","prefixes":["10.0.0.0/8"]}],"rules":[{"service":"ssh","zones":["a"]}]}`, `{"id":"00"}`, `{"version":0,"country":"DE","default_classes":["internal"],"trunks":[{"name":"t","host":"192.0.2.1:5060","transport":"udp","auth":"ip","peers":["192.0.2.1/32"]}],"routes":[{"prefix":"0","trunk":"t"}],"burst_window":600000000000}`, `{"role":"admin"}`, `{"password_level":"high","min_length":12}`, "\x00", `{"a":1}`,
		`{"version":0,"tls_min":"1.2","tls_max":"1.3","allowed_zones":["10.0.0.0/8"],"scanner_user_agents":["sipvicious"],"guard":{"rate_window":10000000000,"rate_limit":1000}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		targets := []any{&ClaimRequest{}, &LoginRequest{}, &TOTPLoginRequest{}, &PasswordRequest{}, &CodeRequest{},
			&TokenRequest{}, &AccountRequest{}, &RoleRequest{}, &OriginsRequest{}, &CertificateRequest{}, &TLSSettings{},
			&KeyLogRequest{}, &ExtensionRequest{}, &UnbanRequest{}, &PolicyRequest{}, &ConfirmRequest{}, &TelephonyRequest{}, &SIPSettingsRequest{}, &RecoverRequest{}, &auth.Proof{}}
		for _, v := range targets {
			err := decodeBody(b, v)
			if err != nil && !errors.Is(err, errBadRequest) {
				t.Fatalf("unexpected error class: %v", err)
			}
			if err == nil && !strings.HasPrefix(strings.TrimLeft(string(b), " \t\r\n"), "{") && strings.TrimSpace(string(b)) != "null" {
				t.Fatalf("accepted non-object %q", b)
			}
			if err == nil {
				sameCaseKeys(t, b, v)
			}
		}
	})
}

// sameCaseKeys fails if an accepted body has a key that the decoded value
// spells in another case (encoding/json would have matched it).
func sameCaseKeys(t *testing.T, body []byte, v any) {
	t.Helper()
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var in, back any
	if json.Unmarshal(body, &in) != nil || json.Unmarshal(out, &back) != nil {
		t.Fatalf("accepted body is not JSON: %q", body)
	}
	var walk func(a, b any)
	walk = func(a, b any) {
		am, ok1 := a.(map[string]any)
		bm, ok2 := b.(map[string]any)
		if !ok1 || !ok2 {
			return
		}
		for k, av := range am {
			for bk, bv := range bm {
				if strings.EqualFold(k, bk) && k != bk {
					t.Fatalf("accepted key %q for field %q in %q", k, bk, body)
				}
				if k == bk {
					walk(av, bv)
				}
			}
		}
	}
	walk(in, back)
}

// FuzzNormalizeOrigin: accepted allowlist entries are plain https origins.
func FuzzNormalizeOrigin(f *testing.F) {
	for _, s := range []string{"https://a.example", "http://a", "https://a/b", "https://user@a", "https://*", "HTTPS://A:8443"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := normalizeOrigin(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(o, "https://") || strings.ContainsAny(o[8:], "/?#@ *") || o != strings.ToLower(o) {
			t.Fatalf("accepted %q as %q", s, o)
		}
	})
}

// FuzzAuditFilter: query strings from the audit page never panic and
// accepted limits stay bounded.
func FuzzAuditFilter(f *testing.F) {
	for _, s := range []string{"actor=a&limit=5", "since=2026-01-02", "until=2026-01-02T03:04:05Z", "limit=-1", "since=%ff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r := httptest.NewRequest("GET", "/audit", nil)
		r.URL.RawQuery = q
		fl, err := auditFilter(r)
		if err == nil && (fl.Limit < 1 || fl.Limit > 1000) {
			t.Fatalf("limit %d accepted", fl.Limit)
		}
	})
}

// FuzzLoginEndpoint sends arbitrary bodies to the public endpoints of a
// claimed box: no panic, no 5xx.
func FuzzLoginEndpoint(f *testing.F) {
	paths := []string{"/api/v1/login", "/api/v1/login/totp", "/api/v1/claim"}
	f.Add(uint8(0), []byte(`{"username":"root1","password":"x"}`))
	f.Add(uint8(1), []byte(`{"challenge":"abc","code":"123456"}`))
	f.Add(uint8(2), []byte(`{"setup_code":"K7QD-M3XP-W9RT","username":"x","password":"y"}`))
	e, _ := claimed(f)
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := paths[int(which)%len(paths)]
		e.t = t
		c := e.client("192.0.2.200")
		r := c.do("POST", path, string(body))
		if r.code >= 500 && r.code != 503 {
			t.Fatalf("%s %q: %d %s", path, body, r.code, r.body)
		}
	})
}
