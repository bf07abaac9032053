package admin

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/init/reset"
)

// pid1Reset is PID 1's side of the factory reset as cmd/init runs it (the
// real gate behind the real control socket); instead of erasing it records
// what it would start, and runs onConfirm at the moment it would.
type pid1Reset struct {
	gate      *reset.Gate
	mu        sync.Mutex
	asked     []control.FactoryResetRequest
	started   int
	onConfirm func()
}

func newPID1Reset() *pid1Reset { return &pid1Reset{gate: reset.NewGate(reset.GateConfig{})} }

func (p *pid1Reset) BeginReset(r control.FactoryResetRequest) (control.FactoryResetTicket, error) {
	tok, exp, err := p.gate.Begin()
	if err != nil {
		return control.FactoryResetTicket{}, err
	}
	p.mu.Lock()
	p.asked = append(p.asked, r)
	p.mu.Unlock()
	return control.FactoryResetTicket{Token: tok, Expires: exp, Remaining: time.Until(exp)}, nil
}

func (p *pid1Reset) ConfirmReset(token string) error {
	if err := p.gate.Confirm(token); err != nil {
		return err
	}
	p.mu.Lock()
	p.started++
	f := p.onConfirm
	p.mu.Unlock()
	if f != nil {
		f()
	}
	return nil
}

func (p *pid1Reset) counts() (asked, started int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.asked), p.started
}

func TestFactoryResetAPI(t *testing.T) {
	e, admin := claimed(t)
	pr := e.pid1.reset
	if pg := admin.must(200, "GET", "/system", nil); !strings.Contains(string(pg.body), `data-api="/api/v1/system/factory-reset"`) {
		t.Fatal("system page has no factory reset form")
	}
	secret := e.enrol(admin, adminPW)
	admin.must(201, "POST", "/api/v1/accounts", AccountRequest{Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)},
		Username: "bob", Role: auth.RoleOperator, Password: userPW})
	e.clock.Advance(time.Minute)
	op := e.client("192.0.2.60")
	op.must(200, "POST", "/api/v1/login", LoginRequest{Username: "bob", Password: userPW})

	refused := []struct {
		name string
		c    *client
		body FactoryResetRequest
		code int
		want string
	}{
		{"operator", op, FactoryResetRequest{Confirm: FactoryResetWord, Proof: auth.Proof{Password: userPW}}, 403, ""},
		{"no confirmation word", admin, FactoryResetRequest{Confirm: "erase", Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)}}, 422, "field confirm"},
		{"password without the second factor", admin, FactoryResetRequest{Confirm: FactoryResetWord, Proof: auth.Proof{Password: adminPW}}, 422, "second-factor code is wrong"},
		{"wrong password", admin, FactoryResetRequest{Confirm: FactoryResetWord, Proof: auth.Proof{Password: "guess-guess-1", Code: e.totpCode(secret)}}, 422, "current password or second-factor code is wrong"},
	}
	for _, r := range refused {
		got := r.c.must(r.code, "POST", "/api/v1/system/factory-reset", r.body)
		if !strings.Contains(got.str("detail"), r.want) {
			t.Errorf("%s: %s", r.name, got.body)
		}
		if a, s := pr.counts(); a+s != 0 {
			t.Fatalf("%s reached PID 1: %d asked, %d started", r.name, a, s)
		}
	}
	// Two failed proofs so far: log in again so the third does not end
	// the session before the real request.
	e.clock.Advance(time.Hour)
	admin = e.client("192.0.2.50")
	lr := admin.must(200, "POST", "/api/v1/login", LoginRequest{Username: "root1", Password: adminPW})
	if lr.str("status") == "totp_required" {
		admin.must(200, "POST", "/api/v1/login/totp", TOTPLoginRequest{Challenge: lr.str("challenge"), Code: e.totpCode(secret)})
	}
	e.clock.Advance(time.Minute)

	// The audit entry is on disk when PID 1 is told to go ahead.
	auditedFirst := false
	pr.mu.Lock()
	pr.onConfirm = func() { auditedFirst = e.auditHas("system.factory_reset", "") }
	pr.mu.Unlock()
	ok := admin.must(202, "POST", "/api/v1/system/factory-reset", FactoryResetRequest{Confirm: FactoryResetWord,
		Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)}})
	if a, s := pr.counts(); a != 1 || s != 1 {
		t.Fatalf("%d asked, %d started; want 1, 1 (%s)", a, s, ok.body)
	}
	if !auditedFirst {
		t.Fatal("factory reset confirmed to PID 1 before it was audited")
	}
	if pr.asked[0].Actor != "root1" || pr.asked[0].Source != "192.0.2.50" {
		t.Errorf("PID 1 was told %+v", pr.asked[0])
	}
	if ok.str("remote_syslog") != "off" {
		t.Errorf("remote_syslog %q with no collector", ok.str("remote_syslog"))
	}

	// PID 1's rate limit (3 an hour) is answered as such, whatever
	// edgepbxd would allow.
	for i := 0; i < 2; i++ {
		e.clock.Advance(time.Minute)
		admin.must(202, "POST", "/api/v1/system/factory-reset", FactoryResetRequest{Confirm: FactoryResetWord,
			Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)}})
	}
	e.clock.Advance(time.Minute)
	r := admin.must(429, "POST", "/api/v1/system/factory-reset", FactoryResetRequest{Confirm: FactoryResetWord,
		Proof: auth.Proof{Password: adminPW, Code: e.totpCode(secret)}})
	if !strings.Contains(r.str("detail"), "too many") {
		t.Fatalf("rate limit answer: %s", r.body)
	}
}
