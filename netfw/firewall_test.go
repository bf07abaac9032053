package netfw

import (
	"errors"
	"fmt"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// onlyOurTable asserts `nft list ruleset` in the box shows exactly our table.
func onlyOurTable(t *testing.T, l *lab) {
	t.Helper()
	var tables []string
	for _, line := range strings.Split(l.nft("list", "ruleset"), "\n") {
		if strings.HasPrefix(line, "table ") {
			tables = append(tables, strings.TrimSuffix(line, " {"))
		}
	}
	if len(tables) != 1 || tables[0] != "table inet edgepbx" {
		t.Fatalf("tables in the box: %q, want only table inet edgepbx", tables)
	}
}

func TestZonesReachOnlyTheirServices(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	onlyOurTable(t, l)

	type udpCase struct {
		host     string
		src, dst netip.Addr
		port     uint16
		want     bool
	}
	for _, c := range []udpCase{
		{hostPhones, phone4, boxPhone4, 5060, true},
		{hostPhones, phone6, boxPhone6, 5060, true},
		{hostTrunk, trunk4, boxTrunk4, 5060, true},
		{hostInternet, inet4, boxInet4, 5060, false},
		{hostInternet, inet6, boxInet6, 5060, false},
		{hostPhones, phone4, boxPhone4, 10000, false}, // RTP needs a pinhole, even from the LAN
	} {
		wait := replyWait
		if !c.want {
			wait = dropWait
		}
		if got := l.udpProbe(c.host, c.src, c.dst, c.port, wait); got != c.want {
			t.Errorf("udp %s→%s:%d: reply %v, want %v", c.src, c.dst, c.port, got, c.want)
		}
	}

	type tcpCase struct {
		host     string
		src, dst netip.Addr
		port     uint16
		want     string
	}
	for _, c := range []tcpCase{
		{hostPhones, phone4, boxPhone4, 5060, "open"},
		{hostPhones, phone4, boxPhone4, 443, "open"},
		{hostPhones, phone6, boxPhone6, 443, "open"},
		{hostPhones, phone4, boxPhone4, 5061, "silent"}, // SIP-TLS is for trunks only
		{hostPhones, phone4, boxPhone4, 22, "silent"},   // SSH is off
		{hostTrunk, trunk4, boxTrunk4, 5061, "open"},
		{hostTrunk, trunk6, netip.MustParseAddr("2001:db8:2::1"), 5061, "open"},
		{hostTrunk, trunk4, boxTrunk4, 443, "silent"},
		{hostInternet, inet4, boxInet4, 443, "silent"},
		{hostInternet, inet4, boxInet4, 5060, "silent"},
		{hostInternet, inet4, boxInet4, 8080, "silent"}, // listening but not a service: no RST either
		{hostInternet, inet6, boxInet6, 5061, "silent"},
	} {
		wait := replyWait
		if c.want != "open" {
			wait = dropWait
		}
		if got := l.tcpProbe(c.host, c.src, c.dst, c.port, wait); got != c.want {
			t.Errorf("tcp %s→%s:%d: %s, want %s", c.src, c.dst, c.port, got, c.want)
		}
	}
	// The silent cases were dropped by our final rule, not lost.
	if n := counter(t, fw, "drop"); n == 0 {
		t.Error("final drop rule counted nothing")
	}
	if n := counter(t, fw, "svc-https-admin-phones_4"); n == 0 {
		t.Error("https rule counted nothing")
	}
}

func TestDefaultPolicy(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	if err := fw.Apply(DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	onlyOurTable(t, l)
	// Provisioning passes the firewall (a RST from the closed port, no drop).
	for _, port := range []uint16{8443, 8080} {
		if got := l.tcpProbe(hostPhones, phone4, boxPhone4, port, replyWait); got == "silent" {
			t.Errorf("lan provisioning tcp %d dropped", port)
		}
		if got := l.tcpProbe(hostInternet, inet4, boxInet4, port, dropWait); got != "silent" {
			t.Errorf("internet provisioning tcp %d: %s, want silent", port, got)
		}
	}
	for _, port := range []uint16{443, 5060, 5061} {
		if got := l.tcpProbe(hostPhones, phone4, boxPhone4, port, replyWait); got != "open" {
			t.Errorf("lan tcp %d: %s, want open", port, got)
		}
		if got := l.tcpProbe(hostPhones, phone6, boxPhone6, port, replyWait); got != "open" {
			t.Errorf("lan v6 tcp %d: %s, want open", port, got)
		}
		if got := l.tcpProbe(hostInternet, inet4, boxInet4, port, dropWait); got != "silent" {
			t.Errorf("internet tcp %d: %s, want silent", port, got)
		}
	}
	if !l.udpProbe(hostPhones, phone4, boxPhone4, 5060, replyWait) {
		t.Error("lan sip udp blocked")
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Error("internet sip udp passes")
	}
	for _, port := range []uint16{22, 9100} {
		if got := l.tcpProbe(hostPhones, phone4, boxPhone4, port, dropWait); got != "silent" {
			t.Errorf("lan tcp %d: %s, want silent (no RST)", port, got)
		}
	}
	// Idempotent: applying the same policy again changes nothing.
	before := l.nft("list", "ruleset")
	if err := fw.Apply(DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	if after := l.nft("list", "ruleset"); normalize(after, true) != normalize(before, true) {
		t.Errorf("re-apply changed the ruleset:\n%s\n---\n%s", before, after)
	}
}

// normalize removes what legitimately changes between two listings of the
// same ruleset: counter values, remaining times, and (with meters) the
// per-source limiter state, which a reload resets. That state is both the
// rate meters ("limit rate") and the connection-count meters ("ct count"):
// the kernel's set GC drops a ct-count element once its flows are gone,
// asynchronously, so whether a listing still shows one is timing.
func normalize(s string, meters bool) string {
	s = reCounter.ReplaceAllString(s, "counter")
	s = reExpires.ReplaceAllString(s, "")
	if meters {
		s = reMeterElems.ReplaceAllString(s, "")
	}
	return s
}

var (
	reCounter    = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	reExpires    = regexp.MustCompile(` expires [0-9hms]+`)
	reMeterElems = regexp.MustCompile(`(?m)^\s*elements = \{[^}]*(?:limit rate|ct count)[^}]*\}\n`)
)

// TestNormalizeMeterState: listings of one ruleset taken before and after
// the kernel garbage-collected meter elements compare equal with meters,
// while a real difference (a zone element, a rule) still shows. The
// listings are cut from `nft list ruleset` of TestDefaultPolicy.
func TestNormalizeMeterState(t *testing.T) {
	const ctSet = "\tset ct_conn_4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic\n%s\t}\n"
	const rlSet = "\tset rl_conn_4 {\n\t\ttype ipv4_addr\n\t\tsize 65536\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n%s\t}\n"
	const zoneSet = "\tset zone_lan_4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n%s\t}\n"
	const rule = "\t\tip saddr != @allow_4 tcp dport 443 ct state new add @ct_conn_4 { ip saddr ct count over 256 } counter packets %d bytes %d drop comment \"limit-ct-https-admin_4\"\n"
	listing := func(parts ...string) string { return "table inet edgepbx {\n" + strings.Join(parts, "") + "}\n" }
	for _, c := range []struct {
		name          string
		before, after string
		meters, equal bool
	}{
		{"ct count elements collected", listing(fmt.Sprintf(ctSet, "\t\telements = { 10.1.0.2 ct count over 256, 203.0.113.2 ct count over 256 }\n")), listing(fmt.Sprintf(ctSet, "")), true, true},
		{"ct count elements wrapped", listing(fmt.Sprintf(ctSet, "\t\telements = { 10.1.0.2 ct count over 256,\n\t\t\t     203.0.113.2 ct count over 256 }\n")), listing(fmt.Sprintf(ctSet, "")), true, true},
		{"some collected", listing(fmt.Sprintf(ctSet, "\t\telements = { 203.0.113.2 ct count over 256 }\n")), listing(fmt.Sprintf(ctSet, "\t\telements = { 10.1.0.2 ct count over 256, 203.0.113.2 ct count over 256 }\n")), true, true},
		{"rate meter elements", listing(fmt.Sprintf(rlSet, "\t\telements = { 10.1.0.2 limit rate over 50/second burst 100 packets expires 58s992ms }\n")), listing(fmt.Sprintf(rlSet, "")), true, true},
		{"counters", listing(fmt.Sprintf(rule, 3, 180)), listing(fmt.Sprintf(rule, 0, 0)), true, true},
		{"rule with ct count kept", listing(fmt.Sprintf(rule, 0, 0)), listing(), true, false},
		{"zone elements differ", listing(fmt.Sprintf(zoneSet, "\t\telements = { 10.0.0.0/8 }\n")), listing(fmt.Sprintf(zoneSet, "\t\telements = { 10.0.0.0/8, 172.16.0.0/12 }\n")), true, false},
		{"meter state kept without meters", listing(fmt.Sprintf(ctSet, "\t\telements = { 10.1.0.2 ct count over 256 }\n")), listing(fmt.Sprintf(ctSet, "")), false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, a := normalize(c.before, c.meters), normalize(c.after, c.meters)
			if (a == b) != c.equal {
				t.Errorf("normalized listings equal=%v, want %v:\n%s\n---\n%s", a == b, c.equal, b, a)
			}
		})
	}
}

func TestPinholes(t *testing.T) {
	l := newLab(t)
	b := DefaultBounds()
	b.PinholeIdle = time.Second
	b.MaxPinholes = 3
	fw := l.firewall(WithBounds(b))
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 10000, dropWait) {
		t.Fatal("RTP passes without a pinhole")
	}
	ph := Pinhole{Remote: inet4, LocalPort: 10000, Timeout: time.Minute}
	if err := fw.OpenPinhole(ph); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4, boxInet4, 10000, replyWait) {
		t.Fatal("RTP blocked through an open pinhole")
	}
	if l.udpProbe(hostInternet, inet4b, boxInet4, 10000, dropWait) {
		t.Error("RTP from another address passes the pinhole")
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 10001, dropWait) {
		t.Error("RTP to another port passes the pinhole")
	}
	// Closing cuts the flow even though conntrack has seen replies.
	if err := fw.ClosePinhole(ph); err != nil {
		t.Fatal(err)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 10000, dropWait) {
		t.Error("RTP passes after close")
	}
	if err := fw.ClosePinhole(ph); err != nil {
		t.Errorf("closing a closed pinhole: %v", err)
	}

	// IPv6, and expiry: media re-arms the idle timeout (1 s here); when
	// media stops the pinhole times out.
	ph6 := Pinhole{Remote: inet6, LocalPort: 10002, Timeout: 2 * time.Second}
	if err := fw.OpenPinhole(ph6); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet6, boxInet6, 10002, replyWait) {
		t.Fatal("v6 RTP blocked through an open pinhole")
	}
	time.Sleep(1500 * time.Millisecond)
	if l.udpProbe(hostInternet, inet6, boxInet6, 10002, dropWait) {
		t.Error("v6 RTP passes after the pinhole timed out")
	}
	if n := counter(t, fw, "rtp-closed"); n < 4 {
		t.Errorf("rtp-closed counted %d drops, want ≥ 4", n)
	}

	// Validation and bounds change nothing.
	for _, bad := range []Pinhole{
		{Remote: inet4, LocalPort: 5060},
		{Remote: inet4, LocalPort: 9999},
		{Remote: inet4, LocalPort: 20001},
		{Remote: netip.Addr{}, LocalPort: 10000},
		{Remote: netip.MustParseAddr("0.0.0.0"), LocalPort: 10000},
		{Remote: netip.MustParseAddr("224.0.0.1"), LocalPort: 10000},
		{Remote: inet4, LocalPort: 10000, Timeout: 48 * time.Hour},
	} {
		if err := fw.OpenPinhole(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("OpenPinhole(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	for i := range 3 {
		if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: uint16(11000 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: 11003}); !errors.Is(err, ErrLimit) {
		t.Errorf("4th pinhole with MaxPinholes=3: %v, want ErrLimit", err)
	}
	// Refreshing an open pinhole is not a new one.
	if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: 11000}); err != nil {
		t.Errorf("refresh: %v", err)
	}
	c, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Sets {
		if s.Name == "pin_4" && s.Elements != 3 {
			t.Errorf("pin_4 holds %d elements, want 3", s.Elements)
		}
	}
	// Pinholes survive a policy reload.
	if err := fw.OpenPinhole(Pinhole{Remote: inet4b, LocalPort: 10001}); !errors.Is(err, ErrLimit) {
		t.Fatalf("want ErrLimit, got %v", err)
	}
	if err := fw.ClosePinhole(Pinhole{Remote: inet4, LocalPort: 11002}); err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPinhole(Pinhole{Remote: inet4b, LocalPort: 10001}); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4b, boxInet4, 10001, replyWait) {
		t.Error("pinhole lost on reload")
	}
}

