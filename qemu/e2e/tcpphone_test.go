package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// tcpPhone is a real sipgo phone that talks to the box over one TCP
// connection through QEMU's forwarded port (user-mode networking drops
// the guest's UDP, and restrict=on lets the guest open nothing towards
// the host): it registers over that connection, and the box sends its
// INVITEs back over it (the registration's flow). It answers every call
// with a PCMU offer and places calls; no RTP flows (the box relays
// signalling-only calls as well, and a CDR is written when they end).
type tcpPhone struct {
	user, pass string
	host       string // the box as the phone addresses it: 127.0.0.1:forwarded port
	port       int
	ua         *sipgo.UserAgent
	client     *sipgo.Client
	calls      *sipgo.DialogUA
	answers    *sipgo.DialogServerCache
}

func newTCPPhone(user, pass string, boxPort int) (*tcpPhone, error) {
	quiet := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("powercut-phone"),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		return nil, err
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		ua.Close()
		return nil, err
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(quiet))
	if err != nil {
		ua.Close()
		return nil, err
	}
	p := &tcpPhone{user: user, pass: pass, host: "127.0.0.1", port: boxPort, ua: ua, client: client}
	contact := sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: user, Host: "127.0.0.1", Port: 5060,
		UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}}}
	// In-dialog requests (ACK, BYE) go back where the box's answer came
	// from, the forwarded port, not to the Contact the box put in it (its
	// address inside QEMU's network, unreachable from the host).
	p.calls = &sipgo.DialogUA{Client: client, ContactHDR: contact, RewriteContact: true}
	p.answers = sipgo.NewDialogServerCache(client, contact)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d, err := p.answers.ReadInvite(req, tx)
		if err != nil {
			return
		}
		_ = d.Respond(200, "OK", p.sdp(), sip.NewHeader("Content-Type", "application/sdp"))
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.answers.ReadAck(req, tx) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) { _ = p.answers.ReadBye(req, tx) })
	return p, nil
}

func (p *tcpPhone) Close() { _ = p.ua.Close() }

// sdp offers media at the host as the guest sees it through user-mode
// networking (10.0.2.2): the box opens its firewall pinhole to that
// address (PID 1 refuses one towards loopback). Nothing is sent there.
func (p *tcpPhone) sdp() []byte {
	return []byte("v=0\r\no=phone 1 1 IN IP4 10.0.2.2\r\ns=-\r\nc=IN IP4 10.0.2.2\r\nt=0 0\r\n" +
		"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")
}

func (p *tcpPhone) boxURI(user string) sip.Uri {
	return sip.Uri{Scheme: "sip", User: user, Host: p.host, Port: p.port, UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}}
}

// register binds the phone's flow at the box, answering the digest
// challenge.
func (p *tcpPhone) register(ctx context.Context) error {
	aor := sip.Uri{Scheme: "sip", User: p.user, Host: p.host}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: p.host, Port: p.port, UriParams: sip.HeaderParams{{K: "transport", V: "tcp"}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+p.user+"@127.0.0.1:5060;transport=tcp>"))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	res, err := p.client.Do(ctx, req)
	if err != nil || res == nil {
		return fmt.Errorf("register %s: no answer: %v", p.user, err)
	}
	if res.StatusCode == 401 {
		if res, err = p.client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: p.user, Password: p.pass}); err != nil || res == nil {
			return fmt.Errorf("register %s with digest: no answer: %v", p.user, err)
		}
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("register %s: %s", p.user, res.StartLine())
	}
	return nil
}

// call places a call to number, waits for the answer, acknowledges it
// and hangs up. The error is nil only when the box answered the BYE with
// 200, which it sends once the call's record is committed.
func (p *tcpPhone) call(ctx context.Context, number string) error {
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: p.host}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := p.calls.Invite(ctx, p.boxURI(number), p.sdp(), from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: p.user, Password: p.pass}); err != nil {
		return err
	}
	if err := d.Ack(ctx); err != nil {
		return err
	}
	if err := d.Bye(ctx); err != nil {
		return fmt.Errorf("BYE: %w", err)
	}
	return nil
}

func (p *tcpPhone) String() string { return p.user + "@" + p.host + ":" + strconv.Itoa(p.port) }
