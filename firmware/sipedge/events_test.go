package sipedge

import (
	"fmt"
	"log/slog"
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
		msg = strings.TrimRight(msg, "\n") // sipp adds a blank line
		m, err := sip.ParseMessage([]byte(strings.ReplaceAll(strings.ReplaceAll(msg, "\r\n", "\n"), "\n", "\r\n")))
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
	_, uasDone := sippBG(t, "uas_ring_answer.xml", uasPort, "-mi", "127.0.0.1", "-mp", strconv.Itoa(20000+uasPort%5000*2))
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
		"-key", "caller", "101", "-mi", "127.0.0.1", "-mp", strconv.Itoa(20000+uacPort%5000*2), edge)
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
