package modules_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/modules"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// TestDebianKernelModules runs the index against Debian's real kernel
// packages (from the image cache; fetched when absent): every board's
// modules resolve, the staged index orders them so that each module's
// .modinfo dependencies and soft pre-dependencies come first.
func TestDebianKernelModules(t *testing.T) {
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg-deb", "xz"} {
		netnstest.NeedTool(t, tool, map[string]string{"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg", "xz": "xz-utils"}[tool])
	}
	for _, name := range board.Names() {
		t.Run(name, func(t *testing.T) {
			prof, err := board.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			k, err := image.FetchKernel(context.Background(), prof.KernelPackage, prof.Arch)
			if err != nil {
				t.Fatal(err)
			}
			full, err := modules.ScanDir(k.ModulesDir)
			if err != nil {
				t.Fatal(err)
			}
			closure, err := full.Closure(prof.Modules)
			if err != nil {
				t.Fatal(err)
			}
			sub, err := full.Subset(closure)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			if err := sub.WriteIndex(dir); err != nil {
				t.Fatal(err)
			}
			ix, err := modules.ReadIndex(dir)
			if err != nil {
				t.Fatal(err)
			}
			order, err := ix.Order(prof.Modules)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s (kernel %s): %d board modules -> %d to load", name, k.Release, len(prof.Modules), len(order))
			loaded := map[string]bool{}
			for _, p := range order {
				mi, err := modules.ReadModInfo(filepath.Join(k.ModulesDir, p))
				if err != nil {
					t.Fatal(err)
				}
				for _, d := range mi.Depends {
					if !loaded[d] && !ix.Builtin(d) {
						t.Errorf("%s loads before its dependency %s", mi.Name, d)
					}
				}
				loaded[mi.Name] = true
			}
			if loaded["libcrc32c"] && !loaded["crc32c_generic"] {
				t.Errorf("libcrc32c staged without crc32c_generic")
			}
			for _, m := range prof.Modules {
				if !loaded[modules.Canonical(m)] && !ix.Builtin(m) {
					t.Errorf("board module %s neither loaded nor built in", m)
				}
			}
		})
	}
}
