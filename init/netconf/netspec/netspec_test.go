package netspec

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/init/strictjson"
)

func pfx(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

var nics = []string{"eth0", "eth1"}

func good() Network {
	return Network{
		Hostname: "pbx-1",
		Interfaces: []Interface{{Name: "eth0", Mode: ModeStatic, Addresses: pfx("192.0.2.10/24", "2001:db8::10/64"),
			Gateway4: netip.MustParseAddr("192.0.2.1"), Gateway6: netip.MustParseAddr("fe80::1")}},
		VLANs: []VLAN{{ID: 20, Parent: "eth0", Mode: ModeStatic, Addresses: pfx("10.20.0.1/24")}},
		DNS:   []netip.Addr{netip.MustParseAddr("192.0.2.53")},
	}
}

func TestNetworkValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Network)
		field string // "" = valid
	}{
		{"good", func(*Network) {}, ""},
		{"dhcp", func(n *Network) { n.Interfaces = []Interface{{Name: "eth1", Mode: ModeDHCP}}; n.VLANs = nil }, ""},
		{"hostname empty", func(n *Network) { n.Hostname = "" }, "hostname"},
		{"hostname dot", func(n *Network) { n.Hostname = "pbx.example" }, "hostname"},
		{"hostname leading hyphen", func(n *Network) { n.Hostname = "-pbx" }, "hostname"},
		{"hostname long", func(n *Network) { n.Hostname = strings.Repeat("a", 64) }, "hostname"},
		{"hostname control", func(n *Network) { n.Hostname = "pbx\n" }, "hostname"},
		{"no interfaces", func(n *Network) { n.Interfaces = nil }, "interfaces"},
		{"unknown nic", func(n *Network) { n.Interfaces[0].Name = "wlan0" }, "interfaces[0].name"},
		{"nic twice", func(n *Network) {
			n.Interfaces = append(n.Interfaces, Interface{Name: "eth0", Mode: ModeDHCP})
		}, "interfaces[1].name"},
		{"bad mode", func(n *Network) { n.Interfaces[0].Mode = "ppp" }, "interfaces[0].mode"},
		{"dhcp with address", func(n *Network) { n.Interfaces[0].Mode = ModeDHCP }, "interfaces[0].addresses"},
		{"static without", func(n *Network) { n.Interfaces[0].Addresses = nil }, "interfaces[0].addresses"},
		{"loopback", func(n *Network) { n.Interfaces[0].Addresses = pfx("127.0.0.2/8") }, "interfaces[0].addresses[0]"},
		{"multicast", func(n *Network) { n.Interfaces[0].Addresses = pfx("224.0.0.5/24") }, "interfaces[0].addresses[0]"},
		{"multicast6", func(n *Network) { n.Interfaces[0].Addresses = pfx("ff02::1/64") }, "interfaces[0].addresses[0]"},
		{"unspecified", func(n *Network) { n.Interfaces[0].Addresses = pfx("0.0.0.0/0") }, "interfaces[0].addresses[0]"},
		{"mapped", func(n *Network) { n.Interfaces[0].Addresses = pfx("::ffff:192.0.2.10/120") }, "interfaces[0].addresses[0]"},
		{"link-local", func(n *Network) { n.Interfaces[0].Addresses = pfx("169.254.1.1/16") }, "interfaces[0].addresses[0]"},
		{"prefix too wide", func(n *Network) { n.Interfaces[0].Addresses = pfx("10.0.0.1/7") }, "interfaces[0].addresses[0]"},
		{"prefix6 too wide", func(n *Network) { n.Interfaces[0].Addresses = pfx("2001:db8::1/32") }, "interfaces[0].addresses[0]"},
		{"network address", func(n *Network) { n.Interfaces[0].Addresses = pfx("192.0.2.0/24") }, "interfaces[0].addresses[0]"},
		{"broadcast", func(n *Network) { n.Interfaces[0].Addresses = pfx("192.0.2.255/24") }, "interfaces[0].addresses[0]"},
		{"/31 ok", func(n *Network) {
			n.Interfaces[0].Addresses, n.Interfaces[0].Gateway4, n.Interfaces[0].Gateway6 = pfx("192.0.2.0/31"), netip.MustParseAddr("192.0.2.1"), netip.Addr{}
		}, ""},
		{"too many addresses", func(n *Network) {
			n.Interfaces[0].Addresses = pfx("192.0.2.10/24", "192.0.2.11/32", "192.0.2.12/32", "192.0.2.13/32", "192.0.2.14/32")
		}, "interfaces[0].addresses"},
		{"overlap", func(n *Network) { n.VLANs[0].Addresses = pfx("192.0.2.20/24") }, "vlans[0].addresses[0]"},
		{"gateway outside", func(n *Network) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("198.51.100.1") }, "interfaces[0].gateway4"},
		{"gateway is self", func(n *Network) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("192.0.2.10") }, "interfaces[0].gateway4"},
		{"gateway wrong family", func(n *Network) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("2001:db8::1") }, "interfaces[0].gateway4"},
		{"gateway6 outside", func(n *Network) { n.Interfaces[0].Gateway6 = netip.MustParseAddr("2001:db9::1") }, "interfaces[0].gateway6"},
		{"gateway multicast", func(n *Network) { n.Interfaces[0].Gateway4 = netip.MustParseAddr("224.0.0.1") }, "interfaces[0].gateway4"},
		{"two default routes", func(n *Network) {
			n.Interfaces = append(n.Interfaces, Interface{Name: "eth1", Mode: ModeStatic, Addresses: pfx("198.51.100.2/24"), Gateway4: netip.MustParseAddr("198.51.100.1")})
		}, "interfaces[1]"},
		{"vlan 0", func(n *Network) { n.VLANs[0].ID = 0 }, "vlans[0].id"},
		{"vlan 4095", func(n *Network) { n.VLANs[0].ID = 4095 }, "vlans[0].id"},
		{"vlan 4094", func(n *Network) { n.VLANs[0].ID = 4094 }, ""},
		{"vlan twice", func(n *Network) { n.VLANs = append(n.VLANs, VLAN{ID: 20, Parent: "eth0", Mode: ModeDHCP}) }, "vlans[1].id"},
		{"vlan parent unknown", func(n *Network) { n.VLANs[0].Parent = "eth1" }, "vlans[0].parent"},
		{"vlan bad mode", func(n *Network) { n.VLANs[0].Mode = "" }, "vlans[0].mode"},
		{"too many vlans", func(n *Network) {
			for i := range MaxVLANs {
				n.VLANs = append(n.VLANs, VLAN{ID: uint16(100 + i), Parent: "eth0", Mode: ModeDHCP})
			}
		}, "vlans"},
		{"dns multicast", func(n *Network) { n.DNS = []netip.Addr{netip.MustParseAddr("224.0.0.251")} }, "dns[0]"},
		{"dns zero", func(n *Network) { n.DNS = []netip.Addr{{}} }, "dns[0]"},
		{"dns twice", func(n *Network) { n.DNS = append(n.DNS, n.DNS[0]) }, "dns[1]"},
		{"dns too many", func(n *Network) {
			n.DNS = []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4")}
		}, "dns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := good()
			tt.edit(&n)
			err := n.Validate(nics)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want a field error on %q", err, tt.field)
			}
		})
	}
}

