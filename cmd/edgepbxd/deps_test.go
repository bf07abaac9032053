package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestNoFirewallLinked: the unprivileged daemon must not link the firewall
// controller or a netlink stack; it speaks to PID 1 in netfw/fwspec's
// types only. A new import of netfw anywhere below edgepbxd fails here.
func TestNoFirewallLinked(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(goBin, "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/edgepbx/edgepbx/netfw",
		"github.com/google/nftables",
		"github.com/mdlayher/netlink",
		"github.com/vishvananda/netlink",
		"github.com/vishvananda/netns",
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "github.com/edgepbx/edgepbx/netfw/fwspec" {
			continue // the leaf of plain types is the point
		}
		for _, f := range forbidden {
			if pkg == f || strings.HasPrefix(pkg, f+"/") {
				t.Errorf("cmd/edgepbxd links %s", pkg)
			}
		}
	}
}
