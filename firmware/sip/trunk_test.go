package sip

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// itspRegister is one REGISTER the test registrar accepted or refused.
type itspRegister struct {
	user     string
	password string // the password that matched; "" refused
	expires  int
	callID   string
	cseq     uint32
	contact  string
}

// itsp is a registrar on loopback built on sipgo: digest MD5 with qop=auth
// against per-user password lists, 300 s granted.
type itsp struct {
	addr string
	got  chan itspRegister

	mu        sync.Mutex
	passwords map[string][]string
}

const itspRealm = "itsp.example"

func startITSP(t *testing.T, passwords map[string][]string) *itsp {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-itsp"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	it := &itsp{addr: conn.LocalAddr().String(), got: make(chan itspRegister, 64), passwords: passwords}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		user := req.From().Address.User
		exp, _ := strconv.Atoi(req.GetHeader("Expires").Value())
		ev := itspRegister{user: user, expires: exp, callID: req.CallID().Value(), cseq: req.CSeq().SeqNo, contact: req.GetHeader("Contact").Value()}
		h := req.GetHeader("Authorization")
		if h == nil {
			res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", `Digest realm="`+itspRealm+`", nonce="`+randHex(8)+`", algorithm=MD5, qop="auth"`))
			tx.Respond(res)
			return
		}
		c, err := ParseDigest(h.Value())
		it.mu.Lock()
		pws := it.passwords[user]
		it.mu.Unlock()
		if err == nil && c.Username == user {
			for _, pw := range pws {
				if digestResponse("MD5", HA1("MD5", user, itspRealm, pw), "REGISTER", c) == c.Response {
					ev.password = pw
				}
			}
		}
		it.got <- ev
		if ev.password == "" {
			tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(min(exp, 300))))
		tx.Respond(res)
	})
	go srv.ServeUDP(conn)
	t.Cleanup(func() { conn.Close(); ua.Close() })
	return it
}

// next waits for the registrar's next accepted or refused REGISTER.
func (it *itsp) next(t *testing.T) itspRegister {
	t.Helper()
	select {
	case ev := <-it.got:
		return ev
	case <-time.After(30 * time.Second): // a hang, not a performance bound
		t.Fatal("no REGISTER reached the registrar")
		return itspRegister{}
	}
}

func stateOf(m *TrunkRegistrations, name string) (TrunkRegState, bool) {
	for _, st := range m.States() {
		if st.Name == name {
			return st, true
		}
	}
	return TrunkRegState{}, false
}

// waitState waits until the registration's state is want; the state is
// set right after the registrar's answer, so this is ordering, not timing.
func waitState(t *testing.T, m *TrunkRegistrations, name, want string) TrunkRegState {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if st, ok := stateOf(m, name); ok && st.State == want {
			return st
		}
	}
	st, _ := stateOf(m, name)
	t.Fatalf("trunk %s: state %+v, want %s", name, st, want)
	return st
}

// TestTrunkRegistrationsLive drives the registration manager against a
// real registrar: a new trunk registers with digest; a changed password
// un-registers the old binding (same Call-ID, higher CSeq, Expires 0) and
// registers with the new one; a wrong password shows as failed with the
// registrar's answer; a removed trunk un-registers; the end of the
// context un-registers what is registered and leaves the failed alone.
func TestTrunkRegistrationsLive(t *testing.T) {
	s := startServer(t, nil)
	it := startITSP(t, map[string][]string{"alice": {"pw-one", "pw-two"}, "bob": {"bob-right"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := s.TrunkRegistrations(ctx)

	alice := TrunkRegistration{Name: "itsp", Registrar: it.addr, Transport: "udp", Username: "alice", Domain: itspRealm, Password: "pw-one"}
	if err := m.Set([]TrunkRegistration{alice}); err != nil {
		t.Fatal(err)
	}
	first := it.next(t)
	if first.user != "alice" || first.password != "pw-one" || first.expires != 3600 || !strings.Contains(first.contact, s.udp.String()) {
		t.Fatalf("first REGISTER %+v (edge %s)", first, s.udp)
	}
	st := waitState(t, m, "itsp", RegRegistered)
	if st.LastError != "" || st.Registrar != it.addr || st.Expires.Sub(st.LastSuccess) != 300*time.Second {
		t.Fatalf("registered state %+v", st)
	}

	// New password: the old binding goes, the new one comes.
	alice2 := alice
	alice2.Password = "pw-two"
	if err := m.Set([]TrunkRegistration{alice2}); err != nil {
		t.Fatal(err)
	}
	un := it.next(t)
	if un.expires != 0 || un.password != "pw-one" || un.callID != first.callID || un.cseq <= first.cseq {
		t.Fatalf("un-REGISTER %+v after %+v", un, first)
	}
	re := it.next(t)
	if re.expires != 3600 || re.password != "pw-two" || re.callID == first.callID {
		t.Fatalf("REGISTER with the new password %+v", re)
	}
	waitState(t, m, "itsp", RegRegistered)

	// A second trunk with a wrong password fails with the registrar's answer;
	// the first is left alone (no REGISTER for it).
	bob := TrunkRegistration{Name: "backup", Registrar: it.addr, Transport: "udp", Username: "bob", Domain: itspRealm, Password: "bob-wrong"}
	if err := m.Set([]TrunkRegistration{alice2, bob}); err != nil {
		t.Fatal(err)
	}
	if ev := it.next(t); ev.user != "bob" || ev.password != "" {
		t.Fatalf("bob's REGISTER %+v", ev)
	}
	st = waitState(t, m, "backup", RegFailed)
	if !strings.Contains(st.LastError, "403") || !st.Expires.IsZero() {
		t.Fatalf("failed state %+v", st)
	}
	if st, _ := stateOf(m, "itsp"); st.State != RegRegistered {
		t.Fatalf("itsp disturbed by adding backup: %+v", st)
	}

	// Refused lists change nothing.
	for _, bad := range [][]TrunkRegistration{
		{alice2, alice2},
		{{Name: "x", Registrar: "no-port", Transport: "udp", Username: "u", Domain: "d"}},
		{{Name: "x", Registrar: it.addr, Transport: "sctp", Username: "u", Domain: "d"}},
		{{Name: "x", Registrar: it.addr, Transport: "udp", Username: "u\r\nVia: evil", Domain: "d"}},
	} {
		if err := m.Set(bad); err == nil {
			t.Fatalf("Set(%+v) accepted", bad)
		}
	}
	if len(m.States()) != 2 {
		t.Fatalf("states after refused lists: %+v", m.States())
	}

	// Remove itsp: un-registered, gone from the states.
	if err := m.Set([]TrunkRegistration{bob}); err != nil {
		t.Fatal(err)
	}
	if ev := it.next(t); ev.user != "alice" || ev.expires != 0 || ev.password != "pw-two" {
		t.Fatalf("removal sent %+v", ev)
	}
	if _, ok := stateOf(m, "itsp"); ok {
		t.Fatal("removed trunk still reported")
	}

	// Stop: bob was never registered, so nothing more is sent.
	cancel()
	m.Wait()
	select {
	case ev := <-it.got:
		t.Fatalf("REGISTER after the stop: %+v", ev)
	default:
	}
	if err := m.Set([]TrunkRegistration{alice}); err != nil {
		t.Fatal(err)
	}
	if len(m.States()) != 0 {
		t.Fatalf("registrations started after the stop: %+v", m.States())
	}
}
