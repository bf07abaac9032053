package phonehome_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// newTestServer is a licensed on a fresh database of backend b with a new
// signing key and admin token "tok"; its clock reads *now.
func newTestServer(t *testing.T, b backend, now *time.Time) (*phonehome.Server, ed25519.PublicKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s, err := phonehome.NewWithStore(openStore(t, b.newDB(t)), priv, "tok", func() time.Time { return *now }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s, pub
}

func TestAdminAndCheckin(t *testing.T) {
	forEachBackend(t, testAdminAndCheckin)
}

func testAdminAndCheckin(t *testing.T, b backend) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s, pub := newTestServer(t, b, &now)
	h := s.Handler()
	do := func(method, path, token, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	checkin, _ := json.Marshal(license.Request{V: 1, Nonce: strings.Repeat("ab", 16), Serial: "S1", InstallID: "I1",
		Fingerprint: license.Fingerprint("hw"), Firmware: "2.0.0", LicenceID: "L1", Load: license.Load{CPUPercent: 95}})
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"no token", "PUT", "/admin/licences/L1", "", `{}`, http.StatusUnauthorized},
		{"wrong token", "PUT", "/admin/licences/L1", "tok2", `{}`, http.StatusUnauthorized},
		{"put licence", "PUT", "/admin/licences/L1", "tok", `{"valid_until":"2027-01-01T00:00:00Z","max_ext":10}`, http.StatusOK},
		{"bad licence json", "PUT", "/admin/licences/L2", "tok", `{"max_ext":`, http.StatusBadRequest},
		// Strict bodies: encoding/json alone would take each of these.
		{"licence unknown field", "PUT", "/admin/licences/L2", "tok", `{"max_ext":10,"max_extensions":99}`, http.StatusBadRequest},
		{"licence key in another case", "PUT", "/admin/licences/L2", "tok", `{"Max_Ext":99}`, http.StatusBadRequest},
		{"licence repeated key", "PUT", "/admin/licences/L2", "tok", `{"max_ext":10,"max_ext":99}`, http.StatusBadRequest},
		{"licence trailing data", "PUT", "/admin/licences/L2", "tok", `{"max_ext":10} {}`, http.StatusBadRequest},
		{"advisory key in another case", "PUT", "/admin/advisories/A3", "tok", `{"Firmware":["2.0.0"]}`, http.StatusBadRequest},
		{"checkin repeated key", "POST", license.CheckinPath, "", strings.Replace(string(checkin), `{`, `{"v":9,`, 1), http.StatusBadRequest},
		{"get refused licence", "GET", "/admin/licences/L2", "tok", "", http.StatusNotFound},
		{"put advisory", "PUT", "/admin/advisories/A1", "tok", `{"firmware":["2.0.0"],"severity":"high","message":"m","disable":["webrtc"]}`, http.StatusOK},
		{"oversize admin body", "PUT", "/admin/advisories/A2", "tok", `{"message":"` + strings.Repeat("x", 20000) + `"}`, http.StatusBadRequest},
		{"checkin", "POST", license.CheckinPath, "", string(checkin), http.StatusOK},
		{"checkin oversize", "POST", license.CheckinPath, "", string(checkin) + strings.Repeat(" ", license.MaxRequestBytes), http.StatusRequestEntityTooLarge},
		{"checkin unknown field", "POST", license.CheckinPath, "", `{"v":1,"extra":1}`, http.StatusBadRequest},
		{"checkin invalid", "POST", license.CheckinPath, "", `{"v":1,"nonce":"zz"}`, http.StatusBadRequest},
		{"checkin wrong method", "GET", license.CheckinPath, "", "", http.StatusMethodNotAllowed},
		{"get licence", "GET", "/admin/licences/L1", "tok", "", http.StatusOK},
		{"get missing licence", "GET", "/admin/licences/L9", "tok", "", http.StatusNotFound},
	}
	for _, tt := range tests {
		if rec := do(tt.method, tt.path, tt.token, tt.body); rec.Code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, rec.Code, rec.Body, tt.want)
		}
	}
	// The check-in answer is signed, carries the advisory and the perf verdict.
	rec := do("POST", license.CheckinPath, "", string(checkin))
	resp, err := license.ParseResponse(rec.Body.Bytes(), pub)
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != license.StatusOK || len(resp.Advisories) != 1 || resp.Advisories[0].Disable[0] != "webrtc" ||
		resp.Perf != license.PerfTooSmall || resp.ServerTime != now.Unix() || resp.Entitlements.MaxExtensions != 10 {
		t.Fatalf("response %+v", resp)
	}
	rec = do("GET", "/admin/licences/L1/checkins", "tok", "")
	var got []phonehome.Checkin
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || len(got) != 2 || got[0].Bytes != len(checkin) {
		t.Fatalf("checkins %v %s", err, rec.Body)
	}
	if bytes.Contains(rec.Body.Bytes(), []byte("nonce")) {
		t.Fatal("nonce stored with check-in")
	}
}