func TestTimeValidate(t *testing.T) {
	tests := []struct {
		t     Time
		field string
	}{
		{DefaultTime(), ""},
		{Time{NTP: []string{"pool.ntp.org", "192.0.2.123", "2001:db8::123"}, TimeZone: "Europe/Berlin"}, ""},
		{Time{NTP: []string{"ntp-1.example."}, TimeZone: "America/Argentina/Buenos_Aires"}, ""},
		{Time{TimeZone: "Etc/GMT+5"}, ""},
		{Time{TimeZone: ""}, "time_zone"},
		{Time{TimeZone: "Local"}, "time_zone"},
		{Time{TimeZone: "Mars/Olympus"}, "time_zone"},
		{Time{TimeZone: "../../etc/passwd"}, "time_zone"},
		{Time{TimeZone: "/etc/localtime"}, "time_zone"},
		{Time{TimeZone: "Europe/Berlin\x00"}, "time_zone"},
		{Time{NTP: []string{"a", "b", "c", "d", "e"}, TimeZone: "UTC"}, "ntp"},
		{Time{NTP: []string{"bad_name"}, TimeZone: "UTC"}, "ntp[0]"},
		{Time{NTP: []string{"1.2.3"}, TimeZone: "UTC"}, "ntp[0]"},
		{Time{NTP: []string{"224.0.1.1"}, TimeZone: "UTC"}, "ntp[0]"},
		{Time{NTP: []string{"127.0.0.1"}, TimeZone: "UTC"}, "ntp[0]"},
		{Time{NTP: []string{"pool.ntp.org", "POOL.ntp.org"}, TimeZone: "UTC"}, "ntp[1]"},
		{Time{NTP: []string{strings.Repeat("a.", 130) + "org"}, TimeZone: "UTC"}, "ntp[0]"},
	}
	for _, tt := range tests {
		err := tt.t.Validate()
		var fe *FieldError
		switch {
		case tt.field == "" && err != nil:
			t.Errorf("%+v refused: %v", tt.t, err)
		case tt.field != "" && (!errors.As(err, &fe) || fe.Field != tt.field):
			t.Errorf("%+v: err %v, want field %q", tt.t, err, tt.field)
		}
	}
}

