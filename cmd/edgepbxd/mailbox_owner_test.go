package main

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin"
)

// TestDevModeMailboxOwner: the real daemon. A mailbox owner signs in on
// the box's HTTPS with the extension and the PIN the admin set; wrong PINs
// typed there are charged to the SIP edge's guard exactly like PINs typed
// on a phone (the source is throttled for voicemail/1002 and then even the
// right PIN is refused), and the owner's session reaches its mailbox and
// not the admin API.
func TestDevModeMailboxOwner(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	pins := map[string]string{}
	for _, u := range []string{"1001", "1002"} {
		api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u})
		var ans struct{ PIN string }
		if err := json.Unmarshal(api.must(http.StatusOK, "POST", "/api/v1/voicemail/"+u+"/pin", nil), &ans); err != nil || ans.PIN == "" {
			t.Fatalf("PIN for %s: %v", u, err)
		}
		pins[u] = ans.PIN
	}

	attacker := newAPIClient(t, base, fp)
	for _, pin := range []string{"111111", "222222", "333333"} {
		attacker.must(http.StatusUnauthorized, "POST", "/api/v1/mailbox/login", admin.OwnerLoginRequest{Ext: "1002", PIN: pin})
	}
	if !hasBlock(t, api, "voicemail/1002", "failed authentications") {
		t.Fatalf("wrong PINs on the web did not throttle the source at the SIP guard:\n%s", grepLines(p.output(), "voicemail", "mailbox"))
	}
	attacker.must(http.StatusTooManyRequests, "POST", "/api/v1/mailbox/login", admin.OwnerLoginRequest{Ext: "1002", PIN: pins["1002"]})

	owner := newAPIClient(t, base, fp)
	owner.login(owner.must(http.StatusOK, "POST", "/api/v1/mailbox/login", admin.OwnerLoginRequest{Ext: "1001", PIN: pins["1001"]}))
	var mb admin.MailboxView
	if err := json.Unmarshal(owner.must(http.StatusOK, "GET", "/api/v1/mailbox", nil), &mb); err != nil || mb.Ext != "1001" {
		t.Fatalf("owner's mailbox %+v %v", mb, err)
	}
	if page := string(owner.must(http.StatusOK, "GET", "/mailbox", nil)); !strings.Contains(page, "Mailbox 1001") {
		t.Errorf("mailbox page: %.400s", page)
	}
	for _, path := range []string{"/api/v1/status", "/api/v1/voicemail/1001", "/api/v1/voicemail/1002", "/api/v1/audit"} {
		owner.must(http.StatusUnauthorized, "GET", path, nil)
	}
	owner.must(http.StatusSeeOther, "GET", "/voicemail", nil)
	audit := string(api.must(http.StatusOK, "GET", "/api/v1/audit?action=mailbox.login&limit=50", nil))
	if !strings.Contains(audit, "mailbox:1001") || !strings.Contains(audit, "mailbox:1002") {
		t.Errorf("owner sign-ins not audited: %.800s", audit)
	}
	owner.must(http.StatusOK, "POST", "/api/v1/mailbox/logout", nil)
	owner.must(http.StatusUnauthorized, "GET", "/api/v1/mailbox", nil)
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}
