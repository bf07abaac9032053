package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestDevModeSubscribe: the daemon serves SUBSCRIBE (the event server is
// wired): a phone's message-summary subscription to its own mailbox is
// challenged, accepted with digest, and the first NOTIFY reaches the
// phone's contact; another extension's mailbox is refused.
func TestDevModeSubscribe(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	p.waitLine(t, adminRE)
	edge, err := net.ResolveUDPAddr("udp", p.waitLine(t, sipRE)[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ph := newEventPhone(t, edge.Port, testExt, testExtPW)
	notifies := ph.notifies
	subscribe := func(target string) *sip.Response {
		t.Helper()
		return ph.subscribe(ctx, target, "message-summary", "application/simple-message-summary")
	}
	if r := subscribe(testExt); r.StatusCode != 200 || r.GetHeader("Expires") == nil {
		t.Fatalf("own mailbox: %v", r)
	}
	select {
	case n := <-notifies:
		if n.GetHeader("Event").Value() != "message-summary" || !strings.HasPrefix(string(n.Body()), "Messages-Waiting: no\r\n") {
			t.Fatalf("NOTIFY:\n%s", n)
		}
	case <-ctx.Done():
		t.Fatal("no NOTIFY from the daemon")
	}
	if r := subscribe("9999"); r.StatusCode != 403 {
		t.Fatalf("another mailbox: %v", r)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// eventPhone is a SIP phone for event subscriptions: it SUBSCRIBEs with
// digest as its extension and answers every NOTIFY it gets with 200,
// handing it to notifies.
type eventPhone struct {
	t          *testing.T
	user, pass string
	edgePort   int
	port       int
	cl         *sipgo.Client
	notifies   chan *sip.Request
}

func newEventPhone(t *testing.T, edgePort int, user, pass string) *eventPhone {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("wiring-test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ua.Close() })
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	ph := &eventPhone{t: t, user: user, pass: pass, edgePort: edgePort,
		port: conn.LocalAddr().(*net.UDPAddr).Port, notifies: make(chan *sip.Request, 16)}
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		ph.notifies <- req
	})
	go func() { _ = srv.ServeUDP(conn) }()
	if ph.cl, err = sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientPort(ph.port)); err != nil {
		t.Fatal(err)
	}
	return ph
}

// subscribe sends a SUBSCRIBE for target's event, answers the box's 401
// with digest and returns the final answer.
func (ph *eventPhone) subscribe(ctx context.Context, target, event, accept string) *sip.Response {
	ph.t.Helper()
	req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1", Port: ph.edgePort})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: ph.user, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "s" + event + target}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1"}})
	req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@127.0.0.1:%d>", ph.user, ph.port)))
	req.AppendHeader(sip.NewHeader("Event", event))
	req.AppendHeader(sip.NewHeader("Accept", accept))
	req.AppendHeader(sip.NewHeader("Expires", "600"))
	first, err := ph.cl.Do(ctx, req)
	if err != nil || first == nil || first.StatusCode != 401 {
		ph.t.Fatalf("SUBSCRIBE %s without credentials: %v %v", target, first, err)
	}
	second, err := ph.cl.DoDigestAuth(ctx, req, first, sipgo.DigestAuth{Username: ph.user, Password: ph.pass})
	if err != nil || second == nil {
		ph.t.Fatalf("SUBSCRIBE %s with digest: %v", target, err)
	}
	return second
}
