package modules

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A small index in the real formats, shaped like Debian's: nf_tables needs
// libcrc32c, which has "softdep pre: crc32c", which only crc32c_generic
// provides (by alias).
const (
	testDep = `kernel/net/netfilter/nf_tables.ko: kernel/lib/libcrc32c.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nfnetlink.ko:
kernel/lib/libcrc32c.ko:
kernel/crypto/crc32c_generic.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/netfilter/nf_tables.ko kernel/lib/libcrc32c.ko kernel/net/netfilter/nfnetlink.ko
kernel/net/netfilter/nf_conntrack.ko: kernel/lib/libcrc32c.ko
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/nvme/host/nvme-core.ko:
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko
kernel/drivers/net/ethernet/realtek/r8169.ko:
kernel/drivers/net/phy/realtek.ko:
kernel/drivers/a.ko: kernel/drivers/b.ko
kernel/drivers/b.ko:
kernel/drivers/p.ko:
kernel/drivers/q.ko:
`
	testSoftdep = `softdep libcrc32c pre: crc32c
softdep ext4 pre: crypto-crc32c
softdep jbd2 pre: crypto-crc32c
softdep r8169 pre: realtek
softdep b pre: a
softdep p post: q
softdep q pre: p
`
	testAlias = `alias crc32c crc32c_intel
alias crc32c crc32c_generic
alias crypto-crc32c crc32c_generic
alias crypto-crc32c crc32c_intel
alias net-pf-17 af_packet
`
	testBuiltin = `kernel/net/packet/af_packet.ko
kernel/drivers/char/hw_random/rng-core.ko
`
)

func testIndex(t testing.TB) *Index {
	t.Helper()
	ix, err := ParseIndex([]byte(testDep), []byte(testSoftdep), []byte(testAlias), []byte(testBuiltin))
	if err != nil {
		t.Fatalf("ParseIndex: %v", err)
	}
	return ix
}

func TestOrder(t *testing.T) {
	ix := testIndex(t)
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr error
		errText string
	}{
		{
			name: "libcrc32c soft dependency is crc32c_generic",
			in:   []string{"nf_tables"},
			want: []string{"kernel/net/netfilter/nfnetlink.ko", "kernel/crypto/crc32c_generic.ko", "kernel/lib/libcrc32c.ko", "kernel/net/netfilter/nf_tables.ko"},
		},
		{
			name: "deps loaded once",
			in:   []string{"nft_ct", "nf_tables", "nft_ct"},
			want: []string{"kernel/net/netfilter/nfnetlink.ko", "kernel/crypto/crc32c_generic.ko", "kernel/lib/libcrc32c.ko", "kernel/net/netfilter/nf_tables.ko", "kernel/net/netfilter/nf_conntrack.ko", "kernel/net/netfilter/nft_ct.ko"},
		},
		{
			name: "dash and underscore names are the same module",
			in:   []string{"nvme"},
			want: []string{"kernel/drivers/nvme/host/nvme-core.ko", "kernel/drivers/nvme/host/nvme.ko"},
		},
		{
			name: "ext4 soft dep via crypto alias",
			in:   []string{"ext4"},
			want: []string{"kernel/crypto/crc32c_generic.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko"},
		},
		{
			name: "soft pre of a driver",
			in:   []string{"r8169"},
			want: []string{"kernel/drivers/net/phy/realtek.ko", "kernel/drivers/net/ethernet/realtek/r8169.ko"},
		},
		{
			name: "builtin skipped, by name and by alias",
			in:   []string{"af_packet", "net-pf-17", "rng_core", "rng-core"},
			want: nil,
		},
		{
			name: "post dependency after the module",
			in:   []string{"p"},
			want: []string{"kernel/drivers/p.ko", "kernel/drivers/q.ko"},
		},
		{
			name: "explicit alias request",
			in:   []string{"crc32c"},
			want: []string{"kernel/crypto/crc32c_generic.ko"},
		},
		{name: "unknown", in: []string{"nf_tables", "nosuch"}, wantErr: ErrUnknown, errText: "nosuch"},
		{name: "cycle", in: []string{"a"}, wantErr: ErrCycle, errText: "a -> b -> a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ix.Order(tt.in)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("error %q does not name %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Order(%v) =\n%v\nwant\n%v", tt.in, got, tt.want)
			}
		})
	}
}

