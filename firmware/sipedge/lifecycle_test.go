package sipedge

import (
	"net"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestServerCloseJoinsGoroutines runs the edge with every transport, a
// startup trunk registered at a registrar, phones registered over UDP
// (the stateless path) and TCP (a connection left open), then closes it.
// Close returns after the trunk's un-REGISTER was answered (it is sent
// while the sockets still work; before, Close left the registration
// goroutine running and the binding at the ITSP), and once the edge has
// stopped no goroutine started during the test is left.
func TestServerCloseJoinsGoroutines(t *testing.T) {
	siptest.CheckGoroutines(t)
	it := siptest.StartRegistrar(t, itspRealm, map[string][]string{"alice": {"pw"}})
	tc := selfSigned(t)
	s := startServerFull(t, func(c *pbxconfig.SIP) {
		c.TLS, c.WSS = "127.0.0.1:0", "127.0.0.1:0"
		c.Trunks = []pbxconfig.Trunk{{Name: "itsp", Register: &pbxconfig.TrunkRegistration{
			Registrar: it.Addr, Transport: "udp", Username: "alice", Domain: itspRealm, Expires: 10 * time.Minute}}}
	}, func(db *store.DB) {
		if err := SetTrunkPassword(db, "itsp", "pw"); err != nil {
			t.Fatal(err)
		}
	}, tc)
	if ev := it.Next(t, nil); ev.Password != "pw" {
		t.Fatalf("trunk REGISTER %+v", ev)
	}
	p := newPhone(t, s.udp, "127.0.0.1", "101")
	if r, ok := p.registerAuthRetrans("SHA-256"); !ok || r.StatusCode != 200 {
		t.Fatalf("UDP REGISTER: %v", r)
	}
	c, err := net.Dial("tcp", s.Addr("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if got := registerOverStream(t, c, "TCP"); got != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("over TCP: %q", got)
	}
	s.Close()
	select {
	case ev := <-it.Got:
		if ev.User != "alice" || ev.Expires != 0 || ev.Password != "pw" {
			t.Fatalf("after Close the registrar got %+v, want the un-REGISTER", ev)
		}
	default:
		t.Fatal("Close returned before the trunk was un-registered")
	}
	// The cleanups wait for Serve, then the goroutine check runs.
}
