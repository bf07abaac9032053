package call

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestBridgedInfoDTMF: two phones in a bridged call send DTMF as SIP INFO
// both ways. The box passes each key on as its own INFO in the other
// leg's dialog, re-encoded (application/dtmf-relay, the key and a fixed
// duration: nothing else of the sender's body crosses), and relays the
// other phone's 200. An INFO that is not DTMF is refused 415, a malformed
// one 400, an oversized one 413; none reaches the other phone.
func TestBridgedInfoDTMF(t *testing.T) {
	h := startHarness(t)
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.setContacts("102", callee.addr)
	answered := make(chan *sipgo.DialogServerSession, 1)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
		answered <- d
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := caller.dial(ctx, h, "102")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	var sd *sipgo.DialogServerSession
	select {
	case sd = <-answered:
	case <-ctx.Done():
		t.Fatal("callee never answered")
	}
	info := func(do func(context.Context, *sip.Request) (*sip.Response, error), to sip.Uri, ctype, body string) int {
		t.Helper()
		req := sip.NewRequest(sip.INFO, to)
		req.AppendHeader(sip.NewHeader("Content-Type", ctype))
		req.SetBody([]byte(body))
		res, err := do(ctx, req)
		if err != nil {
			t.Fatalf("INFO %q: %v", body, err)
		}
		return res.StatusCode
	}
	got := func(p *phone, who string) *sip.Request {
		t.Helper()
		select {
		case r := <-p.infos:
			return r
		case <-ctx.Done():
			t.Fatalf("%s got no INFO", who)
		}
		return nil
	}
	toCallee, toCaller := d.InviteResponse.Contact().Address, sd.InviteRequest.Contact().Address

	// Caller to callee: dtmf-relay, re-encoded by the box.
	if c := info(d.Do, toCallee, "application/dtmf-relay", "Signal=5\r\nDuration=250\r\n"); c != 200 {
		t.Fatalf("caller's INFO: %d", c)
	}
	r := got(callee, "callee")
	if ct := r.ContentType(); ct == nil || ct.Value() != "application/dtmf-relay" || string(r.Body()) != "Signal=5\r\nDuration=160\r\n" {
		t.Fatalf("callee got INFO %v %q", ct, r.Body())
	}
	if r.CallID().Value() != sd.InviteRequest.CallID().Value() || r.CallID().Value() == d.InviteRequest.CallID().Value() {
		t.Fatalf("INFO not in the callee's own dialog: Call-ID %s", r.CallID().Value())
	}
	// Callee to caller: application/dtmf, '#'.
	if c := info(sd.Do, toCaller, "application/dtmf", "#"); c != 200 {
		t.Fatalf("callee's INFO: %d", c)
	}
	r = got(caller, "caller")
	if string(r.Body()) != "Signal=#\r\nDuration=160\r\n" || r.CallID().Value() != d.InviteRequest.CallID().Value() {
		t.Fatalf("caller got INFO %q in %s", r.Body(), r.CallID().Value())
	}
	// Not DTMF, or not a key: refused, nothing passed on.
	if c := info(d.Do, toCallee, "application/json", `{"x":1}`); c != 415 {
		t.Fatalf("INFO with a JSON body: %d, want 415", c)
	}
	if c := info(d.Do, toCallee, "application/dtmf-relay", "Signal=Z\r\nDuration=100\r\n"); c != 400 {
		t.Fatalf("INFO with key Z: %d, want 400", c)
	}
	if c := info(d.Do, toCallee, "application/dtmf-relay", "Signal=1\r\n"+strings.Repeat("X-Pad=0\r\n", 40)); c != 413 {
		t.Fatalf("INFO with an oversized body: %d, want 413", c)
	}
	select {
	case r := <-callee.infos:
		t.Fatalf("refused INFO reached the callee: %q", r.Body())
	default:
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.byes:
	case <-ctx.Done():
		t.Fatal("callee got no BYE")
	}
	if e := waitEnded(t, h); e.rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", e.rec)
	}
	h.noStateLeft(t, false)
}
