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
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("wiring-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	notifies := make(chan *sip.Request, 4)
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		notifies <- req
	})
	go func() { _ = srv.ServeUDP(conn) }()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientPort(port))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subscribe := func(target string) *sip.Response {
		t.Helper()
		req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1", Port: edge.Port})
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: testExt, Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "s" + target}}})
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1"}})
		req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:%s@127.0.0.1:%d>", testExt, port)))
		req.AppendHeader(sip.NewHeader("Event", "message-summary"))
		req.AppendHeader(sip.NewHeader("Accept", "application/simple-message-summary"))
		req.AppendHeader(sip.NewHeader("Expires", "600"))
		first, err := cl.Do(ctx, req)
		if err != nil || first == nil || first.StatusCode != 401 {
			t.Fatalf("SUBSCRIBE without credentials: %v %v", first, err)
		}
		second, err := cl.DoDigestAuth(ctx, req, first, sipgo.DigestAuth{Username: testExt, Password: testExtPW})
		if err != nil || second == nil {
			t.Fatalf("SUBSCRIBE with digest: %v", err)
		}
		return second
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
