package qemu

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// argValue returns the value following flag, or "" when absent; n selects
// the n-th occurrence.
func argValues(a []string, flag string) []string {
	var v []string
	for i := 0; i+1 < len(a); i++ {
		if a[i] == flag {
			v = append(v, a[i+1])
		}
	}
	return v
}

func TestArgs(t *testing.T) {
	x86 := Target{Arch: ArchX86_64, Kernel: "/k/vmlinux", Initramfs: "/k/initrd", Cmdline: "quiet"}
	arm := Target{Arch: ArchARM64, Kernel: "/k/Image", Initramfs: "/k/initrd"}
	tests := []struct {
		name    string
		target  Target
		opts    []Option
		machine string
		cpu     string
		append  string
		devices []string
		netdev  string
		kvm     bool
	}{
		{
			name: "x86_64 microvm tcg", target: x86,
			machine: "microvm,acpi=on,x-option-roms=off,rtc=on,isa-serial=on,accel=tcg",
			cpu:     "max",
			append:  "console=ttyS0 quiet panic=-1",
			devices: []string{"virtio-rng-device", "virtio-net-device,netdev=net0"},
			netdev:  "user,id=net0,restrict=on",
		},
		{
			name: "x86_64 kvm disk forwards", target: x86,
			opts: []Option{WithKVM(true), withTSC(2596122), WithDataDisk("/d/a,b.img"), WithHostForward("tcp", 8443, 443),
				WithHostForward("udp", 5060, 5060), WithMemory(256), WithAppend("edgepbx.x=1")},
			machine: "microvm,acpi=on,x-option-roms=off,rtc=on,isa-serial=on,accel=kvm",
			cpu:     "host",
			append:  "console=ttyS0 quiet panic=-1 tsc_early_khz=2596122 edgepbx.x=1",
			devices: []string{"virtio-rng-device", "virtio-blk-device,drive=data0", "virtio-net-device,netdev=net0"},
			netdev:  "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8443-:443,hostfwd=udp:127.0.0.1:5060-:5060",
			kvm:     true,
		},
		{
			name: "x86_64 guest forward", target: x86,
			opts: []Option{WithHostForward("tcp", 8443, 443),
				WithGuestForward(netip.MustParseAddrPort("10.0.2.100:443"), netip.MustParseAddrPort("127.0.0.1:40443"))},
			machine: "microvm,acpi=on,x-option-roms=off,rtc=on,isa-serial=on,accel=tcg",
			cpu:     "max",
			append:  "console=ttyS0 quiet panic=-1",
			devices: []string{"virtio-rng-device", "virtio-net-device,netdev=net0"},
			netdev:  "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8443-:443,guestfwd=tcp:10.0.2.100:443-tcp:127.0.0.1:40443",
		},
		{
			name: "x86_64 guest forward per connection", target: x86,
			opts:    []Option{WithGuestForwardEach(netip.MustParseAddrPort("10.0.2.101:443"), netip.MustParseAddrPort("127.0.0.1:40444"))},
			machine: "microvm,acpi=on,x-option-roms=off,rtc=on,isa-serial=on,accel=tcg",
			cpu:     "max",
			append:  "console=ttyS0 quiet panic=-1",
			devices: []string{"virtio-rng-device", "virtio-net-device,netdev=net0"},
			netdev:  "user,id=net0,restrict=on,guestfwd=tcp:10.0.2.101:443-cmd:busybox nc 127.0.0.1 40444",
		},
		{
			name: "arm64 virt", target: arm,
			machine: "virt,accel=tcg",
			cpu:     "cortex-a57",
			append:  "console=ttyAMA0 panic=-1",
			devices: []string{"virtio-rng-device", "virtio-net-device,netdev=net0"},
			netdev:  "user,id=net0,restrict=on",
		},
		{
			name: "board machine and console kept", opts: []Option{WithTap("/run/netns/x", "tap0")},
			target: Target{Arch: ArchX86_64, Machine: "q35", CPU: "qemu64", Kernel: "/k", Initramfs: "/i",
				Cmdline: "console=hvc0 panic=5"},
			machine: "q35,accel=tcg",
			cpu:     "qemu64",
			append:  "console=hvc0 panic=5",
			devices: []string{"virtio-rng-device", "virtio-net-device,netdev=net0"},
			netdev:  "tap,id=net0,fd=3",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := defaultConfig()
			for _, o := range tc.opts {
				if err := o(&c); err != nil {
					t.Fatal(err)
				}
			}
			tg, err := tc.target.withDefaults(c.kvm)
			if err != nil {
				t.Fatal(err)
			}
			a, err := args(tg, c, "/tmp/q,mp.sock")
			if err != nil {
				t.Fatal(err)
			}
			check := func(flag, want string) {
				t.Helper()
				if got := argValues(a, flag); len(got) != 1 || got[0] != want {
					t.Errorf("%s = %q, want %q", flag, got, want)
				}
			}
			check("-M", tc.machine)
			check("-cpu", tc.cpu)
			check("-append", tc.append)
			check("-netdev", tc.netdev)
			check("-kernel", tg.Kernel)
			check("-initrd", tg.Initramfs)
			check("-serial", "chardev:con0")
			check("-mon", "chardev=qmp0,mode=control")
			if got := argValues(a, "-device"); !slices.Equal(got, tc.devices) {
				t.Errorf("-device = %q, want %q", got, tc.devices)
			}
			if c.dataDisk != "" {
				check("-drive", "id=data0,if=none,format=raw,cache=writeback,file=/d/a,,b.img")
			}
			if got := argValues(a, "-chardev"); len(got) != 2 || got[1] != "socket,id=qmp0,path=/tmp/q,,mp.sock,server=on,wait=off" {
				t.Errorf("-chardev = %q", got)
			}
			if slices.Contains(a, "-enable-kvm") != tc.kvm {
				t.Errorf("-enable-kvm present = %v, want %v", !tc.kvm, tc.kvm)
			}
			for _, must := range []string{"-nodefaults", "-no-reboot"} {
				if !slices.Contains(a, must) {
					t.Errorf("missing %s in %q", must, a)
				}
			}
		})
	}
}

