package call

import (
	"bytes"
	"context"
	"errors"
	"net"
	"regexp"
	"runtime"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// silentCallee is a raw UDP callee that answers an INVITE (with 180, and
// 200 unless ringOnly) and then never answers anything again: the box's
// BYE or CANCEL to it runs into its transaction timeout (32 s).
type silentCallee struct {
	conn     net.PacketConn
	ringOnly bool
	invited  chan struct{}
}

func newSilentCallee(t *testing.T, ringOnly bool) *silentCallee {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentCallee{conn: conn, ringOnly: ringOnly, invited: make(chan struct{}, 8)}
	t.Cleanup(func() { _ = conn.Close() })
	go s.serve()
	return s
}

func (s *silentCallee) addr() string { return s.conn.LocalAddr().String() }

func (s *silentCallee) serve() {
	buf := make([]byte, 65535)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := sip.ParseMessage(bytes.Clone(buf[:n]))
		if err != nil {
			continue
		}
		req, ok := msg.(*sip.Request)
		if !ok || req.Method != sip.INVITE || req.To().Params.Has("tag") {
			continue // BYE, CANCEL, ACK, PRACK: silence
		}
		host, port, _ := net.SplitHostPort(s.addr())
		var pn int
		for _, ch := range port {
			pn = pn*10 + int(ch-'0')
		}
		reply := func(code int, reason string, body []byte) {
			res := sip.NewResponseFromRequest(req, code, reason, nil)
			res.To().Params.Add("tag", "silent1")
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "102", Host: host, Port: pn}})
			if body != nil {
				res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
				res.SetBody(body)
			}
			_, _ = s.conn.WriteTo([]byte(res.String()), from)
		}
		reply(180, "Ringing", nil)
		if !s.ringOnly {
			reply(200, "OK", []byte(sdpBody(7002, "sendrecv")))
		}
		select {
		case s.invited <- struct{}{}:
		default:
		}
	}
}

// ownFrame matches a stack frame (or "created by" line) in a non-test
// source file of this package.
var ownFrame = regexp.MustCompile(`/firmware/call/([a-z0-9_]+)\.go:`)

func ownCode(g []byte) bool {
	for _, m := range ownFrame.FindAllSubmatch(g, -1) {
		if !bytes.HasSuffix(m[1], []byte("_test")) {
			return true
		}
	}
	return false
}

// packageGoroutines counts the goroutines that run, or were started by,
// code of this package (not its tests): the B2BUA's own goroutines and
// edge handlers inside it.
func packageGoroutines() (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var ex []byte
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if ownCode(g) {
			n++
			if ex == nil {
				ex = g
			}
		}
	}
	return n, string(ex)
}

// TestCloseJoinsGoroutines: Close returns only once every goroutine of the
// B2BUA has ended, also when peers do not answer its BYE and CANCEL (it
// gives them CloseGrace, then abandons the transactions), and it still
// writes every call's record.
func TestCloseJoinsGoroutines(t *testing.T) {
	if n, g := packageGoroutines(); n != 0 {
		t.Fatalf("%d goroutines of the package before the test, e.g.\n%s", n, g)
	}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.CloseGrace = 100 * time.Millisecond })
	answers, rings := newSilentCallee(t, false), newSilentCallee(t, true)
	h.dir.set("102", answers.addr())
	h.dir.set("103", rings.addr())
	caller := newPhone(t, "101")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// A connected call: its BYE to the callee will never be answered.
	d1, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d1.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	// A ringing call: its CANCEL will never be answered.
	d2, err := caller.dialAs(ctx, h, "101", "103", 6002)
	if err != nil {
		t.Fatal(err)
	}
	ringing := make(chan error, 1)
	go func() { ringing <- d2.WaitAnswer(ctx, sipgo.AnswerOptions{}) }()
	<-rings.invited
	for h.b.Active() != 2 {
		runtime.Gosched()
	}

	if err := h.b.Close(); err != nil {
		t.Fatal(err)
	}
	// Joined means gone, up to the few instructions between the group's
	// done and the goroutine's exit: a bounded wait, far below the 32 s a
	// leaked BYE or CANCEL transaction would live.
	deadline := time.Now().Add(5 * time.Second)
	n, g := packageGoroutines()
	for n != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n, g = packageGoroutines()
	}
	if n != 0 {
		t.Fatalf("%d goroutines of the B2BUA left after Close, e.g.\n%s", n, g)
	}
	if err := <-ringing; err == nil {
		t.Fatal("ringing call answered after Close")
	}
	h.noStateLeft(t, true)
	for range 2 {
		waitEnded(t, h)
	}
	// Closed: a new call is refused.
	d3, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	var e *sipgo.ErrDialogResponse
	if err := d3.WaitAnswer(ctx, sipgo.AnswerOptions{}); err == nil {
		t.Fatal("call accepted after Close")
	} else if !errors.As(err, &e) || e.Res.StatusCode != 503 {
		t.Fatalf("after Close: want 503, got %v", err)
	}
}
