package modules

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// maxBuiltinModinfo bounds modules.builtin.modinfo (Debian's is ~600 KiB).
const maxBuiltinModinfo = 16 << 20

// ScanDir builds the index of a kernel's module tree (host side), e.g. an
// extracted Debian package's lib/modules/<release>. It reads every .ko or
// .ko.xz below dir/kernel, modules.builtin, and the aliases of built-in
// modules from modules.builtin.modinfo when present.
func ScanDir(dir string) (*Index, error) {
	var paths []string
	err := filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && (strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz")) {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	sort.Strings(paths)
	mods := make([]Module, len(paths))
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	work := make(chan int)
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				mi, err := ReadModInfo(paths[i])
				if err != nil {
					errs[i] = err
					continue
				}
				rel, err := filepath.Rel(dir, paths[i])
				if err != nil {
					errs[i] = err
					continue
				}
				mods[i] = Module{
					Name:     mi.Name,
					Path:     filepath.ToSlash(rel),
					Depends:  mi.Depends,
					SoftPre:  mi.SoftPre,
					SoftPost: mi.SoftPost,
					Aliases:  mi.Aliases,
				}
			}
		}()
	}
	for i := range paths {
		work <- i
	}
	close(work)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	bdata, err := os.ReadFile(filepath.Join(dir, BuiltinFile))
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	builtin, err := ParseBuiltin(bdata)
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	ix, err := NewIndex(mods, builtin)
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	mdata, err := os.ReadFile(filepath.Join(dir, "modules.builtin.modinfo"))
	switch {
	case os.IsNotExist(err):
	case err != nil:
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	case len(mdata) > maxBuiltinModinfo:
		return nil, fmt.Errorf("scan modules in %s: modules.builtin.modinfo too large", dir)
	default:
		for _, a := range parseBuiltinModinfo(mdata) {
			if ix.builtin[a[1]] {
				ix.addAlias(a[0], a[1])
			}
		}
	}
	return ix, nil
}

// parseBuiltinModinfo returns [alias, module] pairs from the
// "module.alias=value" NUL-separated records of modules.builtin.modinfo.
func parseBuiltinModinfo(data []byte) [][2]string {
	var out [][2]string
	for _, rec := range bytes.Split(data, []byte{0}) {
		key, val, ok := strings.Cut(string(rec), "=")
		if !ok {
			continue
		}
		mod, field, ok := strings.Cut(key, ".")
		if !ok || field != "alias" || !validName(mod) || !validToken(val) {
			continue
		}
		out = append(out, [2]string{val, Canonical(mod)})
	}
	return out
}
