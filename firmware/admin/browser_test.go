package admin

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"net/http/httptest"
)

// chromium finds Debian's chromium; without it the test skips unless CI is set.
func chromium(t *testing.T) string {
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
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--ignore-certificate-errors",
		"--user-data-dir=" + t.TempDir()}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return out
}

// TestBrowserClaimPage loads the claim page of an unclaimed box in headless
// Chromium over TLS, checks the DOM it built, and screenshots it at a
// phone's width (left in $EDGEPBX_SCREENSHOTS when set).
func TestBrowserClaimPage(t *testing.T) {
	bin := chromium(t)
	e := newEnv(t)
	e.srv.names = append(e.srv.names, "127.0.0.1")
	ts := httptest.NewTLSServer(e.srv)
	defer ts.Close()

	dom := runChromium(t, bin, "--dump-dom", ts.URL+"/")
	for _, want := range []string{"Claim this box", `name="setup_code"`, `src="/static/app.js"`} {
		if !bytes.Contains(dom, []byte(want)) {
			t.Fatalf("claim page DOM lacks %q:\n%s", want, dom)
		}
	}
	dir := os.Getenv("EDGEPBX_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shot := filepath.Join(dir, "claim.png")
	runChromium(t, bin, "--window-size=412,915", "--hide-scrollbars", "--screenshot="+shot, ts.URL+"/claim")
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	// The header bar is dark, the page light: the stylesheet was applied.
	hr, hg, hb, _ := img.At(5, 5).RGBA()
	br, bg, bb, _ := img.At(5, 700).RGBA()
	if hr+hg+hb >= br+bg+bb {
		t.Errorf("stylesheet not applied (header %d, body %d)", hr+hg+hb, br+bg+bb)
	}
	if !strings.Contains(string(dom), "There is no default password") {
		t.Error("claim page text")
	}
}
