package admin

import (
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/license"
)

// licClock gives the licence manager the admin tests' fake clock; Run is
// never started here, so After is not needed to fire.
type licClock struct{ c *fakeClock }

func (l licClock) Now() time.Time                       { return l.c.Now() }
func (l licClock) After(time.Duration) <-chan time.Time { return nil }

// A real licence manager that never reaches its server: past 14 days offline
// the admin side refuses new extensions and every user sees the banner.
func TestLicenceDegradedLimitsAdmin(t *testing.T) {
	e, a := claimed(t)
	a.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW}, Username: "op1", Role: auth.RoleOperator, Password: userPW})
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m, err := license.New(license.Config{
		ServerURL: "https://licence.invalid",
		Identity:  license.Identity{Serial: "T0001", InstallID: "inst", LicenceID: "LIC-T", Firmware: "test", Fingerprint: license.Fingerprint("t")},
		DB:        e.db, VendorKey: pub, Clock: licClock{e.clock}, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.lic = m

	a.must(201, "POST", "/api/v1/extensions", ExtensionRequest{User: "301"})
	if body := string(a.must(200, "GET", "/", nil).body); strings.Contains(body, `id="licence-banner"`) {
		t.Error("licence banner shown with full service")
	}

	e.clock.Advance(15 * 24 * time.Hour)
	if st := m.State(); st.Mode != license.ModeDegraded || st.Banner == "" {
		t.Fatalf("licence state after 15 days offline: %+v", st)
	}
	// Sessions have expired over the 15 days: log in again.
	a.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	op := e.client("192.0.2.51")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "op1", Password: userPW})

	r := a.do("POST", "/api/v1/extensions", ExtensionRequest{User: "302"})
	if r.code != 409 || !strings.Contains(string(r.body), "licence degraded") {
		t.Errorf("new extension while degraded: %d %s", r.code, r.body)
	}
	// Existing extensions keep working: a password reset is not a new extension.
	a.must(200, "POST", "/api/v1/extensions/301/password", nil)
	for _, c := range []*client{a, op} {
		if body := string(c.must(200, "GET", "/", nil).body); !strings.Contains(body, `id="licence-banner"`) {
			t.Error("degraded licence banner missing for a user")
		}
	}
}
