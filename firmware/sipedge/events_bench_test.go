package sipedge

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/presence"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo/sip"
)

type seeAll struct{}

func (seeAll) MaySee(string, string) bool { return true }

// benchEvents is an edge with the event server tuned for load: every
// extension sees every other, the loopback source is allowlisted (the
// flood guard would otherwise take 2,000 SUBSCRIBEs from one address for
// an attack), and the NOTIFY rate is not limited (capacity is measured).
func benchEvents(b *testing.B) *eventsServer {
	return startEvents(b, func(c *pbxconfig.SIP) {
		c.Allowlist = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}, func(c *presence.Config) {
		c.Visibility, c.MaxPerSubscriber = seeAll{}, 5000
		c.NotifyRate, c.NotifyBurst = 1_000_000, 1_000_000
	})
}

// subscribeMany makes n dialog subscriptions of p, spread over targets
// (event ids tell a target's subscriptions apart), with one digest
// challenge: later requests reuse the nonce with a rising nc, as phones
// do. NOTIFYs that arrive meanwhile are answered 200.
func (p *subPhone) subscribeMany(b *testing.B, n int, target func(i int) string) {
	b.Helper()
	nonce := ""
	for i := 0; i < n; i++ {
		tg, ev := target(i), "dialog;id="+strconv.Itoa(i)
		p.tag, p.callID = randHex(4), randHex(8)
		for try := 0; ; try++ {
			auth := ""
			if nonce != "" {
				p.nc++
				nc := fmt.Sprintf("%08x", p.nc)
				uri := "sip:" + tg + "@" + p.srv.IP.String()
				ha1 := HA1(AlgMD5, p.user, "edgepbx", p.pass)
				c := Credentials{Username: p.user, Realm: "edgepbx", Nonce: nonce, URI: uri, NC: nc, CNonce: "b1", QOP: "auth"}
				auth = fmt.Sprintf(`Digest username="%s", realm="edgepbx", nonce="%s", uri="%s", response="%s", algorithm=MD5, cnonce="b1", qop=auth, nc=%s`,
					p.user, nonce, uri, digestResponse(AlgMD5, ha1, "SUBSCRIBE", c), nc)
			}
			p.raw.Send(p.build(tg, ev, "3600", "", auth))
			r := p.answerNotifiesUntilResponse()
			if r.StatusCode == 200 {
				break
			}
			if r.StatusCode != 401 || try > 2 {
				b.Fatalf("subscription %d: %s", i, r.StartLine())
			}
			nonce, p.nc = challengeOf(b, r, AlgMD5), 0
		}
	}
}

// benchPhone is a subPhone on a UDP socket with a large receive buffer
// (a burst of 250 NOTIFYs overflows the default one, and every drop then
// costs a 500 ms retransmission: the figure would be the test's buffer).
type benchPhone struct {
	*subPhone
	conn *net.UDPConn
}

func newBenchPhone(b *testing.B, s *testServer, user string) benchPhone {
	b.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.SetReadBuffer(8 << 20); err != nil {
		b.Fatal(err)
	}
	raw := siptest.RawUDP(b, c, s.udp.AddrPort())
	return benchPhone{subPhone: &subPhone{t: b, raw: raw, srv: s.udp, user: user, pass: testPassword, local: raw.Local()}, conn: c}
}

// farm answers every NOTIFY arriving at the phones with 200, copying the
// transaction's headers from the raw bytes (no parser, no allocation per
// message: the farm shares the two cores with the box under test).
func farm(b *testing.B, phones []benchPhone, edge netip.AddrPort) (answered *atomic.Uint64, stop func()) {
	answered = new(atomic.Uint64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	hdrs := [][]byte{[]byte("Via:"), []byte("From:"), []byte("To:"), []byte("Call-ID:"), []byte("CSeq:")}
	for _, p := range phones {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 65535)
			var res bytes.Buffer
			for {
				select {
				case <-done:
					return
				default:
				}
				_ = p.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				n, _, err := p.conn.ReadFromUDPAddrPort(buf)
				if err != nil || !bytes.HasPrefix(buf[:n], []byte("NOTIFY ")) {
					continue
				}
				res.Reset()
				res.WriteString("SIP/2.0 200 OK\r\n")
				msg := buf[:n]
				for len(msg) > 0 {
					i := bytes.Index(msg, []byte("\r\n"))
					if i <= 0 {
						break
					}
					line := msg[:i]
					msg = msg[i+2:]
					for _, h := range hdrs {
						if bytes.HasPrefix(line, h) {
							res.Write(line)
							res.WriteString("\r\n")
						}
					}
				}
				res.WriteString("Content-Length: 0\r\n\r\n")
				_, _ = p.conn.WriteToUDPAddrPort(res.Bytes(), edge)
				answered.Add(1)
			}
		}()
	}
	return answered, func() { close(done); wg.Wait() }
}

