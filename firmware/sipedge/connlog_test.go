package sipedge

import (
	"net/netip"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/connlog"
)

// TestConnectionLogFromRegister: real REGISTERs over UDP (a failed one, a
// good one, an unregistration) each leave one connection log entry with
// source, port, user, method and result.
func TestConnectionLogFromRegister(t *testing.T) {
	s := startServer(t, nil)
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	if r, ok := p.registerAuth(AlgMD5, "wrong-password"); !ok || r.StatusCode == 200 {
		t.Fatalf("wrong password registered: %v", r)
	}
	if r, ok := p.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	msg, _ := p.register(regOpts{expires: "0"})
	r, ok := p.exchange(msg)
	if !ok || r.StatusCode != 401 {
		t.Fatalf("unregister challenge: %v", r)
	}
	msg, _ = p.register(regOpts{expires: "0", auth: authHeader(AlgMD5, "101", testPassword, "edgepbx", challengeOf(t, r, AlgMD5), "sip:"+p.srv.IP.String(), "00000001", randHex(4))})
	if r, ok := p.exchange(msg); !ok || r.StatusCode != 200 {
		t.Fatalf("unregister: %v", r)
	}
	page, err := s.connLog.Query(connlog.Filter{Kind: "sip."})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{connlog.SIPUnregister, connlog.SIPRegister, connlog.SIPRegisterFail} // newest first
	if len(page.Entries) != len(want) {
		t.Fatalf("connection log: %+v", page.Entries)
	}
	port := netip.MustParseAddrPort(p.raw.Local()).Port()
	for i, e := range page.Entries {
		if e.Kind != want[i] || e.User != "101" || e.Source != "127.0.0.1" || e.Port != port || e.Method != "REGISTER" || e.Transport != "UDP" {
			t.Errorf("entry %d: %+v, want %s from 127.0.0.1:%d", i, e, want[i], port)
		}
	}
	if page.Entries[2].Result != connlog.Failed || page.Entries[1].Result != connlog.OK {
		t.Errorf("results: %+v", page.Entries)
	}
}
