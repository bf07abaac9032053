// Package modules owns the kernel module index of an edgepbx image and
// loading modules in PID 1.
//
// There is no modprobe in the image and the kernel cannot auto-load modules,
// so PID 1 loads the board's modules itself, in dependency order. The image
// builder (host side) reads each staged module's ELF .modinfo and writes the
// index under /lib/modules/<release>/ in the standard text formats:
//
//	modules.dep      "kernel/a/b.ko: kernel/c.ko kernel/d.ko"  (full closure, depmod order)
//	modules.softdep  "softdep b pre: crc32c post: x"
//	modules.alias    "alias crc32c crc32c_generic"             (plain aliases only, no globs)
//	modules.builtin  "kernel/net/packet/af_packet.ko"         (copied from the kernel package)
//
// PID 1 reads them with ReadIndex, orders a list of names with Order and
// loads the result with Load.
package modules

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// Index file names inside /lib/modules/<release>/.
const (
	DepFile     = "modules.dep"
	SoftdepFile = "modules.softdep"
	AliasFile   = "modules.alias"
	BuiltinFile = "modules.builtin"
)

// Bounds for the PID-1 side parsers: the index is part of the signed image,
// but a corrupt file must give an error, not exhaust memory.
const (
	maxIndexFile = 8 << 20
	maxLine      = 64 << 10
	maxEntries   = 1 << 16
	maxDeps      = 256
)

// Module is one loadable module in an index.
type Module struct {
	Name     string   // canonical name
	Path     string   // relative to the index directory, e.g. kernel/fs/ext4/ext4.ko
	Depends  []string // direct hard dependencies (canonical names)
	SoftPre  []string // softdep pre: names or aliases
	SoftPost []string // softdep post: names or aliases
	Aliases  []string
}

// Index is a module index: loadable modules, aliases and built-in names.
type Index struct {
	mods    map[string]*Module
	aliases map[string][]string // alias -> canonical module names, sorted
	builtin map[string]bool     // canonical names built into the kernel
}

// NewIndex builds an index from modules and the built-in module names.
func NewIndex(mods []Module, builtin []string) (*Index, error) {
	ix := &Index{
		mods:    make(map[string]*Module, len(mods)),
		aliases: make(map[string][]string),
		builtin: make(map[string]bool, len(builtin)),
	}
	for _, b := range builtin {
		ix.builtin[Canonical(b)] = true
	}
	for i := range mods {
		m := mods[i]
		m.Name = Canonical(m.Name)
		if _, dup := ix.mods[m.Name]; dup {
			return nil, fmt.Errorf("module %s: listed twice", m.Name)
		}
		if err := checkRelPath(m.Path); err != nil {
			return nil, fmt.Errorf("module %s: %w", m.Name, err)
		}
		ix.mods[m.Name] = &m
		for _, a := range m.Aliases {
			ix.addAlias(a, m.Name)
		}
	}
	for _, m := range ix.mods {
		for _, d := range m.Depends {
			if ix.mods[d] == nil && !ix.builtin[d] {
				return nil, fmt.Errorf("module %s: dependency %s: %w", m.Name, d, ErrUnknown)
			}
		}
	}
	return ix, nil
}

func (ix *Index) addAlias(alias, name string) {
	for _, n := range ix.aliases[alias] {
		if n == name {
			return
		}
	}
	ix.aliases[alias] = append(ix.aliases[alias], name)
	sort.Strings(ix.aliases[alias])
}

// Module returns the module called name (canonical or not).
func (ix *Index) Module(name string) (Module, bool) {
	m, ok := ix.mods[Canonical(name)]
	if !ok {
		return Module{}, false
	}
	return *m, true
}

// Builtin reports whether name is built into the kernel.
func (ix *Index) Builtin(name string) bool { return ix.builtin[Canonical(name)] }

