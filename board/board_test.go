package board

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestLoadAll(t *testing.T) {
	want := []string{"pc-x86_64", "qemu-arm64", "qemu-x86_64", "uefi-arm64"}
	if got := Names(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, name := range want {
		p, err := Load(name)
		if err != nil {
			t.Fatalf("Load(%q): %v", name, err)
		}
		data, err := p.Marshal()
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		back, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: Parse(Marshal()): %v", name, err)
		}
		if !reflect.DeepEqual(p, back) {
			t.Fatalf("%s: round trip differs:\n%+v\n%+v", name, p, back)
		}
	}
}

func TestBoardFacts(t *testing.T) {
	tests := []struct {
		board, arch, console, kpkg string
		qemuMachine                string
		modules                    []string
	}{
		{"qemu-x86_64", "amd64", "ttyS0", "linux-image-amd64", "microvm",
			[]string{"virtio_mmio", "virtio_net", "virtio_blk", "virtio_rng", "ext4", "crc32c_generic", "nf_tables", "nft_ct", "nft_limit", "nft_connlimit", "softdog", "evdev", "button"}},
		{"qemu-arm64", "arm64", "ttyAMA0", "linux-image-arm64", "virt",
			[]string{"virtio_mmio", "virtio_net", "virtio_blk", "virtio_rng", "ext4", "crc32c_generic", "nf_tables", "nft_ct", "softdog", "evdev", "gpio_keys"}},
		{"pc-x86_64", "amd64", "tty0", "linux-image-amd64", "",
			[]string{"e1000e", "igb", "r8169", "i6300esb", "iTCO_wdt", "ahci", "nvme", "ext4", "nf_tables"}},
	}
	for _, tt := range tests {
		t.Run(tt.board, func(t *testing.T) {
			p, err := Load(tt.board)
			if err != nil {
				t.Fatal(err)
			}
			if p.Arch != tt.arch || p.Console != tt.console || p.KernelPackage != tt.kpkg {
				t.Errorf("got arch=%s console=%s kpkg=%s", p.Arch, p.Console, p.KernelPackage)
			}
			if (p.QEMU == nil) != (tt.qemuMachine == "") {
				t.Fatalf("qemu section = %+v, want machine %q", p.QEMU, tt.qemuMachine)
			}
			if p.QEMU != nil && p.QEMU.Machine != tt.qemuMachine {
				t.Errorf("qemu machine = %q, want %q", p.QEMU.Machine, tt.qemuMachine)
			}
			have := map[string]bool{}
			for _, m := range p.Modules {
				have[m] = true
			}
			for _, m := range tt.modules {
				if !have[m] {
					t.Errorf("module %s missing", m)
				}
			}
		})
	}
}

const good = `{"name":"b","arch":"amd64","console":"ttyS0","kernel_package":"linux-image-amd64",
"modules":["softdog","nf_tables"],"nics":[{"name":"eth0","mode":"dhcp"}],
"data":{"device":"/dev/vda","fstype":"ext4"},
"watchdog":{"device":"/dev/watchdog0","module":"softdog","timeout_sec":30}}`

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, old, new, wantErr string
	}{
		{"ok", "", "", ""},
		{"unknown arch", `"arch":"amd64"`, `"arch":"riscv64"`, `arch "riscv64": unknown`},
		{"unknown field", `"console"`, `"colour":"red","console"`, `unknown field "colour"`},
		{"corrupt", `}}`, `}`, "corrupt JSON"},
		{"trailing", `"timeout_sec":30}}`, `"timeout_sec":30}}{}`, "trailing data"},
		{"empty modules", `["softdog","nf_tables"]`, `[]`, "modules: empty"},
		{"bad module", `"nf_tables"]`, `"../evil"]`, `invalid module name "../evil"`},
		{"dup module", `"nf_tables"]`, `"softdog"]`, `"softdog" listed twice`},
		{"watchdog module missing", `"module":"softdog"`, `"module":"i6300esb"`, `module "i6300esb": not in the board's modules`},
		{"timeout", `"timeout_sec":30`, `"timeout_sec":0`, "timeout_sec 0"},
		{"console", `"ttyS0"`, `"/dev/ttyS0"`, "console"},
		{"kernel package", `"linux-image-amd64"`, `"bash"`, "kernel_package"},
		{"nic mode", `"mode":"dhcp"`, `"mode":"auto"`, `mode "auto"`},
		{"static needs address", `"mode":"dhcp"`, `"mode":"static"`, "want CIDR"},
		{"static ok", `"mode":"dhcp"`, `"mode":"static","address":"192.0.2.10/24","gateway":"192.0.2.1"`, ""},
		{"gateway outside", `"mode":"dhcp"`, `"mode":"static","address":"192.0.2.10/24","gateway":"198.51.100.1"`, "outside"},
		{"dhcp with address", `"mode":"dhcp"`, `"mode":"dhcp","address":"192.0.2.10/24"`, "only for mode"},
		{"data device", `"/dev/vda"`, `"/dev/../etc/passwd"`, "invalid /dev path"},
		{"partlabel", `"/dev/vda"`, `"PARTLABEL=edgepbx-data"`, ""},
		{"fstype", `"ext4"`, `"ntfs"`, `fstype "ntfs"`},
		{"qemu wrong binary", `"watchdog"`, `"qemu":{"binary":"qemu-system-aarch64","machine":"microvm","cpu":"max"},"watchdog"`, "want \"qemu-system-x86_64\""},
		{"qemu ok", `"watchdog"`, `"qemu":{"binary":"qemu-system-x86_64","machine":"microvm","cpu":"max"},"watchdog"`, ""},
		{"not an object", good, `[]`, "corrupt JSON"},
		{"empty", good, ``, "corrupt JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := good
			if tt.old != "" {
				if !strings.Contains(in, tt.old) {
					t.Fatalf("test bug: %q not in profile", tt.old)
				}
				in = strings.Replace(in, tt.old, tt.new, 1)
			}
			_, err := Parse([]byte(in))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("Parse succeeded, want error %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	big := make([]byte, MaxProfileSize+1)
	if _, err := Parse(big); err == nil || !strings.Contains(err.Error(), "exceeds limit") {
		t.Fatalf("err = %v, want size limit error", err)
	}
}

func TestLoadUnknown(t *testing.T) {
	for _, name := range []string{"nosuch", "../profiles/qemu-x86_64", "", "QEMU"} {
		_, err := Load(name)
		if !errors.Is(err, ErrUnknownBoard) {
			t.Errorf("Load(%q) = %v, want ErrUnknownBoard", name, err)
		}
		if err != nil && !strings.Contains(err.Error(), "qemu-x86_64") {
			t.Errorf("Load(%q) error %q does not list known boards", name, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	for _, n := range Names() {
		data, err := profiles.ReadFile("profiles/" + n + ".json")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever parses must re-encode and parse to the same profile.
		out, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal of valid profile: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v", err)
		}
		if !reflect.DeepEqual(p, back) {
			t.Fatalf("round trip differs: %+v vs %+v", p, back)
		}
	})
}
