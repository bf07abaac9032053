package browsertest

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// AxeVersion is the axe-core release the accessibility checks run; pinned
// so a new rule upstream cannot turn CI red overnight.
const AxeVersion = "4.10.3"

// Axe returns axe-core's browser bundle (npm package axe-core), installed
// with npm into the user's cache directory on first use. Without npm the
// test is skipped, or fails when CI is set.
func Axe(tb testing.TB) string {
	tb.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "edgepbx", "axe-core-"+AxeVersion)
	js := filepath.Join(dir, "node_modules", "axe-core", "axe.min.js")
	if b, err := os.ReadFile(js); err == nil {
		return string(b)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		netnstest.Unavailable(tb, "needs npm (Debian package npm) to install axe-core")
		return ""
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // a hang, not a speed limit
	defer cancel()
	out, err := exec.CommandContext(ctx, npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", dir, "axe-core@"+AxeVersion).CombinedOutput()
	if err != nil {
		netnstest.Unavailable(tb, "npm install axe-core@%s: %v: %s", AxeVersion, err, out)
		return ""
	}
	b, err := os.ReadFile(js)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// Violation is one failed axe rule on a page.
type Violation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"` // CSS selectors of the offending elements (first few)
}

func (v Violation) String() string {
	return fmt.Sprintf("%s (%s): %s at %s", v.ID, v.Impact, v.Help, strings.Join(v.Nodes, ", "))
}

// AxeRun checks the loaded page with axe-core (src from Axe) and returns its
// serious and critical violations. The bundle is evaluated over DevTools,
// not added as a script element, so the page's strict CSP stays as served.
func (p *Page) AxeRun(src string) []Violation {
	p.tb.Helper()
	p.Eval(`if (!window.axe) { `+src+` }; true`, nil)
	var vs []Violation
	p.Eval(`axe.run(document, {resultTypes: ["violations"]}).then(r => r.violations
		.filter(v => v.impact === "serious" || v.impact === "critical")
		.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))})))`, &vs)
	return vs
}

// Screenshot saves the whole page (beyond the viewport) as a PNG file.
func (p *Page) Screenshot(path string) {
	p.tb.Helper()
	var r struct {
		Data string `json:"data"`
	}
	p.Call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	b, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		p.tb.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		p.tb.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		p.tb.Fatal(err)
	}
}

// ScreenshotDir is where tests leave screenshots: $EDGEPBX_SCREENSHOTS when
// set (CI keeps out/screenshots), else a directory removed after the test.
func ScreenshotDir(tb testing.TB) string {
	if d := os.Getenv("EDGEPBX_SCREENSHOTS"); d != "" {
		return d
	}
	return tb.TempDir()
}
