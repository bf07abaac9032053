package pbxconfig

import (
	"net/netip"
	"testing"
	"time"
)

func TestDefaultSIPValid(t *testing.T) {
	if err := DefaultSIP().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestSIPValidateRejects(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*SIP)
	}{
		{"no transport", func(c *SIP) { c.UDP, c.TCP, c.TLS, c.WSS = "", "", "", "" }},
		{"tls 1.0", func(c *SIP) { c.TLSMin = "1.0" }},
		{"max below min", func(c *SIP) { c.TLSMin, c.TLSMax = "1.3", "1.2" }},
		{"realm quote", func(c *SIP) { c.Realm = `a"b` }},
		{"domain space", func(c *SIP) { c.Domains = []string{"a b"} }},
		{"tiny messages", func(c *SIP) { c.MaxMessageBytes = 10 }},
		{"per-source above total", func(c *SIP) { c.MaxConnsPerSource = c.MaxConns + 1 }},
		{"unknown algorithm", func(c *SIP) { c.Algorithms = []string{"SHA-1"} }},
		{"no algorithm", func(c *SIP) { c.Algorithms = nil }},
		{"nonce ttl", func(c *SIP) { c.NonceTTL = time.Second }},
		{"expiry", func(c *SIP) { c.MaxExpires = c.MinExpires - 1 }},
		{"contacts", func(c *SIP) { c.MaxContacts = 0 }},
		{"retransmit cache", func(c *SIP) { c.RetransmitCache = 0 }},
		{"retransmit cache huge", func(c *SIP) { c.RetransmitCache = 1<<20 + 1 }},
		{"guard", func(c *SIP) { c.Guard.MaxFailsPerSource = 0 }},
		{"ban wider than PID 1 allows (v4)", func(c *SIP) { c.Guard.BanBitsV4 = 8 }},
		{"ban wider than PID 1 allows (v6)", func(c *SIP) { c.Guard.BanBitsV6 = 32 }},
		{"scan threshold of one", func(c *SIP) { c.Guard.MaxUsersPerSource = 1 }},
		{"trunk empty", func(c *SIP) { c.Trunks = []Trunk{{Name: "itsp"}} }},
		{"trunk dup", func(c *SIP) {
			p := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
			c.Trunks = []Trunk{{Name: "a", Peers: p}, {Name: "a", Peers: p}}
		}},
		{"trunk transport", func(c *SIP) {
			c.Trunks = []Trunk{{Name: "a", Register: &TrunkRegistration{Registrar: "x:5060", Username: "u", Domain: "d", Transport: "sctp", Expires: time.Hour}}}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultSIP()
			tt.mod(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("Validate accepted an invalid config")
			}
		})
	}
}