func TestBans(t *testing.T) {
	l := newLab(t)
	banFile := filepath.Join(t.TempDir(), "netfw", "bans.json")
	fw := l.firewall(WithBanFile(banFile))
	p := labPolicy()
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4, boxInet4, 5060, replyWait) {
		t.Fatal("internet cannot reach SIP open to any")
	}
	// An established TCP session from the attacker is cut too.
	var conn net.Conn
	if err := netnstest.Run(l.hosts[hostPhones], func() error {
		var err error
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(boxPhone4, 5060).String(), replyWait)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hi := make([]byte, 2)
	if _, err := conn.Read(hi); err != nil {
		t.Fatal(err)
	}

	for _, b := range []Ban{
		{Prefix: netip.PrefixFrom(inet4, 32), Reason: "sip-bruteforce", Timeout: time.Hour},
		{Prefix: netip.MustParsePrefix("2001:db8:3::/64"), Reason: "scanner"},
		{Prefix: netip.PrefixFrom(phone4, 32), Reason: "https-login-abuse"},
	} {
		if err := fw.Ban(b); err != nil {
			t.Fatal(err)
		}
	}
	// Cut off at once: the kernel has committed the ban when Ban returns.
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Error("banned v4 address still reaches SIP")
	}
	if l.udpProbe(hostInternet, inet6, boxInet6, 5060, dropWait) {
		t.Error("banned v6 prefix still reaches SIP")
	}
	if !l.udpProbe(hostInternet, inet4b, boxInet4, 5060, replyWait) {
		t.Error("neighbour of a banned address is cut off")
	}
	banned := counter(t, fw, "ban_4")
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The box's server sends nothing more, so prove the drop by counter.
	time.Sleep(50 * time.Millisecond)
	if n := counter(t, fw, "ban_4"); n <= banned {
		t.Error("ban_4 counted nothing: established flow not cut")
	}

	// Allowlist and validation.
	for _, b := range []Ban{
		{Prefix: netip.PrefixFrom(trunk4, 32), Reason: "x"},
		{Prefix: netip.MustParsePrefix("198.51.0.0/16"), Reason: "x"},
		{Prefix: netip.MustParsePrefix("2001:db8:2::/48"), Reason: "x"},
	} {
		if err := fw.Ban(b); !errors.Is(err, ErrAllowlisted) {
			t.Errorf("Ban(%v) = %v, want ErrAllowlisted", b.Prefix, err)
		}
	}
	for _, b := range []Ban{
		{Prefix: netip.PrefixFrom(inet4b, 32), Reason: ""},
		{Prefix: netip.PrefixFrom(inet4b, 32), Reason: "bad reason\n"},
		{Prefix: netip.PrefixFrom(inet4b, 32), Reason: "x", Timeout: 365 * 24 * time.Hour},
		{Prefix: netip.Prefix{}, Reason: "x"},
	} {
		if err := fw.Ban(b); !errors.Is(err, ErrInvalid) {
			t.Errorf("Ban(%+v) = %v, want ErrInvalid", b, err)
		}
	}
	// A narrower ban inside an active one is a no-op.
	if err := fw.Ban(Ban{Prefix: netip.MustParsePrefix("2001:db8:3::2/128"), Reason: "scanner"}); err != nil {
		t.Errorf("ban inside a ban: %v", err)
	}
	bans, err := fw.ListBans()
	if err != nil {
		t.Fatal(err)
	}
	if len(bans) != 3 || bans[0].Reason != "https-login-abuse" || bans[0].Expires.IsZero() {
		t.Fatalf("ListBans = %+v", bans)
	}

	// Reload keeps bans.
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Error("ban forgotten on reload")
	}
	// Restart: the ruleset is gone (reboot) and a new firewall loads the file.
	fw.Close()
	l.nft("flush", "ruleset")
	if !l.udpProbe(hostInternet, inet4, boxInet4, 5060, replyWait) {
		t.Fatal("empty ruleset still drops")
	}
	fw2 := l.firewall(WithBanFile(banFile))
	if err := fw2.Apply(p); err != nil {
		t.Fatal(err)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Error("ban forgotten on restart")
	}
	if bans2, _ := fw2.ListBans(); len(bans2) != 3 || bans2[1].Reason != "sip-bruteforce" {
		t.Errorf("bans after restart: %+v", bans2)
	}
	if err := fw2.Unban(netip.PrefixFrom(inet4, 32)); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4, boxInet4, 5060, replyWait) {
		t.Error("unbanned address still cut off")
	}
	if err := fw2.Unban(netip.PrefixFrom(inet4, 32)); !errors.Is(err, ErrNotFound) {
		t.Errorf("second unban: %v, want ErrNotFound", err)
	}
	fw3, err := New(WithNetNS(int(l.box)), WithBanFile(banFile))
	if err != nil {
		t.Fatal(err)
	}
	defer fw3.Close()
	if err := fw3.Apply(p); err != nil {
		t.Fatal(err)
	}
	if bans3, _ := fw3.ListBans(); len(bans3) != 2 {
		t.Errorf("unban not persisted: %+v", bans3)
	}

	// Restart the way PID 1 boots: the ruleset goes in before /data is
	// mounted, and the persisted bans are restored into the live sets after.
	fw3.Close()
	l.nft("flush", "ruleset")
	fw4 := l.firewall()
	if err := fw4.Apply(p); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostPhones, phone4, boxPhone4, 5060, replyWait) {
		t.Fatal("phone cut off before any ban was restored")
	}
	corrupt := filepath.Join(t.TempDir(), "bans.json")
	if err := os.WriteFile(corrupt, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fw4.RestoreBans(corrupt); err == nil {
		t.Error("RestoreBans accepted a corrupt file")
	}
	if bans4, _ := fw4.ListBans(); len(bans4) != 0 {
		t.Errorf("corrupt file changed bans: %+v", bans4)
	}
	if err := fw4.RestoreBans(banFile); err != nil {
		t.Fatal(err)
	}
	if bans4, _ := fw4.ListBans(); len(bans4) != 2 {
		t.Errorf("bans after RestoreBans: %+v", bans4)
	}
	if l.udpProbe(hostPhones, phone4, boxPhone4, 5060, dropWait) {
		t.Error("restored ban does not drop")
	}
	if err := fw4.Unban(netip.PrefixFrom(phone4, 32)); err != nil {
		t.Fatal(err)
	}
	if raw, err := os.ReadFile(banFile); err != nil || strings.Contains(string(raw), phone4.String()+"/32") {
		t.Errorf("unban after RestoreBans not persisted to the adopted file (err %v)", err)
	}
}