func withTSC(khz int) Option {
	return func(c *config) error { c.tscKHz = khz; return nil }
}

func TestArgsRejects(t *testing.T) {
	good := Target{Arch: ArchX86_64, Kernel: "/k", Initramfs: "/i"}
	targets := map[string]Target{
		"arch":      {Arch: "mips", Kernel: "/k", Initramfs: "/i"},
		"kernel":    {Arch: ArchX86_64, Initramfs: "/i"},
		"initramfs": {Arch: ArchARM64, Kernel: "/k"},
		"newline":   {Arch: ArchX86_64, Kernel: "/k", Initramfs: "/i", Cmdline: "a\nb"},
	}
	for name, tg := range targets {
		if _, err := tg.withDefaults(false); err == nil {
			t.Errorf("target %s: accepted", name)
		}
	}
	opts := map[string]Option{
		"proto":                      WithHostForward("sctp", 1, 2),
		"guest port":                 WithHostForward("tcp", 0, 0),
		"host port":                  WithHostForward("udp", 70000, 5060),
		"memory":                     WithMemory(8),
		"append":                     WithAppend("x\ny"),
		"disk":                       WithDataDisk(""),
		"disk size":                  WithDataDiskSize(1),
		"tap name":                   WithTap("/run/netns/x", "a-very-long-tap-name"),
		"tap netns":                  WithTap("", "tap0"),
		"guest fwd outside user net": WithGuestForward(netip.MustParseAddrPort("192.168.1.5:443"), netip.MustParseAddrPort("127.0.0.1:1")),
		"guest fwd onto gateway":     WithGuestForward(netip.MustParseAddrPort("10.0.2.2:443"), netip.MustParseAddrPort("127.0.0.1:1")),
		"guest fwd onto guest":       WithGuestForward(netip.MustParseAddrPort("10.0.2.15:80"), netip.MustParseAddrPort("127.0.0.1:1")),
		"guest fwd v6":               WithGuestForward(netip.MustParseAddrPort("[fec0::100]:443"), netip.MustParseAddrPort("127.0.0.1:1")),
		"guest fwd port 0":           WithGuestForward(netip.MustParseAddrPort("10.0.2.100:0"), netip.MustParseAddrPort("127.0.0.1:1")),
		"guest fwd to non-loopback":  WithGuestForward(netip.MustParseAddrPort("10.0.2.100:443"), netip.MustParseAddrPort("10.1.1.1:443")),
		"guest fwd to port 0":        WithGuestForward(netip.MustParseAddrPort("10.0.2.100:443"), netip.MustParseAddrPort("127.0.0.1:0")),
	}
	for name, o := range opts {
		c := defaultConfig()
		if err := o(&c); err == nil {
			t.Errorf("option %s: accepted", name)
		}
	}
	gc := defaultConfig()
	g := WithGuestForward(netip.MustParseAddrPort("10.0.2.100:443"), netip.MustParseAddrPort("127.0.0.1:8443"))
	if err := g(&gc); err != nil {
		t.Fatal(err)
	}
	if err := g(&gc); err == nil {
		t.Error("duplicate guest forward accepted")
	}
	WithTap("/run/netns/x", "tap0")(&gc)
	if _, err := args(good, gc, "/q"); err == nil {
		t.Error("guest forward with a tap accepted")
	}
	c := defaultConfig()
	WithHostForward("tcp", 0, 443)(&c)
	if err := WithHostForward("tcp", 0, 443)(&c); err == nil {
		t.Error("duplicate forward accepted")
	}
	// A forward still without a host port is a bug in the caller, not a flag.
	if _, err := args(good, c, "/q"); err == nil || !strings.Contains(err.Error(), "no host port") {
		t.Errorf("unpicked port: err = %v", err)
	}
}

