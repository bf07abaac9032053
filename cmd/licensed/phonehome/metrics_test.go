package phonehome_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// TestMetrics: /admin/metrics needs the admin token and counts check-ins
// by result and flags by kind, a flag once however often the box returns.
func TestMetrics(t *testing.T) {
	forEachBackend(t, testMetrics)
}

func testMetrics(t *testing.T, b backend) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s, _ := newTestServer(t, b, &now)
	if err := s.PutLicence(phonehome.Licence{ID: "L1", ValidUntil: now.AddDate(1, 0, 0)}); err != nil {
		t.Fatal(err)
	}
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
	for i, hw := range []string{"hw0", "hw1", "hw1", "hw0"} {
		r := cloneRequest("L1", hw)
		r.Seq = uint64(i + 1)
		body, _ := json.Marshal(r)
		if rec := do("POST", license.CheckinPath, "", string(body)); rec.Code != http.StatusOK {
			t.Fatalf("check-in: %d %s", rec.Code, rec.Body)
		}
	}
	body, _ := json.Marshal(cloneRequest("L9", "hw"))
	do("POST", license.CheckinPath, "", string(body))
	if rec := do("GET", "/admin/metrics", "", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("metrics without the token: %d", rec.Code)
	}
	rec := do("GET", "/admin/metrics", "tok", "")
	for _, want := range []string{
		`licensed_checkins_total{result="ok"} 4`,
		`licensed_checkins_total{result="unknown"} 1`,
		`licensed_flags_raised_total{kind="clone"} 1`,
		`licensed_checkin_duration_seconds_count 5`,
		`go_goroutines`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
