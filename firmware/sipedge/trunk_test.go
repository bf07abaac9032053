package sipedge

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo/sip"
)

const itspRealm = "itsp.example"

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
	it := siptest.StartRegistrar(t, itspRealm, map[string][]string{"alice": {"pw-one", "pw-two"}, "bob": {"bob-right"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := s.TrunkRegistrations(ctx)

	alice := TrunkRegistration{Name: "itsp", Registrar: it.Addr, Transport: "udp", Username: "alice", Domain: itspRealm, Password: "pw-one"}
	if err := m.Set([]TrunkRegistration{alice}); err != nil {
		t.Fatal(err)
	}
	first := it.Next(t, nil)
	if first.User != "alice" || first.Password != "pw-one" || first.Expires != 3600 || !strings.Contains(first.Contact, s.udp.String()) {
		t.Fatalf("first REGISTER %+v (edge %s)", first, s.udp)
	}
	// It leaves from the edge's own port, the one in its Contact, with a
	// Via naming it (not from a new socket with a wildcard Via).
	if first.Source != s.udp.String() || first.SentBy != s.udp.String() {
		t.Fatalf("REGISTER from %s with Via %s, want both %s", first.Source, first.SentBy, s.udp)
	}
	st := waitState(t, m, "itsp", RegRegistered)
	if st.LastError != "" || st.Registrar != it.Addr || st.Expires.Sub(st.LastSuccess) != 300*time.Second {
		t.Fatalf("registered state %+v", st)
	}

	// New password: the old binding goes, the new one comes.
	alice2 := alice
	alice2.Password = "pw-two"
	if err := m.Set([]TrunkRegistration{alice2}); err != nil {
		t.Fatal(err)
	}
	un := it.Next(t, nil)
	if un.Expires != 0 || un.Password != "pw-one" || un.CallID != first.CallID || un.CSeq <= first.CSeq {
		t.Fatalf("un-REGISTER %+v after %+v", un, first)
	}
	re := it.Next(t, nil)
	if re.Expires != 3600 || re.Password != "pw-two" || re.CallID == first.CallID {
		t.Fatalf("REGISTER with the new password %+v", re)
	}
	waitState(t, m, "itsp", RegRegistered)

	// A second trunk with a wrong password fails with the registrar's answer;
	// the first is left alone (no REGISTER for it).
	bob := TrunkRegistration{Name: "backup", Registrar: it.Addr, Transport: "udp", Username: "bob", Domain: itspRealm, Password: "bob-wrong"}
	if err := m.Set([]TrunkRegistration{alice2, bob}); err != nil {
		t.Fatal(err)
	}
	if ev := it.Next(t, nil); ev.User != "bob" || ev.Password != "" {
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
		{{Name: "x", Registrar: it.Addr, Transport: "sctp", Username: "u", Domain: "d"}},
		{{Name: "x", Registrar: it.Addr, Transport: "udp", Username: "u\r\nVia: evil", Domain: "d"}},
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
	if ev := it.Next(t, nil); ev.User != "alice" || ev.Expires != 0 || ev.Password != "pw-two" {
		t.Fatalf("removal sent %+v", ev)
	}
	if _, ok := stateOf(m, "itsp"); ok {
		t.Fatal("removed trunk still reported")
	}

	// Stop: bob was never registered, so nothing more is sent.
	cancel()
	m.Wait()
	select {
	case ev := <-it.Got:
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

// endedTx is a client transaction as sipgo hands it to Do when its
// transaction layer terminates it under a waiting request: Done is closed
// and Err is still nil (Terminate closes Done before it records why).
// With answer set, that answer arrives instead and Done stays open.
type endedTx struct {
	res  chan *sip.Response
	done chan struct{}
}

func newEndedTx(answer *sip.Response) *endedTx {
	tx := &endedTx{res: make(chan *sip.Response, 1), done: make(chan struct{})}
	if answer != nil {
		tx.res <- answer
	} else {
		close(tx.done)
	}
	return tx
}

func (tx *endedTx) Terminate()                             {}
func (tx *endedTx) OnTerminate(sip.FnTxTerminate) bool     { return false }
func (tx *endedTx) Done() <-chan struct{}                  { return tx.done }
func (tx *endedTx) Err() error                             { return nil }
func (tx *endedTx) Responses() <-chan *sip.Response        { return tx.res }
func (tx *endedTx) OnRetransmission(sip.FnTxResponse) bool { return false }

// requesterFunc lets a test decide what each client transaction ends with.
type requesterFunc func(*sip.Request) sip.ClientTransaction

func (f requesterFunc) Request(_ context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	return f(req), nil
}

// TestRegisterAtNoAnswer: a REGISTER whose transaction ends with neither an
// answer nor an error (first request, or the digest retry after a 401) is
// a failed registration, not a nil dereference that kills edgepbxd.
func TestRegisterAtNoAnswer(t *testing.T) {
	for _, tc := range []struct {
		name       string
		challenged bool // the first REGISTER gets a 401, the retry no answer
	}{
		{"first request", false},
		{"digest retry", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, nil)
			sent := 0
			s.client.TxRequester = requesterFunc(func(req *sip.Request) sip.ClientTransaction {
				sent++
				if tc.challenged && sent == 1 {
					res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
					res.AppendHeader(sip.NewHeader("WWW-Authenticate", `Digest realm="itsp.example", nonce="abc", algorithm=MD5, qop="auth"`))
					return newEndedTx(res)
				}
				return newEndedTx(nil)
			})
			r := &registration{cfg: TrunkRegistration{Name: "itsp", Registrar: "127.0.0.1:9", Transport: "udp",
				Username: "alice", Domain: itspRealm, Password: "pw"}, callID: "cid"}
			granted, err := s.registerAt(context.Background(), r, time.Hour)
			if !errors.Is(err, ErrNoAnswer) || granted != 0 {
				t.Fatalf("registerAt = %v, %v; want ErrNoAnswer", granted, err)
			}
			if want := map[bool]int{false: 1, true: 2}[tc.challenged]; sent != want {
				t.Fatalf("%d requests sent, want %d", sent, want)
			}
		})
	}
}

// TestTrunkRegistrationEdgeClosing closes the edge while a trunk REGISTER
// waits on a registrar that does not answer it, many times over. Before,
// the user agent's Close terminated the waiting transaction and sipgo
// answered some of these Do calls with (nil, nil), which panicked
// registerAt. Now Close first stops the registration, which un-registers
// (answered) while the sockets still work, and returns after it.
func TestTrunkRegistrationEdgeClosing(t *testing.T) {
	for i := range 20 {
		silent, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := startServer(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		m := s.TrunkRegistrations(ctx)
		if err := m.Set([]TrunkRegistration{{Name: "itsp", Registrar: silent.LocalAddr().String(), Transport: "udp",
			Username: "alice", Domain: itspRealm, Password: "pw"}}); err != nil {
			t.Fatal(err)
		}
		// The registrar keeps silent on the REGISTER and answers the
		// un-REGISTER (Expires: 0) with 200.
		unregistered := make(chan struct{})
		waiting := make(chan struct{})
		go func() {
			buf := make([]byte, 4096)
			for first := true; ; first = false {
				n, from, err := silent.ReadFrom(buf)
				if err != nil {
					return
				}
				if first {
					close(waiting)
				}
				m, err := sip.ParseMessage(buf[:n])
				req, ok := m.(*sip.Request)
				if err != nil || !ok {
					continue
				}
				if e := req.GetHeader("Expires"); e != nil && e.Value() == "0" {
					close(unregistered) // before the answer the box waits for
					silent.WriteTo([]byte(sip.NewResponseFromRequest(req, 200, "OK", nil).String()), from)
					return
				}
			}
		}()
		<-waiting // the REGISTER is out and waiting
		s.Close()
		select {
		case <-unregistered:
		default:
			t.Fatalf("round %d: Close returned before the trunk un-registered", i)
		}
		cancel()
		m.Wait()
		silent.Close()
	}
}