func TestBanExpires(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	p := labPolicy()
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	if err := fw.Ban(Ban{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reason: "flood", Timeout: 2 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Fatal("prefix ban not effective")
	}
	time.Sleep(2200 * time.Millisecond)
	if !l.udpProbe(hostInternet, inet4, boxInet4, 5060, replyWait) {
		t.Error("ban did not expire")
	}
	if bans, _ := fw.ListBans(); len(bans) != 0 {
		t.Errorf("expired ban listed: %+v", bans)
	}
	// A ban covering narrower bans replaces them in one batch; banning the
	// same prefix again refreshes it; an expired ban can be re-added.
	if err := fw.Ban(Ban{Prefix: netip.PrefixFrom(inet4, 32), Reason: "sip-bruteforce"}); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4b, boxInet4, 5060, replyWait) {
		t.Fatal("neighbour cut off by a /32 ban")
	}
	for range 2 {
		if err := fw.Ban(Ban{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Reason: "flood"}); err != nil {
			t.Fatal(err)
		}
	}
	bans, err := fw.ListBans()
	if err != nil || len(bans) != 1 || bans[0].Prefix != netip.MustParsePrefix("203.0.113.0/24") {
		t.Fatalf("ListBans = %+v, %v; want the /24 alone", bans, err)
	}
	for _, src := range []netip.Addr{inet4, inet4b} {
		if l.udpProbe(hostInternet, src, boxInet4, 5060, dropWait) {
			t.Errorf("%s passes a /24 ban", src)
		}
	}
}

