package admin

import (
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/audit"
	fwupdate "github.com/edgepbx/edgepbx/firmware/update"
)

// TestUpdatePolicyAPI: the policy is read and changed over the API
// (audited); a bad one is refused naming the field and changes nothing;
// without PID 1 or a repository the API says so (409), not 500.
func TestUpdatePolicyAPI(t *testing.T) {
	e, c := claimed(t)
	c.must(409, "GET", "/api/v1/update", nil)
	c.must(409, "GET", "/api/v1/update/policy", nil)
	e.srv.pull = &fwupdate.Service{DB: e.db, Audit: e.srv.audit}
	got := c.must(200, "GET", "/api/v1/update/policy", nil)
	if !strings.Contains(string(got.body), `"security-only"`) || !strings.Contains(string(got.body), `"no-repository"`) {
		t.Fatalf("default policy: %s", got.body)
	}
	bad := c.must(400, "PUT", "/api/v1/update/policy", fwupdate.Policy{Mode: "sometimes", Window: fwupdate.Window{Start: "03:00", Hours: 2}})
	if !strings.Contains(string(bad.body), "mode") {
		t.Fatalf("refusal does not name the field: %s", bad.body)
	}
	c.must(400, "PUT", "/api/v1/update/policy", map[string]any{"mode": "all", "window": map[string]any{"start": "03:00", "hours": 2}, "extra": 1})
	c.must(200, "PUT", "/api/v1/update/policy", fwupdate.Policy{Mode: fwupdate.ModeAll, Window: fwupdate.Window{Start: "23:00", Hours: 3}})
	got = c.must(200, "GET", "/api/v1/update/policy", nil)
	if !strings.Contains(string(got.body), `"23:00"`) {
		t.Fatalf("stored policy: %s", got.body)
	}
	if !e.auditHas("update.policy", audit.OK) {
		t.Fatal("policy change not audited")
	}
	c.must(409, "POST", "/api/v1/update/pull", nil)
	pg := c.must(200, "GET", "/system", nil)
	if !strings.Contains(string(pg.body), `<option selected>all</option>`) || !strings.Contains(string(pg.body), `value="23:00"`) ||
		!strings.Contains(string(pg.body), "does not reach") {
		t.Fatalf("system page firmware section: %s", pg.body)
	}
}
