package sipedge

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/presence"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/emiago/sipgo/sip"
)

// groups is a visibility model: extensions in the same named group see
// each other (h-feat's pickup groups will implement presence.Visibility).
type groups map[string]string

func (g groups) MaySee(sub, target string) bool { return g[sub] != "" && g[sub] == g[target] }

type eventsServer struct {
	*testServer
	ev *presence.Server
	b  *call.B2BUA
}

// startEvents runs the edge with a real B2BUA and the event server wired
// as edgepbxd wires them: 101, 102, 103 in group "a", 104 in group "b".
func startEvents(t testing.TB, sipMod func(*pbxconfig.SIP), evMod func(*presence.Config)) *eventsServer {
	t.Helper()
	es := &eventsServer{}
	var db *store.DB
	ts := startServerTuned(t, func(c *pbxconfig.SIP) {
		c.Algorithms = []string{AlgMD5} // sipp's [authentication] speaks MD5 only
		if sipMod != nil {
			sipMod(c)
		}
	}, func(d *store.DB) { db = d }, nil, func(s *Server) {
		if err := s.Extensions().Set("104", testPassword); err != nil {
			t.Fatal(err)
		}
		cfg := presence.Config{Sender: s.Sender(), Phones: s.EventPhones(), Registered: s.Registered,
			Visibility: groups{"101": "a", "102": "a", "103": "a", "104": "b"}, Log: slog.New(slog.DiscardHandler)}
		if evMod != nil {
			evMod(&cfg)
		}
		ev, err := presence.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ev.Close() })
		s.OnRegistration(ev.RegistrationChanged)
		s.SetEvents(ev)
		es.ev = ev
		es.b = startObservedCalls(t, s, db, ev)
	})
	es.testServer = ts
	return es
}