// BenchmarkBLFNotify: 1,000 busy-lamp subscriptions (4 phones, 250 keys
// each, over 100 watched extensions: 10 watchers per extension). Each op
// moves every watched extension's call one state on (early, confirmed,
// terminated, a new call, ...) and waits until every NOTIFY it caused was
// answered: 1,000 NOTIFY transactions per op over UDP through the edge's
// flows, answered by real sockets. Run it long (-benchtime 20s) for the
// sustained rate.
func BenchmarkBLFNotify(b *testing.B) {
	es := benchEvents(b)
	var phones []benchPhone
	for _, u := range []string{"101", "102", "103", "104"} {
		p := newBenchPhone(b, es.testServer, u)
		p.subscribeMany(b, 250, func(i int) string { return strconv.Itoa(3000 + i%100) })
		phones = append(phones, p)
	}
	if es.ev.Len() != 1000 {
		b.Fatalf("%d subscriptions", es.ev.Len())
	}
	answered, stop := farm(b, phones, es.udp.AddrPort())
	defer stop()
	waitLong(b, "the initial NOTIFYs", func() bool { return es.ev.Backlog() == 0 })
	n0, a0 := es.ev.Counters().Notifies, answered.Load()
	c0 := selfCPU(b)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		st := call.DialogState(i%3) + call.DialogEarly
		for t := 0; t < 100; t++ {
			es.ev.DialogChanged(call.DialogEvent{Entity: strconv.Itoa(3000 + t), ID: fmt.Sprintf("c%d-%d", t, i/3),
				State: st, Direction: call.Recipient, Remote: call.Party{Extension: "101"}})
		}
		for es.ev.Backlog() != 0 {
			time.Sleep(100 * time.Microsecond) // not a spin: the box needs the cores
		}
	}
	took := time.Since(start)
	b.StopTimer()
	sent := es.ev.Counters().Notifies - n0
	b.ReportMetric(float64(sent)/took.Seconds(), "notifies/s")
	b.ReportMetric(float64(sent)/float64(b.N), "notifies/op")
	b.ReportMetric(float64((selfCPU(b)-c0).Microseconds())/float64(sent), "cpu-us/notify")
	if f := es.ev.Counters().NotifyFailed; f != 0 {
		b.Fatalf("%d NOTIFYs failed (answered %d)", f, answered.Load()-a0)
	}
}

// BenchmarkSubscriptionMemory: heap per live subscription, made over TCP
// (reliable transports end the server transaction at once, so the
// figure is the subscription, not sipgo's 32 s UDP transaction linger).
func BenchmarkSubscriptionMemory(b *testing.B) {
	const n = 4000
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		es := benchEvents(b)
		raw := siptest.NewRaw(b, "TCP", netip.MustParseAddr("127.0.0.1"), netip.MustParseAddrPort(es.Addr("tcp").String()))
		p := &subPhone{t: b, raw: raw, srv: es.udp, user: "101", pass: testPassword, local: raw.Local(), transport: "TCP"}
		p.subscribeMany(b, 10, func(i int) string { return strconv.Itoa(4000 + i) }) // warm-up: maps, pools
		p.drain(b, es.ev)
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		b.StartTimer()
		p.subscribeMany(b, n, func(i int) string { return strconv.Itoa(3000 + i%100) })
		b.StopTimer()
		p.drain(b, es.ev)
		runtime.GC()
		runtime.ReadMemStats(&m1)
		if es.ev.Len() != n+10 {
			b.Fatalf("%d subscriptions", es.ev.Len())
		}
		b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/n, "heap-B/sub")
	}
}

// drain answers the NOTIFYs still coming until none is outstanding.
func (p *subPhone) drain(b *testing.B, ev *presence.Server) {
	b.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for ev.Backlog() != 0 {
		if time.Now().After(deadline) {
			b.Fatalf("%d NOTIFYs outstanding", ev.Backlog())
		}
		msg, _, err := p.raw.Read(50 * time.Millisecond)
		if err != nil || !bytes.HasPrefix(msg, []byte("NOTIFY ")) {
			continue
		}
		m, err := sip.ParseMessage(msg)
		if err != nil {
			b.Fatal(err)
		}
		p.raw.Send(sip.NewResponseFromRequest(m.(*sip.Request), 200, "OK", nil).String())
	}
}