func TestUnknownSoftdepTarget(t *testing.T) {
	ix, err := ParseIndex([]byte("kernel/x.ko:\n"), []byte("softdep x pre: nosuch-alias\n"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = ix.Order([]string{"x"})
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "module x: dependency nosuch-alias") {
		t.Fatalf("err = %v, want unknown soft dependency naming x and nosuch-alias", err)
	}
}

func TestClosureAndRoundTrip(t *testing.T) {
	ix := testIndex(t)
	cl, err := ix.Closure([]string{"nft_ct", "ext4", "af_packet"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"crc32c_generic", "ext4", "jbd2", "libcrc32c", "nf_conntrack", "nf_tables", "nfnetlink", "nft_ct"}
	if !reflect.DeepEqual(cl, want) {
		t.Fatalf("Closure = %v, want %v", cl, want)
	}
	sub, err := ix.Subset(cl)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := sub.WriteIndex(dir); err != nil {
		t.Fatal(err)
	}
	back, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Names(), cl) {
		t.Fatalf("read back %v, want %v", back.Names(), cl)
	}
	a, err := ix.Order([]string{"nft_ct", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := back.Order([]string{"nft_ct", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("order differs after write/read:\n%v\n%v", a, b)
	}
	// crc32c_intel was not staged: the alias must now resolve only to the
	// generic module, and modules outside the subset are unknown.
	alias, err := os.ReadFile(filepath.Join(dir, AliasFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(alias), "crc32c_intel") || !strings.Contains(string(alias), "alias crc32c crc32c_generic") {
		t.Fatalf("modules.alias:\n%s", alias)
	}
	if _, err := back.Order([]string{"nvme"}); !errors.Is(err, ErrUnknown) {
		t.Fatalf("nvme outside subset: err = %v", err)
	}
	// modules.dep lists the full closure, nearest dependency first.
	dep, err := os.ReadFile(filepath.Join(dir, DepFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dep), "kernel/net/netfilter/nft_ct.ko: kernel/net/netfilter/nf_conntrack.ko kernel/net/netfilter/nf_tables.ko kernel/lib/libcrc32c.ko kernel/net/netfilter/nfnetlink.ko\n") {
		t.Fatalf("modules.dep:\n%s", dep)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name                      string
		dep, soft, alias, builtin string
		errText                   string
	}{
		{name: "dep no colon", dep: "kernel/a.ko\n", errText: "modules.dep line 1: missing ':'"},
		{name: "dep absolute", dep: "/etc/a.ko:\n", errText: "invalid module path"},
		{name: "dep escape", dep: "../a.ko:\n", errText: "invalid module path"},
		{name: "dep not ko", dep: "kernel/a.so:\n", errText: "not a .ko"},
		{name: "dep dup", dep: "kernel/a.ko:\nkernel/x/a.ko:\n", errText: "listed twice"},
		{name: "dep unknown", dep: "kernel/a.ko: kernel/b.ko\n", errText: "dependency b: unknown module"},
		{name: "softdep syntax", dep: "kernel/a.ko:\n", soft: "softdep a b\n", errText: "before pre: or post:"},
		{name: "softdep unknown module", dep: "kernel/a.ko:\n", soft: "softdep z pre: a\n", errText: "softdep for z"},
		{name: "softdep not softdep", dep: "kernel/a.ko:\n", soft: "options a x=1\n", errText: "want \"softdep"},
		{name: "alias fields", dep: "kernel/a.ko:\n", alias: "alias x\n", errText: "want \"alias"},
		{name: "alias glob", dep: "kernel/a.ko:\n", alias: "alias pci:v*d* a\n", errText: "invalid alias"},
		{name: "alias unknown target", dep: "kernel/a.ko:\n", alias: "alias x b\n", errText: "alias x -> b"},
		{name: "builtin bad", dep: "kernel/a.ko:\n", builtin: "a b c\n", errText: "modules.builtin line 1"},
		{name: "long line", dep: "kernel/a.ko: " + strings.Repeat("x", maxLine) + "\n", errText: "too long"},
		{name: "ok with comments", dep: "# c\n\nkernel/a.ko:\n", soft: "# nothing\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIndex([]byte(tt.dep), []byte(tt.soft), []byte(tt.alias), []byte(tt.builtin))
			if tt.errText == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.errText) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.errText)
			}
		})
	}
}

func TestReadIndexMissing(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadIndex(dir); err == nil || !strings.Contains(err.Error(), DepFile) {
		t.Fatalf("err = %v, want missing modules.dep", err)
	}
	// Only modules.dep is required.
	if err := os.WriteFile(filepath.Join(dir, DepFile), []byte("kernel/a.ko:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ix, err := ReadIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := ix.Names(); !reflect.DeepEqual(got, []string{"a"}) {
		t.Fatalf("Names = %v", got)
	}
	big := bytes.Repeat([]byte("# padding padding padding\n"), maxIndexFile/20)
	if err := os.WriteFile(filepath.Join(dir, AliasFile), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadIndex(dir); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want size limit", err)
	}
}

func TestParseModinfo(t *testing.T) {
	data := []byte("license=GPL\x00depends=nf_tables,nvme-core\x00softdep=pre: crc32c crypto-crc32c post: x\x00" +
		"alias=crypto-crc32c\x00alias=pci:v00008086d*sv*\x00alias=platform:foo\x00name=nft_ct\x00vermagic=6.1.0-56-amd64 SMP mod_unload modversions \x00\x00\x00")
	mi, err := ParseModinfo(data)
	if err != nil {
		t.Fatal(err)
	}
	want := ModInfo{
		Name:     "nft_ct",
		Depends:  []string{"nf_tables", "nvme_core"},
		SoftPre:  []string{"crc32c", "crypto-crc32c"},
		SoftPost: []string{"x"},
		Aliases:  []string{"crypto-crc32c", "platform:foo"},
		Vermagic: "6.1.0-56-amd64 SMP mod_unload modversions ",
	}
	if !reflect.DeepEqual(mi, want) {
		t.Fatalf("got %+v\nwant %+v", mi, want)
	}
	for _, bad := range []string{"name=../x", "depends=a,b/c", "softdep=pre: a/b"} {
		if _, err := ParseModinfo([]byte(bad)); err == nil {
			t.Errorf("ParseModinfo(%q) succeeded", bad)
		}
	}
	// cifs declares "softdep=gcm" without pre:; modprobe ignores the word.
	if mi, err := ParseModinfo([]byte("softdep=gcm\x00")); err != nil || len(mi.SoftPre) != 0 {
		t.Errorf("lenient softdep: %+v, %v", mi, err)
	}
}

func TestReadModInfoNotELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "bogus.ko")
	if err := os.WriteFile(p, []byte("not an elf file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadModInfo(p); err == nil || !strings.Contains(err.Error(), "bogus.ko") {
		t.Fatalf("err = %v, want error naming the file", err)
	}
	xzp := filepath.Join(t.TempDir(), "bogus.ko.xz")
	if err := os.WriteFile(xzp, []byte("not xz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadModInfo(xzp); err == nil || !strings.Contains(err.Error(), "xz") {
		t.Fatalf("err = %v, want xz error", err)
	}
}

func TestLoadErrorsNameModule(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "kernel"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Not a module: finit_module refuses it (ENOEXEC as root, EPERM
	// without CAP_SYS_MODULE); either way nothing is loaded and the error
	// names the module.
	if err := os.WriteFile(filepath.Join(dir, "kernel/edgepbx_bogus.ko"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Load(context.Background(), dir, []string{"kernel/edgepbx_bogus.ko"}, nil)
	if err == nil || !strings.Contains(err.Error(), "load module edgepbx_bogus") {
		t.Fatalf("err = %v, want error naming edgepbx_bogus", err)
	}
	err = Load(context.Background(), dir, []string{"kernel/missing.ko"}, nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want not-exist naming missing", err)
	}
	err = Load(context.Background(), dir, []string{"../../etc/passwd.ko"}, nil)
	if err == nil || !strings.Contains(err.Error(), "invalid module path") {
		t.Fatalf("err = %v, want invalid path", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Load(ctx, dir, []string{"kernel/edgepbx_bogus.ko"}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(testDep), []byte(testSoftdep), []byte(testAlias), []byte(testBuiltin))
	f.Add([]byte("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n"), []byte("softdep a post: b\n"), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, dep, soft, alias, builtin []byte) {
		ix, err := ParseIndex(dep, soft, alias, builtin)
		if err != nil {
			return
		}
		names := ix.Names()
		paths, err := ix.Order(names)
		if err != nil {
			return
		}
		// Every path returned is a clean relative .ko path, each once.
		seen := map[string]bool{}
		for _, p := range paths {
			if err := checkRelPath(p); err != nil {
				t.Fatalf("Order returned bad path: %v", err)
			}
			if seen[p] {
				t.Fatalf("Order returned %s twice", p)
			}
			seen[p] = true
		}
		// What parses must survive a write/read round trip.
		var d, s, a, b bytes.Buffer
		if err := ix.WriteDep(&d); err != nil {
			return // hard-dependency cycle: rejected on write
		}
		if err := ix.WriteSoftdep(&s); err != nil {
			t.Fatal(err)
		}
		if err := ix.WriteAlias(&a); err != nil {
			t.Fatal(err)
		}
		if err := ix.WriteBuiltin(&b); err != nil {
			t.Fatal(err)
		}
		back, err := ParseIndex(d.Bytes(), s.Bytes(), a.Bytes(), b.Bytes())
		if err != nil {
			t.Fatalf("re-parse of written index: %v\n%s", err, d.String())
		}
		if !reflect.DeepEqual(back.Names(), names) {
			t.Fatalf("names differ after round trip")
		}
	})
}

func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("name=nft_ct\x00depends=nf_tables,nf_conntrack\x00softdep=pre: crc32c\x00alias=crypto-crc32c\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		mi, err := ParseModinfo(data)
		if err != nil {
			return
		}
		for _, d := range mi.Depends {
			if !validName(d) || strings.Contains(d, "-") {
				t.Fatalf("bad dependency %q", d)
			}
		}
	})
}
