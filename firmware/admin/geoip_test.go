package admin

import (
	"bytes"
	"errors"
	"mime/multipart"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
)

const geoCSV = "192.0.2.0,192.0.2.255,DE\n198.51.100.0,198.51.100.255,FR\n2001:db8::,2001:db8:ffff:ffff:ffff:ffff:ffff:ffff,NL\n"

func multipartBody(t testing.TB, field, name string, data []byte) (string, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("note", "ignored")
	fw, err := mw.CreateFormFile(field, name)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(data)
	mw.Close()
	return buf.String(), mw.FormDataContentType()
}

func TestGeoIPUploadAndStepUp(t *testing.T) {
	e, a := claimed(t)
	if r := a.must(200, "GET", "/api/v1/security/geoip", nil); r.js["loaded"] != false {
		t.Fatalf("fresh box: %s", r.body)
	}

	// Raw body, then a multipart form as the security page sends it.
	a.header = map[string]string{"Content-Type": "text/csv"}
	r := a.must(200, "PUT", "/api/v1/security/geoip", geoCSV)
	if !contains(r.body, `"countries": 3`) || !contains(r.body, `"format": "dbip-csv"`) {
		t.Fatalf("upload: %s", r.body)
	}
	body, ct := multipartBody(t, "file", "dbip-country-lite.csv", []byte(geoCSV+"203.0.113.0,203.0.113.255,JP\n"))
	a.header = map[string]string{"Content-Type": ct}
	r = a.must(200, "PUT", "/api/v1/security/geoip", body)
	if !contains(r.body, `"countries": 4`) {
		t.Fatalf("multipart upload: %s", r.body)
	}
	before := a.must(200, "GET", "/api/v1/security/geoip", nil)

	// Refused uploads say why and change nothing.
	for _, tc := range []struct{ ct, body, want string }{
		{"text/csv", "192.0.2.0,192.0.2.255,Germany\n", "line 1: country"},
		{"text/csv", "network,geoname_id,registered_country_geoname_id\n1.0.0.0/24,1,1\n", "GeoLite2-Country-CSV zip"},
		{"application/zip", "PK\x03\x04broken", "zip"},
		{"text/csv", "", "empty upload"},
		{ct, "--" + ct[len("multipart/form-data; boundary="):] + "--\r\n", `no file part named \"file\"`},
	} {
		a.header = map[string]string{"Content-Type": tc.ct}
		r := a.must(400, "PUT", "/api/v1/security/geoip", tc.body)
		if !contains(r.body, tc.want) {
			t.Errorf("refusal of %.30q: %s, want %q", tc.body, r.body, tc.want)
		}
	}
	a.header = nil
	if after := a.must(200, "GET", "/api/v1/security/geoip", nil); !bytes.Equal(after.body, before.body) {
		t.Fatalf("a refused upload changed the database:\n%s\n%s", before.body, after.body)
	}
	if !e.auditHas("security.geoip.upload", "failed") || !e.auditHas("security.geoip.upload", "ok") {
		t.Error("uploads not audited")
	}
	if p := a.must(200, "GET", "/security", nil); !contains(p.body, "4 countries") || !contains(p.body, `enctype="multipart/form-data"`) {
		t.Errorf("security page lacks the GeoIP state: %s", p.body)
	}

	// With a second factor enrolled, a login from a new country steps up
	// and the country shows in the login history and the audit log.
	secret := a.must(200, "POST", "/api/v1/me/totp", auth.Proof{Password: adminPW}).str("secret")
	a.must(200, "POST", "/api/v1/me/totp/confirm", CodeRequest{Code: e.totpCode(secret)})
	e.clock.Advance(60e9)
	away := e.client("198.51.100.20")
	r = away.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if r.str("status") != "totp_required" {
		t.Fatalf("login from a new country: %s", r.body)
	}
	away.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: r.str("challenge"), Code: e.totpCode(secret)})
	hist := a.must(200, "GET", "/api/v1/me/history", nil)
	if !contains(hist.body, `"country": "FR"`) || !contains(hist.body, `"new_country": true`) {
		t.Fatalf("history: %s", hist.body)
	}
	if l := a.must(200, "GET", "/api/v1/audit?action=auth.login&outcome=ok", nil); !contains(l.body, "from a new country FR") {
		t.Fatalf("audit: %s", l.body)
	}

	// Only security-write may change it. (root1 has a second factor now:
	// creating an account asks for it.)
	e.clock.Advance(60e9)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)}, Username: "aud1", Role: auth.RoleAuditor, Password: userPW})
	aud := e.client("192.0.2.60")
	aud.must(200, "POST", "/api/v1/login", LoginRequest{Username: "aud1", Password: userPW})
	aud.must(200, "GET", "/api/v1/security/geoip", nil)
	aud.must(403, "DELETE", "/api/v1/security/geoip", nil)

	a.must(200, "DELETE", "/api/v1/security/geoip", nil)
	a.must(404, "DELETE", "/api/v1/security/geoip", nil)
	if r := a.must(200, "GET", "/api/v1/security/geoip", nil); r.js["loaded"] != false {
		t.Fatalf("after delete: %s", r.body)
	}
}

// FuzzGeoIPUpload drives the upload reader (multipart framing) and the
// parsers with arbitrary bodies: every refusal is a bad request or a
// GeoIP refusal, never a panic.
func FuzzGeoIPUpload(f *testing.F) {
	body, ct := multipartBody(f, "file", "x.csv", []byte(geoCSV))
	f.Add(ct, body)
	f.Add("text/csv", geoCSV)
	f.Add("application/zip", "PK\x03\x04")
	f.Add("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n1.0.0.0,1.0.0.1,AU\r\n--x--\r\n")
	f.Fuzz(func(t *testing.T, ct, body string) {
		r := httptest.NewRequest("PUT", "/api/v1/security/geoip", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		data, err := readGeoIPUpload(httptest.NewRecorder(), r)
		if err != nil {
			if !errors.Is(err, errBadRequest) {
				t.Fatalf("read error class: %v", err)
			}
			return
		}
		if _, err := auth.ParseGeoIP(data, time.Unix(0, 0)); err != nil && !errors.Is(err, auth.ErrGeoIP) {
			t.Fatalf("parse error class: %v", err)
		}
	})
}
