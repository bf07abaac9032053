package phonehome_test

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// TestFleetView: each check-in keeps its box's summary; the token-protected
// /admin/fleet searches and filters them (status, flags, days offline),
// pages, exports CSV with box-supplied cells defused, and refuses a bad
// query by naming the parameter.
func TestFleetView(t *testing.T) {
	forEachBackend(t, testFleetView)
}

func testFleetView(t *testing.T, b backend) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	s, _ := newTestServer(t, b, &now)
	for _, l := range []phonehome.Licence{
		{ID: "L-OK", ValidUntil: now.AddDate(1, 0, 0)},
		{ID: "L-OLD", ValidUntil: now.AddDate(0, 0, 5)},
		{ID: "L-CL", ValidUntil: now.AddDate(1, 0, 0)},
	} {
		if err := s.PutLicence(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutAdvisory(phonehome.Advisory{Advisory: license.Advisory{ID: "ADV-1", Severity: "high", Message: "m"}, Firmware: []string{"1.0.0"}}); err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	checkin := func(lic, serial, hw, fw string) {
		t.Helper()
		r := &license.Request{V: 1, Nonce: strings.Repeat("ab", 16), Serial: serial, InstallID: "I-" + serial,
			Fingerprint: license.Fingerprint(hw), Firmware: fw, LicenceID: lic}
		body, _ := json.Marshal(r)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", license.CheckinPath, strings.NewReader(string(body))))
		if rec.Code != http.StatusOK {
			t.Fatalf("check-in %s: %d %s", serial, rec.Code, rec.Body)
		}
	}
	checkin("L-OLD", "EPX-OLD", "hw-old", "1.0.0") // goes quiet, its licence expires
	now = now.AddDate(0, 0, 10)
	checkin("L-OK", "EPX-OK", "hw-ok", "2.0.0")
	checkin("L-CL", "-2+3", "hw-a", "2.0.0")
	checkin("L-CL", "EPX-CL-B", "hw-b", "2.0.0") // the clone
	checkin("L-X", "EPX-X", "hw-x", "2.0.0")     // unknown licence: no box kept
	// Nor its check-in: anyone reaching licensed could grow the database.
	if got, err := s.Checkins("L-X"); err != nil || len(got) != 0 {
		t.Fatalf("check-ins kept for a licence never issued: %d, %v", len(got), err)
	}

	get := func(query, token string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/admin/fleet?"+query, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("", ""); rec.Code != http.StatusUnauthorized {
		t.Fatalf("fleet without token: %d", rec.Code)
	}
	for _, tc := range []struct {
		query string
		want  []string // serials, in order
		total int
	}{
		{"", []string{"-2+3", "EPX-CL-B", "EPX-OK", "EPX-OLD"}, 4},
		{"q=epx-o", []string{"EPX-OK", "EPX-OLD"}, 2},
		{"flag=clone", []string{"-2+3", "EPX-CL-B"}, 2}, // the licence is cloned: both its boxes
		{"flag=none&status=ok", []string{"EPX-OK"}, 1},
		{"status=expired", []string{"EPX-OLD"}, 1},
		{"min_offline=10", []string{"EPX-OLD"}, 1},
		{"q=1.0.0", []string{"EPX-OLD"}, 1},
		{"limit=2&offset=1", []string{"EPX-CL-B", "EPX-OK"}, 4},
	} {
		rec := get(tc.query, "tok")
		var got struct {
			Total int                  `json:"total"`
			Boxes []phonehome.FleetRow `json:"boxes"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK {
			t.Fatalf("%q: %d %s", tc.query, rec.Code, rec.Body)
		}
		var serials []string
		for _, r := range got.Boxes {
			serials = append(serials, r.Serial)
		}
		if strings.Join(serials, ",") != strings.Join(tc.want, ",") || got.Total != tc.total {
			t.Errorf("%q: %v of %d, want %v of %d", tc.query, serials, got.Total, tc.want, tc.total)
		}
	}
	var all struct {
		Boxes []phonehome.FleetRow `json:"boxes"`
	}
	json.Unmarshal(get("q=EPX-OLD", "tok").Body.Bytes(), &all)
	if r := all.Boxes[0]; r.Firmware != "1.0.0" || r.DaysSince != 10 || r.Status != license.StatusExpired || len(r.Advisories) != 1 || r.Advisories[0] != "ADV-1" {
		t.Errorf("quiet box: %+v", r)
	}
	rec := get("format=csv&q=L-CL", "tok")
	rows, err := csv.NewReader(rec.Body).ReadAll()
	if err != nil || len(rows) != 3 || rows[0][2] != "serial" || rows[2][9] != "true" {
		t.Fatalf("csv: %v %q", err, rows)
	}
	if rows[1][2] != "'-2+3" {
		t.Errorf("csv cell %q: a box's serial must not start a formula", rows[1][2])
	}
	for _, bad := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=1001", "limit"}, {"flag=evil", "flag"}, {"status=x", "status"},
		{"q=" + strings.Repeat("a", 65), "q"}, {"min_offline=-1", "min_offline"}, {"sort=x", "sort"},
		{"limit=1&limit=2", "limit"}, {"format=xml", "format"},
	} {
		rec := get(bad.query, "tok")
		var p map[string]any
		json.Unmarshal(rec.Body.Bytes(), &p)
		if rec.Code != http.StatusBadRequest || p["field"] != bad.field || rec.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%q: %d %s, want a problem naming %s", bad.query, rec.Code, rec.Body, bad.field)
		}
	}
	page := httptest.NewRecorder()
	h.ServeHTTP(page, httptest.NewRequest("GET", "/fleet", nil))
	if page.Code != http.StatusOK || !strings.Contains(page.Header().Get("Content-Security-Policy"), "default-src 'none'") || !strings.Contains(page.Body.String(), "/fleet.js") {
		t.Errorf("fleet page: %d %q", page.Code, page.Header())
	}
}

// FuzzParseFleetQuery: any query string is either refused with the
// parameter named or gives values within bounds.
func FuzzParseFleetQuery(f *testing.F) {
	for _, s := range []string{"", "q=a&limit=5", "flag=clone&status=ok&min_offline=3&offset=9&format=csv", "limit=99999", "x=1", "q=a&q=b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := phonehome.ParseFleetQuery(v)
		if err != nil {
			var fe *phonehome.FieldError
			if !errors.As(err, &fe) || fe.Field == "" {
				t.Fatalf("%q: untyped error %v", raw, err)
			}
			return
		}
		if q.Limit < 1 || q.Limit > 1000 || q.Offset < 0 || q.MinOffline < 0 || q.MinOffline > 3650 || len(q.Search) > 64 {
			t.Fatalf("%q: out of bounds %+v", raw, q)
		}
	})
}