// startObservedCalls is startCalls with the event server as the B2BUA's
// dialog observer.
func startObservedCalls(t testing.TB, s *Server, db *store.DB, obs call.DialogObserver) *call.B2BUA {
	t.Helper()
	ports, err := media.NewPorts(43000, 43999)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	relay, err := media.NewRelay(media.Config{Addr: netip.MustParseAddr("127.0.0.1"), Ports: ports,
		Pinholes: &holeLog{open: map[netfw.Pinhole]bool{}}, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := dialplan.New(dialplan.Plan{Country: "DE",
		Extensions: []dialplan.Extension{{Number: "101"}, {Number: "102"}, {Number: "103"}, {Number: "104"}}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := call.New(call.Config{Client: s.Sender(), Contact: s.Contact("udp"), Relay: relay, Plan: plan,
		Directory: s.Directory(nil), CDR: cdr.New(db), Log: quiet, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	s.SetCalls(b)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// waitLong polls cond until it holds; the generous deadline only keeps a
// broken build from hanging.
func waitLong(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// sippBG starts sipp with args in its own directory, logging every
// message to messages.log; the channel reports its exit.
func sippBG(t testing.TB, scenario string, port int, args ...string) (dir string, done <-chan error) {
	t.Helper()
	dir = t.TempDir()
	sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", scenario))
	if port == 0 {
		port = netnstest.FreePort(t, "udp")
	}
	all := append([]string{"-sf", sc, "-i", "127.0.0.1", "-p", strconv.Itoa(port), "-m", "1", "-nostdin",
		"-timeout", "60s", "-timeout_error", "-trace_err", "-trace_msg", "-message_file", filepath.Join(dir, "messages.log")}, args...)
	cmd := exec.Command(siptest.NeedSipp(t), all...)
	cmd.Dir = dir
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		if err != nil {
			errs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
			var el []byte
			if len(errs) > 0 {
				el, _ = os.ReadFile(errs[0])
			}
			err = fmt.Errorf("sipp %s: %w\n%s\nerrors:\n%s", scenario, err, tail([]byte(out.String())), tail(el))
		}
		ch <- err
		close(exited)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	return dir, ch
}

func waitSipp(t testing.TB, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("sipp did not finish")
	}
}

// receivedNotifies returns the NOTIFY requests sipp logged as received, in
// order.
func receivedNotifies(t testing.TB, dir string) []*sip.Request {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "messages.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out []*sip.Request
	for _, part := range strings.Split(string(b), "message received")[1:] {
		i := strings.Index(part, "NOTIFY ")
		if i < 0 || strings.Contains(part[:i], "SIP/2.0 ") {
			continue
		}
		msg := part[i:]
		if j := strings.Index(msg, "\n-----------------"); j >= 0 {
			msg = msg[:j]
		}
		msg = strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")
		// sipp adds blank lines after the message: keep Content-Length bytes.
		if head, body, ok := strings.Cut(msg, "\r\n\r\n"); ok {
			n := 0
			for _, l := range strings.Split(head, "\r\n") {
				if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "Content-Length") {
					n, _ = strconv.Atoi(strings.TrimSpace(v))
				}
			}
			msg = head + "\r\n\r\n" + body[:min(n, len(body))]
		}
		m, err := sip.ParseMessage([]byte(msg))
		if err != nil {
			t.Fatalf("sipp logged an unparsable NOTIFY: %v\n%s", err, msg)
		}
		out = append(out, m.(*sip.Request))
	}
	return out
}

// bindCallee registers ext's contact at hostport in the location service
// (the callee here is a sipp UAS; the registrar has its own tests).
func bindCallee(t testing.TB, s *testServer, ext, hostport string) {
	t.Helper()
	src := netip.MustParseAddrPort(hostport)
	if r := s.Location().Register(s.now(), ext, Binding{CallID: randHex(8), CSeq: 1, Source: hostport, Transport: "UDP"},
		[]ContactUpdate{{Contact: "sip:" + ext + "@" + hostport, Expires: time.Hour}}, false, src.Addr()); r != regOK {
		t.Fatal("binding refused")
	}
}

var stateRE = regexp.MustCompile(`<state>([a-z]+)</state>`)
var versionRE = regexp.MustCompile(`<dialog-info [^>]*version="(\d+)"`)

// TestBLFSeesCallThroughBox: a sipp phone (103) subscribes to a
// colleague's (102) dialog event with digest auth; a sipp caller (101)
// calls 102 through the edge and the B2BUA, a sipp callee rings and
// answers. The subscriber's NOTIFYs show 102's dialog early, confirmed
// and terminated in that order, versions and CSeqs rising, in one
// subscription dialog, with the caller shown (same group) and none of the
// call's SIP identifiers.
func TestBLFSeesCallThroughBox(t *testing.T) {
	es := startEvents(t, nil, nil)
	edge := es.udp.String()
	uasPort := netnstest.FreePort(t, "udp")
	_, uasDone := sippBG(t, "uas_ring_answer.xml", uasPort, "-mi", "127.0.0.1", "-mp", strconv.Itoa(netnstest.FreeMediaPorts(t, "127.0.0.1")))
	for !udpBound(uasPort) {
		time.Sleep(10 * time.Millisecond) // sipp must listen before the box sends
	}
	bindCallee(t, es.testServer, "102", fmt.Sprintf("127.0.0.1:%d", uasPort))
	subDir, subDone := sippBG(t, "subscribe_dialog.xml", 0, "-s", "103", "-au", "103", "-ap", testPassword,
		"-key", "target", "102", "-key", "event", "dialog", "-key", "accept", "application/dialog-info+xml", edge)
	waitLong(t, "the subscription and its first NOTIFY", func() bool {
		return es.ev.Len() == 1 && es.ev.Counters().Notifies >= 1
	})
	uacPort := netnstest.FreePort(t, "udp")
	_, uacDone := sippBG(t, "uac_auth.xml", uacPort, "-s", "102", "-au", "101", "-ap", testPassword,
		"-key", "caller", "101", "-mi", "127.0.0.1", "-mp", strconv.Itoa(netnstest.FreeMediaPorts(t, "127.0.0.1")), edge)
	waitSipp(t, uacDone)
	waitSipp(t, uasDone)
	waitSipp(t, subDone)

	ns := receivedNotifies(t, subDir)
	if len(ns) < 4 {
		t.Fatalf("%d NOTIFYs, want the initial one and early, confirmed, terminated", len(ns))
	}
	var states []string
	lastVer, lastCSeq := -1, uint32(0)
	tag := ""
	for i, n := range ns {
		body := string(n.Body())
		m := versionRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("NOTIFY %d without a dialog-info version:\n%s", i, n)
		}
		v, _ := strconv.Atoi(m[1])
		if v <= lastVer || n.CSeq().SeqNo <= lastCSeq {
			t.Fatalf("NOTIFY %d: version %d after %d, CSeq %d after %d", i, v, lastVer, n.CSeq().SeqNo, lastCSeq)
		}
		lastVer, lastCSeq = v, n.CSeq().SeqNo
		ft, _ := n.From().Params.Get("tag")
		if tag != "" && ft != tag || ft == "" {
			t.Fatalf("NOTIFY %d left the subscription's dialog (From tag %q, then %q)", i, tag, ft)
		}
		tag = ft
		if ev := n.GetHeader("Event"); ev == nil || ev.Value() != "dialog" {
			t.Fatalf("NOTIFY %d Event %v", i, ev)
		}
		if ss := n.GetHeader("Subscription-State"); ss == nil || !strings.HasPrefix(ss.Value(), "active;expires=") {
			t.Fatalf("NOTIFY %d Subscription-State %v", i, ss)
		}
		if ct := n.ContentType(); ct == nil || ct.Value() != "application/dialog-info+xml" {
			t.Fatalf("NOTIFY %d Content-Type %v", i, ct)
		}
		if !strings.Contains(body, `entity="sip:102@127.0.0.1"`) {
			t.Fatalf("NOTIFY %d entity:\n%s", i, body)
		}
		// The subscriber never learns the dialog identifiers (they are
		// the credential of in-dialog requests on the box).
		for _, leak := range []string{"call-id", "local-tag", "remote-tag", "SIPpTag"} {
			if strings.Contains(body, leak) {
				t.Fatalf("NOTIFY %d shows %s:\n%s", i, leak, body)
			}
		}
		st := stateRE.FindAllStringSubmatch(body, -1)
		if len(st) > 1 {
			t.Fatalf("NOTIFY %d shows %d dialogs of one call:\n%s", i, len(st), body)
		}
		if len(st) == 1 {
			if states == nil || states[len(states)-1] != st[0][1] {
				states = append(states, st[0][1])
			}
			if st[0][1] != "trying" && !strings.Contains(body, "<identity>sip:101@127.0.0.1</identity>") {
				t.Fatalf("NOTIFY %d does not show the caller 101 (same group):\n%s", i, body)
			}
			if !strings.Contains(body, `direction="recipient"`) {
				t.Fatalf("NOTIFY %d direction:\n%s", i, body)
			}
		}
	}
	got := strings.Join(states, ",")
	t.Logf("102's dialog as 103 saw it in %d NOTIFYs: %s", len(ns), got)
	if got != "early,confirmed,terminated" && got != "trying,early,confirmed,terminated" {
		t.Fatalf("102's dialog went %s", got)
	}
	if es.ev.Len() != 1 {
		t.Fatalf("%d subscriptions after the call, want the one", es.ev.Len())
	}
}

// udpBound reports whether some process has a UDP socket bound to port
// (read from /proc/net/udp, without touching the port).
func udpBound(port int) bool {
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), fmt.Sprintf(":%04X ", port)) {
			return true
		}
	}
	return false
}

// subPhone is a raw UDP phone that subscribes with digest and answers
// NOTIFYs as the test says.
type subPhone struct {
	t                  testing.TB
	raw                *siptest.Raw
	srv                *net.UDPAddr
	user, pass         string
	tag, callID, local string
	cseq               int
	lastToTag          string
	nc                 int    // last nc sent on a reused nonce (benchmarks)
	transport          string // "": UDP
}

func newSubPhone(t testing.TB, s *testServer, user, pass string) *subPhone {
	t.Helper()
	raw := siptest.NewRaw(t, "UDP", netip.MustParseAddr("127.0.0.1"), s.udp.AddrPort())
	return &subPhone{t: t, raw: raw, srv: s.udp, user: user, pass: pass, local: raw.Local()}
}

// build writes a SUBSCRIBE in the phone's current dialog (toTag "": a new
// one).
func (p *subPhone) build(target, event, expires, toTag, auth string, extra ...string) string {
	p.cseq++
	host := p.srv.IP.String()
	var b strings.Builder
	fmt.Fprintf(&b, "SUBSCRIBE sip:%s@%s SIP/2.0\r\n", target, host)
	tp := p.transport
	if tp == "" {
		tp = "UDP"
	}
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", tp, p.local, randHex(8))
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", p.user, host, p.tag)
	if toTag != "" {
		fmt.Fprintf(&b, "To: <sip:%s@%s>;tag=%s\r\n", target, host, toTag)
	} else {
		fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", target, host)
	}
	fmt.Fprintf(&b, "Call-ID: %s\r\n", p.callID)
	fmt.Fprintf(&b, "CSeq: %d SUBSCRIBE\r\n", p.cseq)
	if tp == "UDP" {
		fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\n", p.user, p.local)
	} else {
		fmt.Fprintf(&b, "Contact: <sip:%s@%s;transport=%s>\r\n", p.user, p.local, strings.ToLower(tp))
	}
	fmt.Fprintf(&b, "Event: %s\r\n", event)
	if expires != "" {
		fmt.Fprintf(&b, "Expires: %s\r\n", expires)
	}
	b.WriteString("User-Agent: testphone/1.0\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

// response reads until a response comes; NOTIFYs meanwhile are answered
// 200 and kept for nextNotify.
func (p *subPhone) response() *sip.Response {
	p.t.Helper()
	for {
		m, _ := p.raw.Recv()
		if r, ok := m.(*sip.Response); ok {
			return r
		}
		p.t.Fatalf("request before the answer:\n%s", m)
	}
}

// answerNotifiesUntilResponse reads until a response comes, answering
// NOTIFYs meanwhile with 200.
func (p *subPhone) answerNotifiesUntilResponse() *sip.Response {
	p.t.Helper()
	for {
		m, _ := p.raw.Recv()
		switch m := m.(type) {
		case *sip.Response:
			return m
		case *sip.Request:
			p.raw.Send(sip.NewResponseFromRequest(m, 200, "OK", nil).String())
		}
	}
}

// subscribe starts a new subscription dialog: SUBSCRIBE, 401, SUBSCRIBE
// with credentials; it returns the final answer.
func (p *subPhone) subscribe(target, event, expires string, extra ...string) *sip.Response {
	p.t.Helper()
	p.tag, p.callID = randHex(4), randHex(8)
	p.raw.Send(p.build(target, event, expires, "", "", extra...))
	r := p.response()
	if r.StatusCode != 401 {
		return r
	}
	nonce := challengeOf(p.t, r, AlgMD5)
	uri := "sip:" + target + "@" + p.srv.IP.String()
	ha1 := HA1(AlgMD5, p.user, "edgepbx", p.pass)
	c := Credentials{Username: p.user, Realm: "edgepbx", Nonce: nonce, URI: uri, NC: "00000001", CNonce: randHex(4), QOP: "auth"}
	auth := fmt.Sprintf(`Digest username="%s", realm="edgepbx", nonce="%s", uri="%s", response="%s", algorithm=MD5, cnonce="%s", qop=auth, nc=00000001`,
		p.user, nonce, uri, digestResponse(AlgMD5, ha1, "SUBSCRIBE", c), c.CNonce)
	p.raw.Send(p.build(target, event, expires, "", auth, extra...))
	r = p.response()
	if r.StatusCode == 200 {
		p.lastToTag, _ = r.To().Params.Get("tag")
	}
	return r
}

// inDialog sends a SUBSCRIBE inside the last subscription's dialog.
func (p *subPhone) inDialog(target, event, expires string) *sip.Response {
	p.t.Helper()
	p.raw.Send(p.build(target, event, expires, p.lastToTag, ""))
	return p.response()
}

// nextNotify reads the next NOTIFY and answers it with code.
func (p *subPhone) nextNotify(code int) *sip.Request {
	p.t.Helper()
	m, _ := p.raw.Recv()
	n, ok := m.(*sip.Request)
	if !ok || n.Method != sip.NOTIFY {
		p.t.Fatalf("want a NOTIFY, got:\n%s", m)
	}
	res := sip.NewResponseFromRequest(n, code, "X", nil)
	p.raw.Send(res.String())
	return n
}

// silent reports that nothing arrives for a while (the box sent nothing).
func (p *subPhone) silent(wait time.Duration) bool {
	b, _, err := p.raw.Read(wait)
	if err == nil {
		p.t.Logf("unexpected:\n%s", b)
	}
	return err != nil
}

// shape is a response without what differs per request (dialog
// identifiers, the challenge's nonce): what an attacker compares.
func shape(r *sip.Response) string {
	var parts []string
	for _, h := range r.Headers() {
		switch strings.ToLower(h.Name()) {
		case "via", "from", "to", "call-id", "cseq":
			continue
		case "www-authenticate":
			parts = append(parts, h.Name())
			continue
		}
		parts = append(parts, h.Name()+": "+h.Value())
	}
	return r.StartLine() + "|" + strings.Join(parts, "|") + "|" + string(r.Body())
}

// TestSubscribeRefusedLearnsNothing: a subscriber of another group, a
// subscriber asking for a colleague's mailbox, and one asking for an
// extension that does not exist all get the same 403; wrong passwords and
// unknown users get the same 401 as REGISTER does. No subscription is
// made and no NOTIFY is sent.
func TestSubscribeRefusedLearnsNothing(t *testing.T) {
	es := startEvents(t, nil, nil)
	other := newSubPhone(t, es.testServer, "104", testPassword)
	var shapes []string
	for _, c := range []struct{ target, event string }{
		{"102", "dialog"}, {"102", "presence"}, {"999", "dialog"}, {"no-such-slot", "presence"},
		{"102", "message-summary"}, {"bad%20name", "dialog"},
	} {
		r := other.subscribe(c.target, c.event, "600")
		if r.StatusCode != 403 {
			t.Fatalf("104 → %s %s: %s", c.target, c.event, r.StartLine())
		}
		shapes = append(shapes, shape(r))
	}
	colleague := newSubPhone(t, es.testServer, "101", testPassword)
	r := colleague.subscribe("102", "message-summary", "600")
	if r.StatusCode != 403 {
		t.Fatalf("101 → 102's mailbox: %s", r.StartLine())
	}
	shapes = append(shapes, shape(r))
	for _, sh := range shapes[1:] {
		if sh != shapes[0] {
			t.Fatalf("refusals differ:\n%s\n%s", shapes[0], sh)
		}
	}
	// Not authenticated: wrong password and unknown user look alike.
	var auths []string
	for _, ph := range []*subPhone{newSubPhone(t, es.testServer, "102", "wrong-password"), newSubPhone(t, es.testServer, "555", testPassword)} {
		r := ph.subscribe("102", "dialog", "600")
		if r.StatusCode != 401 {
			t.Fatalf("%s with bad credentials: %s", ph.user, r.StartLine())
		}
		auths = append(auths, shape(r))
	}
	if auths[0] != auths[1] {
		t.Fatalf("wrong password and unknown user answered differently:\n%s\n%s", auths[0], auths[1])
	}
	if es.ev.Len() != 0 || es.ev.Counters().Notifies != 0 {
		t.Fatalf("%d subscriptions, %d NOTIFYs after refusals", es.ev.Len(), es.ev.Counters().Notifies)
	}
	if !other.silent(300 * time.Millisecond) {
		t.Fatal("the refused subscriber got something")
	}
}

// TestSubscriptionLifecycle: Expires bounds (423, clamp), per-phone
// bound, refresh and unsubscribe inside the dialog, expiry with a final
// NOTIFY, a NOTIFY answered 481 removing the subscription, unknown
// packages (489) and unknown dialogs (481). Everything goes over UDP: the
// stateless REGISTER path does not take SUBSCRIBE.
func TestSubscriptionLifecycle(t *testing.T) {
	t.Run("bounds", func(t *testing.T) {
		es := startEvents(t, nil, nil)
		p := newSubPhone(t, es.testServer, "101", testPassword)
		if r := p.subscribe("102", "dialog", "30"); r.StatusCode != 423 || r.GetHeader("Min-Expires") == nil || r.GetHeader("Min-Expires").Value() != "60" {
			t.Fatalf("Expires 30: %s %v", r.StartLine(), r.GetHeader("Min-Expires"))
		}
		r := p.subscribe("102", "dialog", "99999")
		if r.StatusCode != 200 || r.GetHeader("Expires").Value() != "3600" || r.Contact() == nil || p.lastToTag == "" {
			t.Fatalf("Expires 99999: %s", r)
		}
		n := p.nextNotify(200)
		if ss := n.GetHeader("Subscription-State").Value(); !strings.HasPrefix(ss, "active;expires=") {
			t.Fatalf("first NOTIFY: %s", n)
		}
		if r := p.subscribe("102", "conference", "600"); r.StatusCode != 489 || r.GetHeader("Allow-Events") == nil {
			t.Fatalf("unknown package: %s", r)
		}
		p.lastToTag = "not-a-tag-of-the-box"
		if r := p.inDialog("102", "dialog", "600"); r.StatusCode != 481 {
			t.Fatalf("unknown dialog: %s", r.StartLine())
		}
	})
	t.Run("expiry, bound, refresh, 481", func(t *testing.T) {
		es := startEvents(t, nil, func(c *presence.Config) { c.MinExpires, c.MaxPerSubscriber = time.Second, 2 })
		p := newSubPhone(t, es.testServer, "101", testPassword)
		if r := p.subscribe("102", "dialog", "1"); r.StatusCode != 200 || r.GetHeader("Expires").Value() != "1" {
			t.Fatalf("subscribe: %s", r)
		}
		// The first NOTIFY, then the one at expiry (on a box so loaded
		// that the first was not sent within the second, only the last).
		for i := 0; ; i++ {
			n := p.nextNotify(200)
			ss := n.GetHeader("Subscription-State").Value()
			if ss == "terminated;reason=timeout" {
				break
			}
			if i > 0 || !strings.HasPrefix(ss, "active;expires=") {
				t.Fatalf("NOTIFY %d: %s", i, n)
			}
		}
		waitLong(t, "the expired subscription to go", func() bool { return es.ev.Len() == 0 })

		a := p.subscribe("102", "dialog;id=1", "600")
		p.nextNotify(200)
		aTag := p.lastToTag
		aCall, aFrom := p.callID, p.tag
		if r := p.subscribe("103", "presence", "600"); r.StatusCode != 200 {
			t.Fatalf("second: %s", r.StartLine())
		}
		p.nextNotify(200)
		bTag, bCall, bFrom := p.lastToTag, p.callID, p.tag
		if r := p.subscribe("103", "dialog", "600"); r.StatusCode != 403 {
			t.Fatalf("third subscription of one phone over a bound of 2: %s", r.StartLine())
		}
		if a.StatusCode != 200 || es.ev.LenOf("101") != 2 {
			t.Fatalf("subscriptions of 101: %d", es.ev.LenOf("101"))
		}
		// Unsubscribe the presence one in its dialog: 200, final NOTIFY.
		p.callID, p.tag, p.lastToTag = bCall, bFrom, bTag
		if r := p.inDialog("103", "presence", "0"); r.StatusCode != 200 {
			t.Fatalf("unsubscribe: %s", r.StartLine())
		}
		if n := p.nextNotify(200); n.GetHeader("Subscription-State").Value() != "terminated;reason=timeout" {
			t.Fatalf("after unsubscribe: %s", n)
		}
		// Refresh the dialog one (no credentials inside the dialog); its
		// NOTIFY answered 481 removes it.
		p.callID, p.tag, p.lastToTag = aCall, aFrom, aTag
		if r := p.inDialog("102", "dialog;id=1", "600"); r.StatusCode != 200 {
			t.Fatalf("refresh: %s", r.StartLine())
		}
		p.nextNotify(481)
		waitLong(t, "the subscription whose NOTIFY got 481 to go", func() bool { return es.ev.Len() == 0 })
		if c := es.ev.Counters(); c.Removed != 1 || c.Expired != 1 || c.Unsubscribed != 1 {
			t.Fatalf("counters %+v", c)
		}
	})
}

// TestMWIReachesSippPhone: a sipp phone subscribes to its own
// message-summary; when voicemail reports a new message the phone gets a
// NOTIFY saying so (RFC 3842 body).
func TestMWIReachesSippPhone(t *testing.T) {
	es := startEvents(t, nil, nil)
	dir, done := sippBG(t, "subscribe_mwi.xml", 0, "-s", "101", "-au", "101", "-ap", testPassword,
		"-key", "target", "101", "-key", "event", "message-summary", "-key", "accept", "application/simple-message-summary", es.udp.String())
	waitLong(t, "the subscription and its first NOTIFY", func() bool {
		return es.ev.Len() == 1 && es.ev.Counters().Notifies >= 1
	})
	es.ev.MailboxChanged("101", 2, 1)
	waitSipp(t, done)
	ns := receivedNotifies(t, dir)
	if len(ns) != 2 {
		t.Fatalf("%d NOTIFYs, want 2", len(ns))
	}
	if got := string(ns[0].Body()); !strings.HasPrefix(got, "Messages-Waiting: no\r\n") {
		t.Fatalf("first NOTIFY body %q", got)
	}
	want := "Messages-Waiting: yes\r\nMessage-Account: sip:101@127.0.0.1\r\nVoice-Message: 2/1 (0/0)\r\n"
	if got := string(ns[1].Body()); got != want {
		t.Fatalf("NOTIFY body %q, want %q", got, want)
	}
	if ct := ns[1].ContentType(); ct == nil || ct.Value() != "application/simple-message-summary" {
		t.Fatalf("Content-Type %v", ct)
	}
}

// TestUnsolicitedMWI: an extension set to unsolicited MWI gets a NOTIFY
// at its registered contact without subscribing, when it registers with
// messages waiting and when its mailbox changes; another does not.
func TestUnsolicitedMWI(t *testing.T) {
	es := startEvents(t, nil, func(c *presence.Config) {
		c.Unsolicited = func(ext, ua string) bool { return ext == "102" }
	})
	es.ev.MailboxChanged("102", 1, 0) // before the phone registers: nobody to tell yet
	ph := newPhone(t, es.udp, "127.0.0.1", "102")
	msg, _ := ph.register(regOpts{})
	ph.send(msg)
	_, r := ph.mustRecv()
	msg, _ = ph.register(regOpts{auth: authHeader(AlgMD5, "102", testPassword, "edgepbx", challengeOf(t, r, AlgMD5), "sip:"+es.udp.IP.String(), "00000001", randHex(4))})
	ph.send(msg)
	other := newPhone(t, es.udp, "127.0.0.1", "103")
	if r, ok := other.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	es.ev.MailboxChanged("103", 1, 0)
	next := func(want string) {
		t.Helper()
		for {
			m, _ := ph.raw.Recv()
			if r, ok := m.(*sip.Response); ok && r.StatusCode == 200 {
				continue // the REGISTER's answer
			}
			n, ok := m.(*sip.Request)
			if !ok || n.Method != sip.NOTIFY {
				t.Fatalf("want a NOTIFY:\n%s", m)
			}
			if n.To().Params.Has("tag") || n.GetHeader("Event").Value() != "message-summary" ||
				!strings.HasPrefix(string(n.Body()), "Messages-Waiting: yes\r\n") || n.Recipient.User != "102" ||
				!strings.Contains(string(n.Body()), want) {
				t.Fatalf("unsolicited NOTIFY, want %s:\n%s", want, n)
			}
			ph.raw.Send(sip.NewResponseFromRequest(n, 200, "OK", nil).String())
			return
		}
	}
	next("Voice-Message: 1/0") // on registering
	es.ev.MailboxChanged("102", 2, 0)
	next("Voice-Message: 2/0")
	if b, _, err := other.raw.Read(300 * time.Millisecond); err == nil {
		t.Fatalf("103 is not set to unsolicited MWI but got:\n%s", b)
	}
}

// TestOptionsAllowsSubscribe: a registered phone's OPTIONS answer lists
// SUBSCRIBE and NOTIFY and the event packages once the server is wired.
func TestOptionsAllowsSubscribe(t *testing.T) {
	es := startEvents(t, nil, nil)
	ph := newPhone(t, es.udp, "127.0.0.1", "101")
	if r, ok := ph.registerAuth(AlgMD5, testPassword); !ok || r.StatusCode != 200 {
		t.Fatalf("register: %v", r)
	}
	host := es.udp.IP.String()
	ph.send(fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:101@%s>;tag=%s\r\nTo: <sip:%s>\r\nCall-ID: %s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		host, ph.local, randHex(8), host, randHex(4), host, randHex(8)))
	_, r := ph.mustRecv()
	allow, events := r.GetHeader("Allow"), r.GetHeader("Allow-Events")
	if r.StatusCode != 200 || allow == nil || !strings.Contains(allow.Value(), "SUBSCRIBE, NOTIFY") ||
		events == nil || events.Value() != presence.AllowEvents {
		t.Fatalf("OPTIONS answer:\n%s", r)
	}
}

// TestStatelessPathLeavesSubscribe: the UDP front's stateless REGISTER
// path hands a SUBSCRIBE (even one that starts like a REGISTER would not)
// to sipgo's transaction path untouched.
func TestStatelessPathLeavesSubscribe(t *testing.T) {
	es := startEvents(t, nil, nil)
	msg := []byte("SUBSCRIBE sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx1\r\n" +
		"From: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:102@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 SUBSCRIBE\r\n" +
		"Contact: <sip:101@127.0.0.1:5999>\r\nEvent: dialog\r\nContent-Length: 0\r\n\r\n")
	raddr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5999}
	if es.statelessUDP(raddr, netip.MustParseAddr("127.0.0.1"), msg) {
		t.Fatal("the stateless REGISTER path took a SUBSCRIBE")
	}
}
