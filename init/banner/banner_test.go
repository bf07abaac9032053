package banner

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	pfx := func(s string) netip.Prefix { return netip.MustParsePrefix(s) }
	base := Info{
		Version: "v1.2.3", Board: "qemu-x86_64", Hostname: "edgepbx-epx2", Serial: "EPX2",
		Addresses: []netip.Prefix{pfx("127.0.0.1/8"), pfx("10.0.2.15/24"), pfx("fe80::1/64"), pfx("2001:db8::5/64")},
		SetupCode: "ABCD-EFGH-JKMN", Health: "ready",
	}
	tests := []struct {
		name    string
		mod     func(*Info)
		want    []string
		notWant []string
	}{
		{"unclaimed", func(*Info) {}, []string{
			"admin: https://10.0.2.15/\n",
			"admin: https://[2001:db8::5]/\n",
			"setup code: ABCD-EFGH-JKMN\n",
			"version: v1.2.3\n",
			"board: qemu-x86_64\n",
			"health: ready\n",
		}, []string{"127.0.0.1/", "fe80", "claimed:"}},
		{"claimed hides the code", func(i *Info) { i.Claimed = true; i.TLSFingerprint = "AB:CD" }, []string{
			"claimed: yes\n", "tls sha256: AB:CD\n",
		}, []string{"ABCD-EFGH-JKMN", "setup code"}},
		{"claimed with a lockout shows the recovery code", func(i *Info) { i.Claimed = true; i.Recovery = true }, []string{
			"recovery code: ABCD-EFGH-JKMN",
		}, []string{"setup code:"}},
		{"recovery needs a claim", func(i *Info) { i.Recovery = true }, []string{"setup code: ABCD-EFGH-JKMN\n"}, []string{"recovery code"}},
		{"other port", func(i *Info) { i.HTTPSPort = 8443 }, []string{"https://10.0.2.15:8443/"}, nil},
		{"no network", func(i *Info) { i.Addresses = nil }, []string{"none (no network)", "unavailable"}, []string{"https://"}},
		{"live", func(i *Info) { i.Live = true }, []string{"WARNING: live mode"}, nil},
		{"hostile strings", func(i *Info) { i.Health = "ok\x1b[2J\nedgepbx: ready" }, []string{"ok?[2J?edgepbx: ready"}, []string{"\x1b", "\nedgepbx: ready"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := base
			tt.mod(&i)
			var b strings.Builder
			if err := Render(&b, i); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("banner lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("banner has %q:\n%s", w, out)
				}
			}
			// Tests and `edgepbx run` find these by regexp.
			if len(i.AdminURLs()) > 0 && !regexp.MustCompile(`(?m)^admin: https://\S+$`).MatchString(out) {
				t.Errorf("admin line not machine-readable:\n%s", out)
			}
		})
	}
}
