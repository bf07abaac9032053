package siptest

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// Registered is one REGISTER the Registrar accepted or refused.
type Registered struct {
	User     string
	Password string // the password that matched; "" refused (403)
	Expires  int
	CallID   string
	CSeq     uint32
	Contact  string
	Source   string // host:port the REGISTER came from
	SentBy   string // host:port of its top Via
}

// Registrar is an ITSP's registrar on loopback (a sipgo UAS): it challenges
// with digest MD5 and qop=auth, checks the answer against each user's
// accepted passwords (icholy/digest parses it: independent of the box's
// own digest code), grants at most 300 s, and reports every REGISTER it
// judged on Got.
type Registrar struct {
	Addr  string // host:port (UDP)
	Realm string
	Got   chan Registered
}

// StartRegistrar listens on 127.0.0.1 until the test ends.
func StartRegistrar(tb testing.TB, realm string, passwords map[string][]string) *Registrar {
	tb.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-itsp"))
	if err != nil {
		tb.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &Registrar{Addr: conn.LocalAddr().String(), Realm: realm, Got: make(chan Registered, 64)}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		h := req.GetHeader("Authorization")
		if h == nil {
			var n [8]byte
			_, _ = rand.Read(n[:])
			res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
			res.AppendHeader(sip.NewHeader("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%x", algorithm=MD5, qop="auth"`, realm, n)))
			_ = tx.Respond(res)
			return
		}
		ev := Registered{User: req.From().Address.User, CallID: req.CallID().Value(), CSeq: req.CSeq().SeqNo, Source: req.Source()}
		if v := req.Via(); v != nil {
			ev.SentBy = net.JoinHostPort(v.Host, strconv.Itoa(v.Port))
		}
		if e := req.GetHeader("Expires"); e != nil {
			ev.Expires, _ = strconv.Atoi(e.Value())
		}
		if c := req.GetHeader("Contact"); c != nil {
			ev.Contact = c.Value()
		}
		if c, err := digest.ParseCredentials(h.Value()); err == nil && c.Username == ev.User {
			ha2 := md5hex("REGISTER:" + c.URI)
			for _, pw := range passwords[ev.User] {
				ha1 := md5hex(ev.User + ":" + realm + ":" + pw)
				if md5hex(ha1+":"+c.Nonce+":"+fmt.Sprintf("%08x", c.Nc)+":"+c.Cnonce+":"+c.QOP+":"+ha2) == c.Response {
					ev.Password = pw
				}
			}
		}
		r.Got <- ev
		if ev.Password == "" {
			_ = tx.Respond(sip.NewResponseFromRequest(req, 403, "Forbidden", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(min(ev.Expires, 300))))
		_ = tx.Respond(res)
	})
	go func() { _ = srv.ServeUDP(conn) }()
	tb.Cleanup(func() { _ = conn.Close(); _ = ua.Close() })
	return r
}

// Next waits for the next REGISTER the registrar judged; context is added
// to the failure (e.g. the daemon's output).
func (r *Registrar) Next(tb testing.TB, context func() string) Registered {
	tb.Helper()
	select {
	case ev := <-r.Got:
		return ev
	case <-time.After(60 * time.Second): // a hang, not a performance bound
		msg := ""
		if context != nil {
			msg = context()
		}
		tb.Fatalf("no REGISTER reached the registrar\n%s", msg)
		return Registered{}
	}
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}
