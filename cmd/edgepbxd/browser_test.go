package main

import (
	"bytes"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
)

// TestDevModeBrowser opens the dev daemon's admin URL, as printed, in
// headless Chromium: the unclaimed box redirects to its claim page, whose
// script and stylesheet load under the admin CSP (served through the
// daemon's header middleware). The screenshot is left in
// $EDGEPBX_SCREENSHOTS when set.
func TestDevModeBrowser(t *testing.T) {
	bin := browsertest.Chromium(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base := p.waitLine(t, adminRE)[1]
	dom := browsertest.Run(t, bin, "--dump-dom", base+"/")
	for _, want := range []string{"Claim this box", `name="setup_code"`, `src="/static/app.js"`} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Fatalf("claim page DOM lacks %q:\n%s", want, dom)
		}
	}
	// The stylesheet was applied (the admin CSP was not replaced on the way).
	browsertest.CheckStyled(t, bin, base+"/claim", "edgepbxd-claim.png")
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
