package metrics

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/store"
)

const adminPW = "tr7#Kq2!vm9Lw"

type clock struct{ t time.Time }

func (c clock) Now() time.Time { return c.t }

// newAuth is a real, claimed account service with an admin "root1".
func newAuth(t testing.TB) (*auth.Service, *store.DB) {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	db, err := store.Open(filepath.Join(t.TempDir(), "m.db"), key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	clk := clock{time.Now()}
	s, err := auth.New(auth.Config{DB: db, Clock: clk, Audit: audit.New(db, clk), Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 2, 16),
		SetupCode: auth.SetupCode("AAAA-BBBB-CCCC"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(context.Background(), auth.Client{}, "AAAA-BBBB-CCCC", "root1", adminPW); err != nil {
		t.Fatal(err)
	}
	return s, db
}

func token(t testing.TB, a *auth.Service, scope string) string {
	t.Helper()
	sec, _, err := a.CreateToken(context.Background(), auth.Principal{Username: "root1", Role: auth.RoleAdmin}, auth.Client{},
		auth.Proof{Password: adminPW}, "t-"+scope, []string{scope}, 30)
	if err != nil {
		t.Fatal(err)
	}
	return sec
}

// TestHandlerRefusals: the source network is checked first, then the
// token, then its scope; every refusal is problem+json and counted.
func TestHandlerRefusals(t *testing.T) {
	a, _ := newAuth(t)
	reg, err := NewRegistry(Sources{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(reg, a, Settings{Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/64")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	good, read := token(t, a, auth.ScopeMetrics), token(t, a, auth.ScopeRead)
	tests := []struct {
		name, remote, authz string
		want                int
		reason              string
	}{
		{"allowed with metrics token", "192.0.2.9:40000", "Bearer " + good, 200, ""},
		{"IPv4-mapped source judged as IPv4", "[::ffff:192.0.2.9]:40000", "Bearer " + good, 200, ""},
		{"allowed IPv6 network", "[2001:db8::5]:40000", "bearer " + good, 200, ""},
		{"other network, good token", "198.51.100.1:40000", "Bearer " + good, 403, RefusedNetwork},
		{"no token", "192.0.2.9:40000", "", 401, RefusedNoToken},
		{"basic auth", "192.0.2.9:40000", "Basic cm9vdDE6eA==", 401, RefusedNoToken},
		{"wrong token", "192.0.2.9:40000", "Bearer ebx_" + strings.Repeat("A", 43), 401, RefusedToken},
		{"not a token", "192.0.2.9:40000", "Bearer x", 401, RefusedToken},
		{"read token lacks scope", "192.0.2.9:40000", "Bearer " + read, 403, RefusedScope},
	}
	counts := map[string]int{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/metrics", nil)
			r.RemoteAddr = tc.remote
			if tc.authz != "" {
				r.Header.Set("Authorization", tc.authz)
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.want, w.Body)
			}
			if tc.want == 200 {
				if !strings.Contains(w.Body.String(), `edgepbx_build_info{version="test"} 1`) {
					t.Fatalf("no metrics in the answer:\n%.500s", w.Body)
				}
				return
			}
			counts[tc.reason]++
			var p struct {
				Title  string `json:"title"`
				Status int    `json:"status"`
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
				t.Fatalf("Content-Type %q", ct)
			}
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != tc.want || p.Title == "" {
				t.Fatalf("problem %s: %v", w.Body, err)
			}
			if strings.Contains(w.Body.String(), "edgepbx_") {
				t.Fatal("a refusal leaked metrics")
			}
		})
	}
	// The refusals are in the next (allowed) scrape.
	r := httptest.NewRequest("GET", "/metrics", nil)
	r.RemoteAddr = "192.0.2.9:1"
	r.Header.Set("Authorization", "Bearer "+good)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	parser := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := parser.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, m := range fams["edgepbx_metrics_refused_total"].GetMetric() {
		got[m.GetLabel()[0].GetValue()] = int(m.GetCounter().GetValue())
	}
	for _, reason := range []string{RefusedNetwork, RefusedNoToken, RefusedToken, RefusedScope} {
		if got[reason] != counts[reason] {
			t.Errorf("refused{reason=%s} = %d, want %d", reason, got[reason], counts[reason])
		}
	}
}

// TestHandlerOffByDefault: with no networks configured (the default) even
// loopback with a good token is refused; Apply opens it live.
func TestHandlerOffByDefault(t *testing.T) {
	a, db := newAuth(t)
	s, err := LoadSettings(db)
	if err != nil || s.Enabled() {
		t.Fatalf("default settings %+v, %v: want metrics off", s, err)
	}
	reg, _ := NewRegistry(Sources{})
	h, err := NewHandler(reg, a, s, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok := token(t, a, auth.ScopeMetrics)
	get := func() int {
		r := httptest.NewRequest("GET", "/metrics", nil)
		r.RemoteAddr = "127.0.0.1:5000"
		r.Header.Set("Authorization", "Bearer "+tok)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Code
	}
	if c := get(); c != http.StatusForbidden {
		t.Fatalf("default: status %d, want 403", c)
	}
	h.Apply(Settings{Networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	if c := get(); c != http.StatusOK {
		t.Fatalf("after Apply: status %d, want 200", c)
	}
}

func TestSettingsValidate(t *testing.T) {
	tests := []struct {
		body, field string // field "": valid
	}{
		{`{"networks":[]}`, ""},
		{`{"networks":["10.0.0.0/8","2001:db8::/48"]}`, ""},
		{`{}`, "networks: required"},
		{`{"networks":["10.0.0.1/8"]}`, "networks[0]"},
		{`{"networks":["10.0.0.0/8","0.0.0.0/0"]}`, "networks[1]"},
		{`{"networks":["::/0"]}`, "networks[0]"},
		{`{"networks":["::ffff:10.0.0.0/104"]}`, "networks[0]"},
		{`{"networks":["10.0.0.0/8","10.0.0.0/8"]}`, "networks[1]"},
		{`{"networks":["bogus"]}`, "networks"},
		{`{"networks":[],"extra":1}`, "extra"},
		{`{"networks":[],"networks":[]}`, "networks"},
		{`{"networks":[` + strings.Repeat(`"10.0.0.0/8",`, MaxNetworks) + `"10.1.0.0/16"]}`, "at most"},
		{strings.Repeat(" ", MaxSettingsBytes+1), "larger than"},
	}
	for _, tc := range tests {
		_, err := DecodeSettings(strings.NewReader(tc.body))
		switch {
		case tc.field == "" && err != nil:
			t.Errorf("%.60s: %v", tc.body, err)
		case tc.field != "" && (!errors.Is(err, ErrSettings) || !strings.Contains(err.Error(), tc.field)):
			t.Errorf("%.60s: error %v, want ErrSettings naming %q", tc.body, err, tc.field)
		}
	}
}

func TestSettingsStored(t *testing.T) {
	_, db := newAuth(t)
	want := Settings{Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	if err := db.Update(func(tx *store.Tx) error { _, err := SaveSettingsTx(tx, want); return err }); err != nil {
		t.Fatal(err)
	}
	bad := Settings{Networks: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}
	if err := db.Update(func(tx *store.Tx) error { _, err := SaveSettingsTx(tx, bad); return err }); !errors.Is(err, ErrSettings) {
		t.Fatalf("saving /0: %v", err)
	}
	got, err := LoadSettings(db)
	if err != nil || len(got.Networks) != 1 || got.Networks[0] != want.Networks[0] {
		t.Fatalf("LoadSettings = %+v, %v", got, err)
	}
}

func FuzzDecodeSettings(f *testing.F) {
	f.Add([]byte(`{"networks":["10.0.0.0/8"]}`))
	f.Add([]byte(`{"networks":["::ffff:1.2.3.4/128"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSettings(bytes.NewReader(b))
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("decoded settings fail validation: %v", err)
		}
		for _, p := range s.Networks {
			if p.Bits() == 0 || p.Masked() != p {
				t.Fatalf("accepted %s", p)
			}
		}
	})
}

// Static figures standing in for the owners in the mapping test: the
// collector only copies what they report.
type (
	sipFig   struct{}
	regFig   struct{}
	callFig  struct{}
	mediaFig struct{}
	licFig   struct{}
	certFig  struct{ at time.Time }
)

func (sipFig) Counters() map[string]uint64 {
	return map[string]uint64{"auth_failed": 7, "filter_scanner": 3, "stateful_requests": 2}
}
func (sipFig) BlockCounts() (int, int)    { return 2, 5 }
func (regFig) Count(time.Time) (int, int) { return 10, 12 }
func (callFig) Active() int               { return 1 }
func (callFig) Counters() call.Counters   { return call.Counters{Calls: 9, Answered: 6, Rejected: 2} }
func (mediaFig) Totals() media.Totals {
	return media.Totals{Calls: 1, Received: 100, Reports: 4, LossSum: 0.2}
}
func (licFig) State() license.State {
	return license.State{Mode: license.ModeDegraded, DaysOffline: 15}
}
func (c certFig) Current() certs.Info { return certs.Info{NotAfter: c.at.Add(10 * 24 * time.Hour)} }

// TestCollectorMapping: each owner's figure lands under its stable name
// and labels.
func TestCollectorMapping(t *testing.T) {
	a, db := newAuth(t)
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	reg, err := NewRegistry(Sources{SIP: sipFig{}, Registrar: regFig{}, Calls: callFig{}, Media: mediaFig{}, Logins: a,
		Licence: licFig{}, LicenceConfigured: true, Certificates: certFig{now}, StorePath: db.Path(), Version: "v1",
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Login(context.Background(), auth.Client{Addr: netip.MustParseAddr("192.0.2.1")}, "root1", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	var buf bytes.Buffer
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		expfmt.MetricFamilyToText(&buf, f)
	}
	out := buf.String()
	for _, want := range []string{
		`edgepbx_sip_events_total{outcome="failed",stage="auth"} 7`,
		`edgepbx_sip_events_total{outcome="scanner",stage="filter"} 3`,
		`edgepbx_sip_bans_active 2`,
		`edgepbx_sip_throttles_active 5`,
		`edgepbx_sip_registered_extensions 10`,
		`edgepbx_sip_registered_contacts 12`,
		`edgepbx_calls_active 1`,
		`edgepbx_calls_total 9`,
		`edgepbx_call_outcomes_total{outcome="answered"} 6`,
		`edgepbx_media_packets_total{direction="received"} 100`,
		`edgepbx_media_reported_loss_ratio_sum 0.2`,
		`edgepbx_media_reported_loss_ratio_count 4`,
		`edgepbx_admin_logins_total{outcome="failed"} 1`,
		`edgepbx_license_degraded 1`,
		`edgepbx_license_mode{mode="degraded"} 1`,
		`edgepbx_license_mode{mode="full"} 0`,
		`edgepbx_license_days_offline 15`,
		`edgepbx_certificate_expiry_seconds 864000`,
		`edgepbx_store_size_bytes `,
		`go_goroutines `,
		`process_resident_memory_bytes `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scrape:\n%s", out)
	}
}
