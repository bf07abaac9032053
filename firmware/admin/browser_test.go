package admin

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// TestBrowserClaimPage loads the claim page of an unclaimed box in headless
// Chromium over TLS, checks the DOM it built, and screenshots it at a
// phone's width (left in $EDGEPBX_SCREENSHOTS when set).
func TestBrowserClaimPage(t *testing.T) {
	bin := browsertest.Chromium(t)
	e := newEnv(t)
	e.srv.names = append(e.srv.names, "127.0.0.1")
	ts := httptest.NewTLSServer(e.srv)
	defer ts.Close()

	dom := browsertest.Run(t, bin, "--dump-dom", ts.URL+"/")
	for _, want := range []string{"Claim this box", `name="setup_code"`, `src="/static/app.js"`} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Fatalf("claim page DOM lacks %q:\n%s", want, dom)
		}
	}
	// The stylesheet was applied (the admin CSP was not replaced on the way).
	browsertest.CheckStyled(t, bin, ts.URL+"/claim", "claim.png")
	if !strings.Contains(string(dom), "There is no default password") {
		t.Error("claim page text")
	}
}