func TestFloodLimited(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	p := labPolicy()
	p.Rules = append(p.Rules,
		Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}},
		Rule{Service: SvcSIPTCP, Zones: []string{ZoneAny}})
	p.Limits = Limits{SIPUDPPerSecond: 50, SIPUDPBurst: 50, ConnPerSource: 2}
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	const sent = 3000
	var wg sync.WaitGroup
	var floodTime time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := netnstest.Run(l.hosts[hostInternet], func() error {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(inet4, 0)))
			if err != nil {
				return err
			}
			defer c.Close()
			start := time.Now()
			for i := range sent {
				// Paced so the flood exceeds the limit 20-fold but does
				// not overflow the kernel's per-CPU backlog (1000 packets),
				// which would drop legitimate packets before netfilter.
				if i%50 == 0 {
					time.Sleep(time.Millisecond)
				}
				if _, err := c.WriteToUDPAddrPort([]byte("q"), netip.AddrPortFrom(boxInet4, 5060)); err != nil && !errors.Is(err, unix.ENOBUFS) {
					return err
				}
			}
			floodTime = time.Since(start)
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}()
	// A legitimate source keeps working during the flood.
	lost := 0
	for range 10 {
		if !l.udpProbe(hostInternet, inet4b, boxInet4, 5060, replyWait) &&
			!l.udpProbe(hostInternet, inet4b, boxInet4, 5060, replyWait) {
			lost++
		}
	}
	wg.Wait()
	if lost != 0 {
		t.Errorf("legitimate source lost %d of 10 probes during a flood", lost)
	}
	time.Sleep(50 * time.Millisecond) // let the last datagrams reach the server
	got := l.srv.count(inet4)
	// The token bucket lets through at most burst + rate × elapsed.
	bound := 50 + int(50*floodTime.Seconds()) + 5
	if got > bound || got >= sent/10 {
		t.Errorf("flooder got %d of %d packets through in %v (bound %d)", got, sent, floodTime, bound)
	}
	if n := counter(t, fw, "limit-sip-udp_4"); n < uint64(sent-bound) {
		t.Errorf("limit counted %d drops, want ≥ %d", n, sent-bound)
	}
	t.Logf("flood: %d sent in %v, %d passed", sent, floodTime, got)

	// ct count: two concurrent connections per source, the third is dropped
	// silently; another source is unaffected.
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 2 {
		err := netnstest.Run(l.hosts[hostInternet], func() error {
			d := net.Dialer{Timeout: replyWait, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(inet4, 0))}
			c, err := d.Dial("tcp", netip.AddrPortFrom(boxInet4, 5060).String())
			if err == nil {
				conns = append(conns, c)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := l.tcpProbe(hostInternet, inet4, boxInet4, 5060, dropWait); got != "silent" {
		t.Errorf("third connection: %s, want silent", got)
	}
	if got := l.tcpProbe(hostInternet, inet4b, boxInet4, 5060, replyWait); got != "open" {
		t.Errorf("other source: %s, want open", got)
	}
}

func TestApplyFailureKeepsOldRuleset(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	if err := fw.Ban(Ban{Prefix: netip.PrefixFrom(inet4b, 32), Reason: "scanner"}); err != nil {
		t.Fatal(err)
	}
	before := normalize(l.nft("list", "ruleset"), false)

	// A policy opening everything to any, whose batch fails halfway.
	open := labPolicy()
	open.Rules = append(open.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	fw.failApply = true
	err := fw.Apply(open)
	fw.failApply = false
	if err == nil {
		t.Fatal("apply with an injected failure succeeded")
	}
	t.Logf("injected failure: %v", err)
	if after := normalize(l.nft("list", "ruleset"), false); after != before {
		t.Errorf("failed apply changed the ruleset:\n%s\n---\n%s", before, after)
	}
	if l.udpProbe(hostInternet, inet4, boxInet4, 5060, dropWait) {
		t.Error("half-applied policy opened SIP to the internet")
	}
	if !l.udpProbe(hostPhones, phone4, boxPhone4, 5060, replyWait) {
		t.Error("old policy no longer works")
	}
	// The firewall still works after the failure.
	if err := fw.Apply(open); err != nil {
		t.Fatal(err)
	}
	if !l.udpProbe(hostInternet, inet4, boxInet4, 5060, replyWait) {
		t.Error("new policy not applied")
	}
	if l.udpProbe(hostInternet, inet4b, boxInet4, 5060, dropWait) {
		t.Error("ban lost across the failed apply")
	}

	// Invalid policies are rejected before anything is sent.
	before = normalize(l.nft("list", "ruleset"), false)
	bad := labPolicy()
	bad.Rules = []Rule{{Service: SvcSIPUDP, Zones: []string{ZoneAny}}} // no admin access left
	if err := fw.Apply(bad); !errors.Is(err, ErrAdminLockout) {
		t.Errorf("lockout policy: %v", err)
	}
	if after := normalize(l.nft("list", "ruleset"), false); after != before {
		t.Error("rejected policy changed the ruleset")
	}
}

func TestOtherTablesUntouched(t *testing.T) {
	l := newLab(t)
	l.nft("add", "table", "ip", "other")
	l.nft("add", "chain", "ip", "other", "c")
	fw := l.firewall()
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	if err := fw.Apply(DefaultPolicy()); err != nil {
		t.Fatal(err)
	}
	out := l.nft("list", "tables")
	if !strings.Contains(out, "table ip other") || !strings.Contains(out, "table inet edgepbx") {
		t.Errorf("tables: %s", out)
	}
}

func TestNotApplied(t *testing.T) {
	fw, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: 10000}); !errors.Is(err, ErrNotApplied) {
		t.Errorf("OpenPinhole before Apply: %v", err)
	}
	if err := fw.Ban(Ban{Prefix: netip.PrefixFrom(inet4, 32), Reason: "x"}); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Ban before Apply: %v", err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	l := newLab(t)
	fw := l.firewall()
	p := labPolicy()
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	c, err := compile(&p, nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func() error {
		fw.mu.Lock()
		defer fw.mu.Unlock()
		return fw.verify(c)
	}
	if err := check(); err != nil {
		t.Fatalf("verify of an untouched ruleset: %v", err)
	}
	l.nft("delete", "element", "inet", "edgepbx", "zone_phones_4", "{ 10.1.0.0/24 }")
	if err := check(); !errors.Is(err, ErrVerify) {
		t.Errorf("verify after removing a zone element: %v, want ErrVerify", err)
	}
	if err := fw.Apply(p); err != nil {
		t.Fatal(err)
	}
	l.nft("insert", "rule", "inet", "edgepbx", "input", "accept")
	if err := check(); !errors.Is(err, ErrVerify) {
		t.Errorf("verify after inserting a rule: %v, want ErrVerify", err)
	}
}

func TestNetlinkDeadline(t *testing.T) {
	l := newLab(t)
	fw := l.firewall(WithNetlinkTimeout(time.Nanosecond))
	err := fw.Apply(labPolicy())
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Apply with an expired deadline: %v, want a deadline error", err)
	}
}

func TestBoundsAndRate(t *testing.T) {
	l := newLab(t)
	b := DefaultBounds()
	b.OpsPerSecond, b.OpsBurst = 0.001, 3 // three operations, then nothing for a long time
	b.MaxBatch = 4
	fw := l.firewall(WithBounds(b))
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	many := make([]Pinhole, 5)
	for i := range many {
		many[i] = Pinhole{Remote: inet4, LocalPort: uint16(12000 + i)}
	}
	if err := fw.OpenPinholes(many...); !errors.Is(err, ErrInvalid) {
		t.Errorf("batch of 5 with MaxBatch 4: %v, want ErrInvalid", err)
	}
	if err := fw.OpenPinholes(many[:4]...); err != nil {
		t.Fatal(err)
	}
	if err := fw.Ban(Ban{Prefix: netip.PrefixFrom(inet4b, 32), Reason: "x"}); err != nil {
		t.Fatal(err)
	}
	if err := fw.ClosePinhole(many[0]); err != nil {
		t.Fatal(err)
	}
	if err := fw.ClosePinhole(many[1]); !errors.Is(err, ErrRate) {
		t.Errorf("fourth operation: %v, want ErrRate", err)
	}
	// A refused request changed nothing.
	c, err := fw.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Sets {
		if s.Name == "pin_4" && s.Elements != 3 {
			t.Errorf("pin_4 holds %d, want 3", s.Elements)
		}
		if s.Name == "ban_4" && s.Elements != 1 {
			t.Errorf("ban_4 holds %d, want 1", s.Elements)
		}
	}
}

func TestPinholeRefreshedByMedia(t *testing.T) {
	l := newLab(t)
	b := DefaultBounds()
	b.PinholeIdle = 10 * time.Second
	fw := l.firewall(WithBounds(b))
	if err := fw.Apply(labPolicy()); err != nil {
		t.Fatal(err)
	}
	const ttl = 2 * time.Second
	opened := time.Now()
	if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: 10000, Timeout: ttl}); err != nil {
		t.Fatal(err)
	}
	// The packet re-arms the element with the 10 s idle timeout, so the
	// pinhole outlives its 2 s opening timeout.
	if !l.udpProbe(hostInternet, inet4, boxInet4, 10000, replyWait) {
		t.Fatal("RTP blocked through an open pinhole")
	}
	time.Sleep(time.Until(opened.Add(ttl + 500*time.Millisecond)))
	if !l.udpProbe(hostInternet, inet4, boxInet4, 10000, replyWait) {
		t.Error("flowing media did not keep the pinhole open")
	}
}
