package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
	"github.com/edgepbx/edgepbx/qemu"
)

// dashboardBudget is firmware/admin's page-weight budget for the dashboard
// (document, stylesheet, scripts, uncompressed).
const dashboardBudget = 64 << 10

// TestARM64DashboardWeight boots the arm64 image once (TCG), claims it in
// headless Chromium on the host through the forwarded HTTPS port, and loads
// the dashboard six times: it logs the page weight and the time to first
// contentful paint (figures for docs/benchmarks.md, not asserted: TCG on
// a shared runner says little about a real arm64 box) and fails only when
// the dashboard outgrows its weight budget.
func TestARM64DashboardWeight(t *testing.T) {
	require(t, "qemu-system-aarch64", "mkfs.ext4")
	bin := browsertest.Chromium(t)
	start := time.Now()
	img := buildImage(t, "qemu-arm64")
	vm := boot(t, img, qemu.WithDataDisk(filepath.Join(t.TempDir(), "data.img")), qemu.WithHostForward("tcp", 0, 443))
	b := banner(t, vm)
	port := vm.HostPort("tcp", 443)
	healthzEventually(t, port)
	base := fmt.Sprintf("https://127.0.0.1:%d", port)
	t.Logf("arm64 box up %.1fs after the test started", time.Since(start).Seconds())

	p := browsertest.NewPage(t, bin)
	p.Viewport(1280, 900)
	p.Open(base+"/", "/claim")
	p.Fill(map[string]string{"#setup_code": b["setup code"], "#username": "owner1", "#password": ownerPW})
	p.Submit(`form[data-api="/api/v1/claim"]`, "")
	p.WaitFor(`location.pathname === "/" && document.readyState === "complete" && document.querySelector("h1").textContent === "Dashboard"`)
	// Loads 1-3 with the browser cache off (a first visit: every byte over
	// the forwarded port), 4-6 with it on (the stylesheet and scripts cached).
	p.Call("Network.enable", map[string]any{}, nil)
	for i := range 6 {
		cold := i < 3
		p.Call("Network.setCacheDisabled", map[string]any{"cacheDisabled": cold}, nil)
		p.Open(base+"/", "/")
		p.WaitFor(`performance.getEntriesByName("first-contentful-paint").length > 0`)
		var m struct {
			Bytes, Transfer, Requests int
			FCP, DOM, TTFB            float64
			Names                     string
		}
		p.Eval(`(() => { const n = performance.getEntriesByType("navigation")[0], rs = performance.getEntriesByType("resource");
			return {bytes: n.decodedBodySize + rs.reduce((a, r) => a + r.decodedBodySize, 0), transfer: n.transferSize + rs.reduce((a, r) => a + r.transferSize, 0),
				requests: 1 + rs.length, fcp: performance.getEntriesByName("first-contentful-paint")[0].startTime,
				dom: n.domContentLoadedEventEnd, ttfb: n.responseStart,
				names: rs.map(r => new URL(r.name).pathname + " " + r.decodedBodySize).join(", ")}; })()`, &m)
		cache := "cache on"
		if cold {
			cache = "cache off"
		}
		t.Logf("arm64 dashboard load %d (%s): %d bytes (%d transferred) in %d requests (%s), first byte %.0f ms, first contentful paint %.0f ms, DOMContentLoaded %.0f ms",
			i+1, cache, m.Bytes, m.Transfer, m.Requests, m.Names, m.TTFB, m.FCP, m.DOM)
		if m.Bytes > dashboardBudget {
			t.Errorf("dashboard weighs %d bytes, budget %d", m.Bytes, dashboardBudget)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := vm.Powerdown(ctx); err != nil {
		t.Fatalf("powerdown: %v", err)
	}
	t.Logf("test took %.1fs", time.Since(start).Seconds())
}
