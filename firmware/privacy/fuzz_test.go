package privacy

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzSourceAnonymiser: whatever source string a writer hands over (they
// come from the wire: SIP Via/received, HTTP RemoteAddr), truncate and hash
// modes never store the full address.
func FuzzSourceAnonymiser(f *testing.F) {
	for _, s := range []string{"198.51.100.77:5060", "[2001:db8:1234:5678::9]:443", "198.51.100.77", "198.51.100.0/24", "[::ffff:198.51.100.77]:1", "garbage", ""} {
		f.Add(s)
	}
	b := newBox(f, false, map[string]Policy{"security_log": {Days: 90, Anonymise: Truncate}, "connections": {Days: 30, Anonymise: Hash}})
	trunc, hash := b.reg.SourceAnonymiser("security_log"), b.reg.SourceAnonymiser("connections")
	now := b.clk.Now()
	f.Fuzz(func(t *testing.T, src string) {
		for _, anon := range []func(string, time.Time) string{trunc, hash} {
			out := anon(src, now)
			var a netip.Addr
			if ap, err := netip.ParseAddrPort(src); err == nil {
				a = ap.Addr()
			} else if x, err := netip.ParseAddr(src); err == nil {
				a = x
			}
			if a.IsValid() && !truncateIsSelf(a) && (strings.Contains(out, a.String()) || strings.Contains(out, a.Unmap().String())) {
				t.Fatalf("%q stored as %q: holds the address", src, out)
			}
		}
	})
}

// truncateIsSelf reports the addresses equal to their own network
// (x.y.z.0, or an IPv6 address with zero low 80 bits): their truncated
// form legitimately contains them.
func truncateIsSelf(a netip.Addr) bool {
	return strings.HasPrefix(TruncateAddr(a), a.Unmap().String()+"/")
}
