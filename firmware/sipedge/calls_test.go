package sipedge

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// holeLog records pinholes (PID 1's firewall is not part of this test;
// the netns tests of firmware/media cover the nft side).
type holeLog struct {
	mu   sync.Mutex
	open map[netfw.Pinhole]bool
}

func (h *holeLog) OpenPinhole(_ context.Context, p netfw.Pinhole) error {
	h.mu.Lock()
	h.open[p] = true
	h.mu.Unlock()
	return nil
}

func (h *holeLog) ClosePinhole(_ context.Context, p netfw.Pinhole) error {
	h.mu.Lock()
	delete(h.open, p)
	h.mu.Unlock()
	return nil
}

func (h *holeLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.open)
}

// startCalls builds a real B2BUA on the edge s (relay on loopback, dial
// plan with 101-103, CDRs in db).
func startCalls(t testing.TB, s *Server, db *store.DB) (*call.B2BUA, *holeLog, chan cdr.Record) {
	t.Helper()
	holes := &holeLog{open: map[netfw.Pinhole]bool{}}
	ports, err := media.NewPorts(42000, 42999)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	relay, err := media.NewRelay(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports, Pinholes: holes, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dialplan.New(dialplan.Plan{Country: "DE",
		Extensions: []dialplan.Extension{{Number: "101"}, {Number: "102"}, {Number: "103"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan cdr.Record, 16)
	b, err := call.New(call.Config{Client: s.Sender(), Contact: s.Contact("udp"), Relay: relay, Plan: plan,
		Directory: s.Directory(nil), CDR: cdr.New(db), Log: quiet,
		Ended: func(r cdr.Record, _ media.Stats) { ended <- r }})
	if err != nil {
		t.Fatal(err)
	}
	s.SetCalls(b)
	t.Cleanup(func() { _ = b.Close() })
	return b, holes, ended
}

// TestCallThroughEdge: two sipgo phones register with digest, 101 calls
// 102 through the edge and the B2BUA, RTP flows, BYE ends the call, the
// CDR is written and nothing is left open.
func TestCallThroughEdge(t *testing.T) {
	var db *store.DB
	var b *call.B2BUA
	var holes *holeLog
	var ended chan cdr.Record
	s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { b, holes, ended = startCalls(t, s, db) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, c := siptest.NewPhone(t, "101", testPassword), siptest.NewPhone(t, "102", testPassword)
	a.Register(ctx, "127.0.0.1", s.udp.Port)
	c.Register(ctx, "127.0.0.1", s.udp.Port)

	d, boxA, err := a.Dial(ctx, "127.0.0.1", s.udp.Port, "102")
	if err != nil {
		t.Fatal(err)
	}
	var inv *sip.Request
	select {
	case inv = <-c.Answered:
	case <-ctx.Done():
		t.Fatal("callee never rang")
	}
	if strings.Contains(string(inv.Body()), "RTP/SAVP") {
		t.Fatalf("best-effort SRTP offer is RTP/SAVP (plain phones answer 488):\n%s", inv.Body())
	}
	boxC, err := siptest.MediaAddr(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	// Both directions: the relay learns each side's peer from the SDP.
	siptest.SendRTPUntil(ctx, t, a, c, boxA, 20)
	siptest.SendRTPUntil(ctx, t, c, a, boxC, 20)
	if holes.count() == 0 {
		t.Fatal("no pinholes open during the call")
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Byes:
	case <-ctx.Done():
		t.Fatal("callee got no BYE")
	}
	select {
	case r := <-ended:
		if r.From != "101" || r.To != "102" || r.Result != cdr.Answered {
			t.Fatalf("CDR %+v", r)
		}
	case <-ctx.Done():
		t.Fatal("no CDR")
	}
	if b.Active() != 0 || holes.count() != 0 {
		t.Fatalf("left: %d calls, %d pinholes", b.Active(), holes.count())
	}
}

// TestInviteChallenged: an INVITE without credentials, or with a wrong
// password or an unknown user, gets the same 401 as a REGISTER would.
func TestInviteChallenged(t *testing.T) {
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "101", "wrong-password-1"}, {"unknown user", "999", testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var db *store.DB
			s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { startCalls(t, s, db) })
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			p := siptest.NewPhone(t, tc.user, tc.pass)
			_, _, err := p.Dial(ctx, "127.0.0.1", s.udp.Port, "102")
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != 401 {
				t.Fatalf("want 401, got %v", err)
			}
		})
	}
	var db *store.DB
	s := startServerTuned(t, nil, func(d *store.DB) { db = d }, nil, func(s *Server) { startCalls(t, s, db) })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// In-dialog requests of unknown dialogs are not challenged: the
	// B2BUA answers 481 (PRACK too: the edge hands it over, RFC 3262).
	p := siptest.NewPhone(t, "101", testPassword)
	for _, m := range []sip.RequestMethod{sip.BYE, sip.PRACK} {
		req := sip.NewRequest(m, sip.Uri{Scheme: "sip", User: "102", Host: "127.0.0.1", Port: s.udp.Port})
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "102", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "nope"}}})
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "x"}}})
		if m == sip.PRACK {
			req.AppendHeader(sip.NewHeader("RAck", "1 1 INVITE"))
		}
		res, err := p.Client.Do(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != 481 {
			t.Fatalf("%s of an unknown dialog: %s", m, res.StartLine())
		}
	}
}

// TestDirectoryTrunk (the registrar is loopback's discard port: nothing
// answers): calls over a trunk go to its registrar, or to its
// single peer address; a trunk known only by a peer network has no target.
func TestDirectoryTrunk(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) {
		c.Trunks = []pbxconfig.Trunk{
			{Name: "reg", Register: &pbxconfig.TrunkRegistration{Registrar: "127.0.0.1:9", Transport: "tcp", Username: "u", Domain: "itsp.example", Expires: 5 * time.Minute}},
			{Name: "peer", Peers: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("198.51.100.7/32")}},
			{Name: "net", Peers: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}},
		}
	})
	dir := s.Directory(nil)
	tests := []struct {
		name, dest, transport string
		ok                    bool
	}{
		{"reg", "127.0.0.1:9", "tcp", true},
		{"peer", "198.51.100.7:5060", "udp", true},
		{"net", "", "", false},
		{"unknown", "", "", false},
	}
	for _, tc := range tests {
		tg, ok := dir.Trunk(tc.name)
		if ok != tc.ok || tg.Dest != tc.dest || tg.Transport != tc.transport {
			t.Errorf("Trunk(%s) = %+v, %v", tc.name, tg, ok)
		}
	}
	if p := dir.Policy(call.Identity{Extension: "101"}); p != media.SRTPOptional {
		t.Errorf("default policy %v", p)
	}
}