// FuzzNetwork: whatever strict decoding and Validate accept is safe to
// hand to netlink: bounded lists, unicast addresses, gateways inside.
func FuzzNetwork(f *testing.F) {
	f.Add([]byte(`{"hostname":"pbx","interfaces":[{"name":"eth0","mode":"static","addresses":["192.0.2.10/24"],"gateway4":"192.0.2.1"}],"vlans":[{"id":20,"parent":"eth0","mode":"dhcp"}],"dns":["192.0.2.53"]}`))
	f.Add([]byte(`{"hostname":"pbx","interfaces":[{"name":"eth0","mode":"dhcp"}]}`))
	f.Add([]byte(`{"hostname":"pbx","interfaces":[{"name":"eth0","mode":"static","addresses":["2001:db8::1/64"],"gateway6":"fe80::1"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var n Network
		if strictjson.Unmarshal(data, &n) != nil || n.Validate(nics) != nil {
			return
		}
		if len(n.Interfaces) > MaxInterfaces || len(n.VLANs) > MaxVLANs || len(n.DNS) > MaxDNS || !ValidHostname(n.Hostname) {
			t.Fatalf("unbounded network accepted: %+v", n)
		}
		for _, it := range n.Interfaces {
			for _, p := range it.Addresses {
				if p.Addr().IsLoopback() || p.Addr().IsMulticast() || p.Addr().IsUnspecified() {
					t.Fatalf("bad address accepted: %s", p)
				}
			}
			if g := it.Gateway4; g.IsValid() && !it.inSubnet(g) {
				t.Fatalf("gateway %s outside %v accepted", g, it.Addresses)
			}
		}
		for _, v := range n.VLANs {
			if v.ID < 1 || v.ID > 4094 {
				t.Fatalf("vlan %d accepted", v.ID)
			}
		}
	})
}

func (it Interface) inSubnet(a netip.Addr) bool {
	for _, p := range it.Addresses {
		if p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

func FuzzTime(f *testing.F) {
	f.Add([]byte(`{"ntp":["pool.ntp.org","192.0.2.1"],"time_zone":"Europe/Berlin"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var tm Time
		if strictjson.Unmarshal(data, &tm) != nil || tm.Validate() != nil {
			return
		}
		if len(tm.NTP) > MaxNTP {
			t.Fatalf("%d servers accepted", len(tm.NTP))
		}
		if _, err := LoadZone(tm.TimeZone); err != nil {
			t.Fatal(err)
		}
	})
}