// Names returns the loadable module names, sorted.
func (ix *Index) Names() []string {
	names := make([]string, 0, len(ix.mods))
	for n := range ix.mods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Errors callers can test for with errors.Is.
var (
	ErrUnknown = errors.New("unknown module")
	ErrCycle   = errors.New("dependency cycle")
)

// resolve maps a module name or alias to a canonical module name. builtin
// is true when the module is compiled into the kernel. When several modules
// provide an alias, a "_generic" provider wins (it works on every CPU), then
// the first by name, so the choice never depends on map order.
func (ix *Index) resolve(name string) (canon string, builtin bool, err error) {
	c := Canonical(name)
	if ix.builtin[c] {
		return c, true, nil
	}
	if _, ok := ix.mods[c]; ok {
		return c, false, nil
	}
	provs := ix.aliases[name]
	if len(provs) == 0 {
		provs = ix.aliases[c]
	}
	if len(provs) == 0 {
		return "", false, fmt.Errorf("%s: %w", name, ErrUnknown)
	}
	pick := provs[0]
	for _, p := range provs {
		if strings.HasSuffix(p, "_generic") {
			pick = p
			break
		}
	}
	return pick, ix.builtin[pick], nil
}

// Closure returns the canonical names of the loadable modules needed to load
// names: the names themselves, their hard dependencies and soft (pre and
// post) dependencies, transitively, sorted. Built-in modules are left out.
func (ix *Index) Closure(names []string) ([]string, error) {
	seen := map[string]bool{}
	var visit func(name, from string) error
	visit = func(name, from string) error {
		c, builtin, err := ix.resolve(name)
		if err != nil {
			if from != "" {
				return fmt.Errorf("module %s: dependency %w", from, err)
			}
			return err
		}
		if builtin || seen[c] {
			return nil
		}
		seen[c] = true
		m := ix.mods[c]
		for _, list := range [][]string{m.SoftPre, m.Depends, m.SoftPost} {
			for _, d := range list {
				if err := visit(d, c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

// Order returns the paths (relative to the index directory) of the modules
// to load for names, in load order: soft pre-dependencies, then hard
// dependencies, then the module, then its soft post-dependencies. Aliases
// are resolved, built-in modules skipped, duplicates loaded once. Unknown
// names and dependency cycles are errors.
func (ix *Index) Order(names []string) ([]string, error) {
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var out []string
	var stack []string
	var visit func(name string) error
	visit = func(name string) error {
		c, builtin, err := ix.resolve(name)
		if err != nil {
			if len(stack) > 0 {
				return fmt.Errorf("module %s: dependency %w", stack[len(stack)-1], err)
			}
			return err
		}
		if builtin {
			return nil
		}
		switch state[c] {
		case done:
			return nil
		case visiting:
			return fmt.Errorf("%w: %s -> %s", ErrCycle, strings.Join(stack, " -> "), c)
		}
		m := ix.mods[c]
		state[c] = visiting
		stack = append(stack, c)
		for _, list := range [][]string{m.SoftPre, m.Depends} {
			for _, d := range list {
				if err := visit(d); err != nil {
					return err
				}
			}
		}
		stack = stack[:len(stack)-1]
		state[c] = done
		out = append(out, m.Path)
		// Post dependencies come after the module; they may depend on it.
		for _, d := range m.SoftPost {
			if err := visit(d); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Subset returns an index restricted to the given loadable modules (which
// must be closed under dependencies, as Closure returns) and the same
// built-in set. Aliases of modules outside the subset are dropped.
func (ix *Index) Subset(names []string) (*Index, error) {
	mods := make([]Module, 0, len(names))
	for _, n := range names {
		m, ok := ix.mods[Canonical(n)]
		if !ok {
			return nil, fmt.Errorf("%s: %w", n, ErrUnknown)
		}
		mods = append(mods, *m)
	}
	builtin := make([]string, 0, len(ix.builtin))
	for b := range ix.builtin {
		builtin = append(builtin, b)
	}
	sub, err := NewIndex(mods, builtin)
	if err != nil {
		return nil, err
	}
	// Keep the aliases of the kept and the built-in modules (crypto-crc32c
	// may be built in on some kernels).
	for a, provs := range ix.aliases {
		for _, p := range provs {
			if sub.mods[p] != nil || ix.builtin[p] {
				sub.addAlias(a, p)
			}
		}
	}
	return sub, nil
}

// WithPaths returns a copy of the index with each module's path replaced by
// fn(module).
func (ix *Index) WithPaths(fn func(Module) string) (*Index, error) {
	mods := make([]Module, 0, len(ix.mods))
	for _, n := range ix.Names() {
		m := *ix.mods[n]
		m.Path = fn(m)
		mods = append(mods, m)
	}
	sub, err := NewIndex(mods, ix.sortedBuiltin())
	if err != nil {
		return nil, err
	}
	for a, provs := range ix.aliases {
		for _, p := range provs {
			sub.addAlias(a, p)
		}
	}
	return sub, nil
}

// builtinPaths are the modules.builtin lines, kept verbatim when the index
// is written; names alone are enough to read it back.
func (ix *Index) sortedBuiltin() []string {
	out := make([]string, 0, len(ix.builtin))
	for b := range ix.builtin {
		out = append(out, b)
	}
	sort.Strings(out)
	return out
}

// WriteDep writes modules.dep: every module with its full dependency
// closure, nearest dependencies last (depmod's order: loaded right to left).
func (ix *Index) WriteDep(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, n := range ix.Names() {
		m := ix.mods[n]
		order, err := ix.hardOrder(n)
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, "%s:", m.Path)
		// order ends with the module itself; list its deps reversed.
		for i := len(order) - 2; i >= 0; i-- {
			fmt.Fprintf(bw, " %s", ix.mods[order[i]].Path)
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// hardOrder is the load order of a module's hard dependencies, ending with
// the module.
func (ix *Index) hardOrder(name string) ([]string, error) {
	state := map[string]int{}
	var out []string
	var visit func(string) error
	visit = func(n string) error {
		if ix.builtin[n] {
			return nil
		}
		m := ix.mods[n]
		if m == nil {
			return fmt.Errorf("%s: %w", n, ErrUnknown)
		}
		switch state[n] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("%w at %s", ErrCycle, n)
		}
		state[n] = 1
		for _, d := range m.Depends {
			if err := visit(d); err != nil {
				return err
			}
		}
		state[n] = 2
		out = append(out, n)
		return nil
	}
	if err := visit(name); err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	return out, nil
}

// WriteSoftdep writes modules.softdep.
func (ix *Index) WriteSoftdep(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, n := range ix.Names() {
		m := ix.mods[n]
		if len(m.SoftPre) == 0 && len(m.SoftPost) == 0 {
			continue
		}
		fmt.Fprintf(bw, "softdep %s", n)
		if len(m.SoftPre) > 0 {
			fmt.Fprintf(bw, " pre: %s", strings.Join(m.SoftPre, " "))
		}
		if len(m.SoftPost) > 0 {
			fmt.Fprintf(bw, " post: %s", strings.Join(m.SoftPost, " "))
		}
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// WriteAlias writes modules.alias (plain aliases only).
func (ix *Index) WriteAlias(w io.Writer) error {
	bw := bufio.NewWriter(w)
	keys := make([]string, 0, len(ix.aliases))
	for a := range ix.aliases {
		keys = append(keys, a)
	}
	sort.Strings(keys)
	for _, a := range keys {
		for _, p := range ix.aliases[a] {
			fmt.Fprintf(bw, "alias %s %s\n", a, p)
		}
	}
	return bw.Flush()
}

// WriteBuiltin writes modules.builtin with one pseudo path per built-in
// module (names are all PID 1 needs).
func (ix *Index) WriteBuiltin(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for _, b := range ix.sortedBuiltin() {
		fmt.Fprintf(bw, "kernel/%s.ko\n", b)
	}
	return bw.Flush()
}

// WriteIndex writes the four index files into dir, each via a temporary file
// and rename so a reader never sees a half-written file.
func (ix *Index) WriteIndex(dir string) error {
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{DepFile, ix.WriteDep},
		{SoftdepFile, ix.WriteSoftdep},
		{AliasFile, ix.WriteAlias},
		{BuiltinFile, ix.WriteBuiltin},
	} {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return fmt.Errorf("write %s: %w", f.name, err)
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// ReadIndex reads the index files from dir (PID 1: /lib/modules/<release>).
// modules.dep is required; the others may be absent.
func ReadIndex(dir string) (*Index, error) {
	read := func(name string, required bool) ([]byte, error) {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			if !required && errors.Is(err, os.ErrNotExist) {
				return nil, nil
			}
			return nil, fmt.Errorf("module index: %w", err)
		}
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, maxIndexFile+1))
		if err != nil {
			return nil, fmt.Errorf("module index %s: %w", name, err)
		}
		if len(data) > maxIndexFile {
			return nil, fmt.Errorf("module index %s: larger than %d bytes", name, maxIndexFile)
		}
		return data, nil
	}
	dep, err := read(DepFile, true)
	if err != nil {
		return nil, err
	}
	soft, err := read(SoftdepFile, false)
	if err != nil {
		return nil, err
	}
	alias, err := read(AliasFile, false)
	if err != nil {
		return nil, err
	}
	builtin, err := read(BuiltinFile, false)
	if err != nil {
		return nil, err
	}
	return ParseIndex(dep, soft, alias, builtin)
}

// ParseIndex parses the contents of modules.dep, modules.softdep,
// modules.alias and modules.builtin.
func ParseIndex(dep, softdep, alias, builtin []byte) (*Index, error) {
	mods, err := ParseDep(dep)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]int, len(mods))
	for i, m := range mods {
		byName[m.Name] = i
	}
	soft, err := ParseSoftdep(softdep)
	if err != nil {
		return nil, err
	}
	for name, s := range soft {
		i, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("%s: softdep for %s: %w", SoftdepFile, name, ErrUnknown)
		}
		mods[i].SoftPre, mods[i].SoftPost = s[0], s[1]
	}
	aliases, err := ParseAlias(alias)
	if err != nil {
		return nil, err
	}
	bnames, err := ParseBuiltin(builtin)
	if err != nil {
		return nil, err
	}
	ix, err := NewIndex(mods, bnames)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DepFile, err)
	}
	for _, a := range aliases {
		if ix.mods[a[1]] == nil && !ix.builtin[a[1]] {
			return nil, fmt.Errorf("%s: alias %s -> %s: %w", AliasFile, a[0], a[1], ErrUnknown)
		}
		ix.addAlias(a[0], a[1])
	}
	return ix, nil
}

// lines splits data into non-empty, non-comment lines with bounds.
func lines(file string, data []byte, fn func(no int, line string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	no, n := 0, 0
	for sc.Scan() {
		no++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		n++
		if n > maxEntries {
			return fmt.Errorf("%s: more than %d entries", file, maxEntries)
		}
		if err := fn(no, line); err != nil {
			return fmt.Errorf("%s line %d: %w", file, no, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}

// ParseDep parses modules.dep. A module's direct dependencies are not
// recorded separately in the format; the full closure listed is used as its
// dependency list, which gives the same load order.
func ParseDep(data []byte) ([]Module, error) {
	var mods []Module
	seen := map[string]bool{}
	err := lines(DepFile, data, func(_ int, line string) error {
		p, rest, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New("missing ':'")
		}
		if err := checkRelPath(p); err != nil {
			return err
		}
		m := Module{Name: NameFromPath(p), Path: p}
		if seen[m.Name] {
			return fmt.Errorf("module %s listed twice", m.Name)
		}
		seen[m.Name] = true
		deps := strings.Fields(rest)
		if len(deps) > maxDeps {
			return fmt.Errorf("module %s: more than %d dependencies", m.Name, maxDeps)
		}
		// depmod lists the nearest dependency first and loads right to
		// left; keep that order reversed so Order loads far deps first.
		for i := len(deps) - 1; i >= 0; i-- {
			if err := checkRelPath(deps[i]); err != nil {
				return err
			}
			m.Depends = append(m.Depends, NameFromPath(deps[i]))
		}
		mods = append(mods, m)
		return nil
	})
	return mods, err
}

// ParseSoftdep parses modules.softdep into name -> [pre, post].
func ParseSoftdep(data []byte) (map[string][2][]string, error) {
	out := map[string][2][]string{}
	err := lines(SoftdepFile, data, func(_ int, line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return errors.New(`want "softdep <module> pre: … post: …"`)
		}
		if !validName(f[1]) {
			return fmt.Errorf("invalid module name %q", f[1])
		}
		if len(f) > maxDeps {
			return errors.New("too many soft dependencies")
		}
		pre, post, err := parseSoftdep(f[2:], false)
		if err != nil {
			return err
		}
		name := Canonical(f[1])
		if _, dup := out[name]; dup {
			return fmt.Errorf("softdep for %s listed twice", name)
		}
		out[name] = [2][]string{pre, post}
		return nil
	})
	return out, err
}

// ParseAlias parses modules.alias into [alias, module] pairs.
func ParseAlias(data []byte) ([][2]string, error) {
	var out [][2]string
	err := lines(AliasFile, data, func(_ int, line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return errors.New(`want "alias <alias> <module>"`)
		}
		if !validToken(f[1]) || !validName(f[2]) {
			return fmt.Errorf("invalid alias %q -> %q", f[1], f[2])
		}
		out = append(out, [2]string{f[1], Canonical(f[2])})
		return nil
	})
	return out, err
}

// ParseBuiltin parses modules.builtin into canonical module names.
func ParseBuiltin(data []byte) ([]string, error) {
	var out []string
	err := lines(BuiltinFile, data, func(_ int, line string) error {
		if err := checkRelPath(line); err != nil {
			return err
		}
		out = append(out, NameFromPath(line))
		return nil
	})
	return out, err
}

// checkRelPath accepts clean relative paths to .ko files inside the index
// directory.
func checkRelPath(p string) error {
	if p == "" || len(p) > 512 || path.IsAbs(p) || path.Clean(p) != p || strings.HasPrefix(p, "../") || p == ".." {
		return fmt.Errorf("invalid module path %q", p)
	}
	if !strings.HasSuffix(p, ".ko") && !strings.HasSuffix(p, ".ko.xz") {
		return fmt.Errorf("invalid module path %q: not a .ko file", p)
	}
	if !validName(strings.TrimSuffix(strings.TrimSuffix(path.Base(p), ".xz"), ".ko")) {
		return fmt.Errorf("invalid module file name in %q", p)
	}
	for _, c := range p {
		if c <= ' ' || c == ':' || c == 0x7f {
			return fmt.Errorf("invalid character in module path %q", p)
		}
	}
	return nil
}
