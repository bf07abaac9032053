// Package browsertest runs Debian's headless Chromium against the admin UI
// for tests of firmware/admin and edgepbxd. Only tests import it.
package browsertest

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// Chromium returns the browser's path; without it the test is skipped, or
// fails when CI is set.
func Chromium(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	netnstest.Unavailable(tb, "needs chromium (Debian package chromium)")
	return ""
}

// Run runs one headless Chromium with a fresh profile and returns its
// standard output (e.g. --dump-dom).
func Run(tb testing.TB, bin string, args ...string) []byte {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second) // a hang, not a speed limit
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run",
		// The box's certificate is self-signed; other tests pin it.
		"--ignore-certificate-errors", "--user-data-dir=" + tb.TempDir()}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		tb.Fatalf("chromium %v: %v", args, err)
	}
	return out
}

// CheckStyled screenshots url at a phone's width (kept in
// $EDGEPBX_SCREENSHOTS under name when set) and fails unless the page's
// stylesheet was applied: the header bar is dark, the page light.
func CheckStyled(tb testing.TB, bin, url, name string) {
	tb.Helper()
	dir := os.Getenv("EDGEPBX_SCREENSHOTS")
	if dir == "" {
		dir = tb.TempDir()
	}
	shot := filepath.Join(dir, name)
	Run(tb, bin, "--window-size=412,915", "--hide-scrollbars", "--screenshot="+shot, url)
	f, err := os.Open(shot)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		tb.Fatalf("screenshot: %v", err)
	}
	hr, hg, hb, _ := img.At(5, 5).RGBA()
	br, bg, bb, _ := img.At(5, 700).RGBA()
	if hr+hg+hb >= br+bg+bb {
		tb.Errorf("stylesheet not applied to %s (header %d, body %d)", url, hr+hg+hb, br+bg+bb)
	}
}