func TestParseArch(t *testing.T) {
	for in, want := range map[string]Arch{"amd64": ArchX86_64, "x86_64": ArchX86_64, "x86-64": ArchX86_64, "arm64": ArchARM64, "aarch64": ArchARM64} {
		if got, err := ParseArch(in); err != nil || got != want {
			t.Errorf("ParseArch(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseArch("riscv64"); err == nil {
		t.Error("riscv64 accepted")
	}
}

func TestPickPorts(t *testing.T) {
	in := []Forward{{"tcp", 0, 443}, {"udp", 0, 5060}, {"tcp", 0, 5060}, {"tcp", 12345, 22}}
	out, err := pickPorts(in)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, f := range out {
		if f.GuestPort != in[i].GuestPort || f.Proto != in[i].Proto {
			t.Errorf("forward %d changed: %+v", i, f)
		}
		if f.HostPort <= 0 {
			t.Errorf("forward %d: no port", i)
		}
		key := f.Proto + ":" + strconv.Itoa(f.HostPort)
		if seen[key] {
			t.Errorf("port %s picked twice", key)
		}
		seen[key] = true
	}
	if out[3].HostPort != 12345 || in[0].HostPort != 0 {
		t.Errorf("fixed port changed or input modified: %+v %+v", out[3], in[0])
	}
}

// A TPM is an swtpm control socket behind QEMU's emulator backend, on the
// TIS device x86 machines describe in ACPI; arm64 is refused (no driver).
func TestArgsTPM(t *testing.T) {
	for _, tc := range []struct {
		target Target
		device string
	}{
		{Target{Arch: ArchX86_64, Kernel: "/k", Initramfs: "/i"}, "tpm-tis,tpmdev=tpm0"},
	} {
		c := defaultConfig()
		if err := WithTPM("/tmp/sw,tpm/ctrl")(&c); err != nil {
			t.Fatal(err)
		}
		tg, err := tc.target.withDefaults(false)
		if err != nil {
			t.Fatal(err)
		}
		a, err := args(tg, c, "/tmp/qmp.sock")
		if err != nil {
			t.Fatal(err)
		}
		if got := argValues(a, "-chardev"); !slices.Contains(got, "socket,id=tpmc0,path=/tmp/sw,,tpm/ctrl") {
			t.Errorf("%s: -chardev %q", tc.target.Arch, got)
		}
		if got := argValues(a, "-tpmdev"); !slices.Equal(got, []string{"emulator,id=tpm0,chardev=tpmc0"}) {
			t.Errorf("%s: -tpmdev %q", tc.target.Arch, got)
		}
		if got := argValues(a, "-device"); !slices.Contains(got, tc.device) {
			t.Errorf("%s: -device %q, want %q", tc.target.Arch, got, tc.device)
		}
		ap := argValues(a, "-append")
		if len(ap) != 1 || !strings.Contains(ap[0], "tpm_tis.force=1 tpm_tis.interrupts=0") {
			t.Errorf("%s: -append %q: microvm needs tpm_tis.force=1 (it has no TPM2 ACPI table)", tc.target.Arch, ap)
		}
	}
	c := defaultConfig()
	if err := WithTPM("")(&c); err == nil {
		t.Error("empty TPM socket accepted")
	}
	if err := WithTPM("/tmp/ctrl")(&c); err != nil {
		t.Fatal(err)
	}
	arm, err := Target{Arch: ArchARM64, Kernel: "/k", Initramfs: "/i"}.withDefaults(false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := args(arm, c, "/tmp/qmp.sock"); err == nil {
		t.Error("arm64 with a TPM accepted: its kernel has no driver for the device")
	}
}

// A UEFI target boots the disk through firmware: no -kernel, the two
// pflash halves, the disk on the bus the board's drivers know.
func TestArgsUEFI(t *testing.T) {
	u := &UEFI{Code: "/fw/CODE.fd", Vars: "/w/vars.fd", Disk: "/w/disk.img"}
	for _, tc := range []struct {
		arch    Arch
		machine string
		disk    string
		nic     string
	}{
		{ArchX86_64, "q35,accel=tcg", "ide-hd,drive=disk0,bus=ide.0", "e1000e,netdev=net0"},
		{ArchARM64, "virt,accel=tcg", "virtio-blk-pci,drive=disk0", "virtio-net-pci,netdev=net0"},
	} {
		t.Run(string(tc.arch), func(t *testing.T) {
			tg, err := Target{Arch: tc.arch, UEFI: u}.withDefaults(false)
			if err != nil {
				t.Fatal(err)
			}
			a, err := args(tg, defaultConfig(), "/tmp/qmp.sock")
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"-kernel", "-initrd", "-append"} {
				if slices.Contains(a, f) {
					t.Fatalf("%s in a firmware boot: %q", f, a)
				}
			}
			drives := argValues(a, "-drive")
			want := []string{"if=pflash,format=raw,readonly=on,file=/fw/CODE.fd", "if=pflash,format=raw,file=/w/vars.fd", "id=disk0,if=none,format=raw,cache=writeback,file=/w/disk.img"}
			if !slices.Equal(drives, want) {
				t.Fatalf("drives = %q", drives)
			}
			dev := argValues(a, "-device")
			if got := argValues(a, "-M"); len(got) != 1 || got[0] != tc.machine || !slices.Contains(dev, tc.disk) || !slices.Contains(dev, tc.nic) || !slices.Contains(dev, "i6300esb") {
				t.Fatalf("machine %q devices %q", got, dev)
			}
		})
	}
	if _, err := (Target{Arch: ArchX86_64, UEFI: &UEFI{Code: "/c"}}).withDefaults(false); err == nil {
		t.Fatal("UEFI target without vars and disk accepted")
	}
}
