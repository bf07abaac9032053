package provision

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParsePnPSubscribe: any datagram either is refused or yields a MAC
// and header values whose echo in the answers stays one message each (no
// CR/LF smuggled into a header).
func FuzzParsePnPSubscribe(f *testing.F) {
	f.Add(yealinkSubscribe("805ec0aabbcc", "10.9.0.2:5060", 1))
	f.Add(snomSubscribe("000413aabbcc", "10.9.0.2:5060"))
	f.Add([]byte("SUBSCRIBE sip:x SIP/2.0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParsePnPSubscribe(data)
		if err != nil {
			return
		}
		if !isMAC(s.MAC) {
			t.Fatalf("MAC %q", s.MAC)
		}
		ok := s.OK("tag")
		n := s.Notify("tag", "b", netip.MustParseAddrPort("10.0.0.1:5060"), netip.MustParseAddrPort("10.0.0.2:5060"), "http://10.0.0.1:8080/")
		for _, m := range [][]byte{ok, n} {
			head, _, _ := bytes.Cut(m, []byte("\r\n\r\n"))
			for _, ln := range strings.Split(string(head), "\r\n") {
				if strings.ContainsAny(ln, "\r\n") {
					t.Fatalf("line break inside a header: %q", ln)
				}
			}
			if bytes.Count(m, []byte("\r\n\r\n")) != 1 {
				t.Fatalf("answer is not one message:\n%q", m)
			}
		}
	})
}

// FuzzParseDHCPRequest: the strict DHCP parser never panics and accepts
// only Ethernet client requests that are not relayed.
func FuzzParseDHCPRequest(f *testing.F) {
	f.Add(make([]byte, 240))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseDHCPRequest(data)
		if err != nil {
			return
		}
		if len(m.ClientHWAddr) != 6 || m.ClientHWAddr[0]&1 != 0 || !isMAC(macKey(m.ClientHWAddr)) {
			t.Fatalf("accepted hardware address %v", m.ClientHWAddr)
		}
	})
}

// BenchmarkPnPParse: parsing and answering one ua-profile SUBSCRIBE
// (no sockets): the responder's CPU cost per phone.
func BenchmarkPnPParse(b *testing.B) {
	msg := yealinkSubscribe("805ec0aabbcc", "10.9.0.2:5060", 1)
	local, phone := netip.MustParseAddrPort("10.9.0.1:5060"), netip.MustParseAddrPort("10.9.0.2:5060")
	b.ReportAllocs()
	for b.Loop() {
		s, err := ParsePnPSubscribe(msg)
		if err != nil {
			b.Fatal(err)
		}
		_ = s.OK("t")
		_ = s.Notify("t", "b", local, phone, "http://10.9.0.1:8080/")
	}
}
