package telephony

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// optionsServer is a real sipgo server on loopback UDP answering OPTIONS
// with code; it returns its address.
func optionsServer(t *testing.T, code int, reason string) string {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("itsp-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, code, reason, nil))
	})
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() { _ = ua.Close(); _ = conn.Close() })
	return conn.LocalAddr().String()
}

// closedPort is a loopback port nothing listens on (network "udp" or "tcp").
func closedPort(t *testing.T, network string) string {
	t.Helper()
	var addr string
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	} else {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = c.LocalAddr().String()
		c.Close()
	}
	return addr
}

// TestTrunkTest: "test trunk" sends a real OPTIONS from the serving edge
// and reports the provider's answer (any final answer means reachable),
// a refused TCP connection, silence, and a name that does not resolve;
// an unknown trunk is ErrNoTrunk.
func TestTrunkTest(t *testing.T) {
	db := storetest.Open(t, nil)
	s := edge(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	tel, err := pbxconfig.LoadTelephony(db)
	if err != nil {
		t.Fatal(err)
	}
	ok200 := optionsServer(t, 200, "OK")
	forbidden := optionsServer(t, 403, "Forbidden")
	peers := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	saveTelephony(t, tel, func(c *pbxconfig.Telephony) {
		c.Trunks = []pbxconfig.TelephonyTrunk{
			{Name: "up", Host: ok200, Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: peers},
			{Name: "forbids", Host: forbidden, Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: peers},
			{Name: "refused", Host: closedPort(t, "tcp"), Transport: "tcp", Auth: pbxconfig.TrunkAuthIP, Peers: peers},
			{Name: "silent", Host: closedPort(t, "udp"), Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: peers},
			{Name: "noname", Host: "sip.itsp.invalid:5060", Transport: "udp", Auth: pbxconfig.TrunkAuthIP, Peers: peers},
		}
		c.EmergencyTrunk = "up"
	})
	m := NewTrunks(tel, s, slog.New(slog.DiscardHandler))
	// The resolver asks a loopback port where no DNS server listens: no
	// query leaves the machine, and the lookup fails.
	dns := closedPort(t, "udp")
	m.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", dns)
	}}
	for _, tc := range []struct {
		name, dns, options string
		status             int
	}{
		{"up", TestOK, TestOK, 200},
		{"forbids", TestOK, TestOK, 403},
		{"refused", TestOK, TestRefused, 0},
		{"silent", TestOK, TestNoAnswer, 0},
		{"noname", "dns-*", "", 0},
	} {
		r, err := m.Test(context.Background(), tc.name, 2*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.dns == "dns-*" {
			if r.DNS != TestDNSFailed && r.DNS != TestDNSTimeout && r.DNS != TestDNSNotFound || r.Options != "" {
				t.Errorf("%s: %+v", tc.name, r)
			}
			continue
		}
		if r.DNS != tc.dns || r.Options != tc.options || r.Probe.Status != tc.status || r.State.Name != tc.name || !r.Target.IsValid() {
			t.Errorf("%s: %+v", tc.name, r)
		}
	}
	if _, err := m.Test(context.Background(), "nope", time.Second); !errors.Is(err, ErrNoTrunk) {
		t.Fatalf("unknown trunk: %v", err)
	}
}

func TestDNSOutcome(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, TestDNSNotFound},
		{&net.DNSError{Err: "i/o timeout", Name: "x", IsTimeout: true}, TestDNSTimeout},
		{context.DeadlineExceeded, TestDNSTimeout},
		{&net.DNSError{Err: "server misbehaving", Name: "x"}, TestDNSFailed},
	} {
		if got := dnsOutcome(tc.err); got != tc.want {
			t.Errorf("dnsOutcome(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
