package main

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// chromium finds Debian's chromium; without it the test skips unless CI is set.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not installed (Debian package chromium)")
	}
	t.Skip("chromium not installed (Debian package chromium)")
	return ""
}

func runChromium(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // a hang, not a speed limit
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run",
		// The dev box's certificate is self-signed; the other tests pin it.
		"--ignore-certificate-errors", "--user-data-dir=" + t.TempDir()}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return out
}

// TestDevModeBrowser opens the dev daemon's admin URL, as printed, in
// headless Chromium: the unclaimed box redirects to its claim page, whose
// script and stylesheet load under the admin CSP (served through the
// daemon's header middleware). The screenshot is left in
// $EDGEPBX_SCREENSHOTS when set.
func TestDevModeBrowser(t *testing.T) {
	bin := chromium(t)
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base := p.waitLine(t, adminRE)[1]
	dom := runChromium(t, bin, "--dump-dom", base+"/")
	for _, want := range []string{"Claim this box", `name="setup_code"`, `src="/static/app.js"`} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Fatalf("claim page DOM lacks %q:\n%s", want, dom)
		}
	}
	dir := os.Getenv("EDGEPBX_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "edgepbxd-claim.png")
	runChromium(t, bin, "--window-size=412,915", "--hide-scrollbars", "--screenshot="+shot, base+"/claim")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// The header bar is dark, the page light: the stylesheet was applied,
	// so the daemon's default-src 'none' did not replace the admin CSP.
	hr, hg, hb, _ := img.At(5, 5).RGBA()
	br, bg, bb, _ := img.At(5, 700).RGBA()
	if hr+hg+hb >= br+bg+bb {
		t.Errorf("stylesheet not applied (header %d, body %d)", hr+hg+hb, br+bg+bb)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
