package logs

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a CA and a server certificate for localhost / 127.0.0.1.
type testCA struct {
	caPEM, certPEM, keyPEM string
	pair                   tls.Certificate
}

func newTestCA(t testing.TB) testCA {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test syslog CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	c := testCA{
		caPEM:   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})),
		certPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		keyPEM:  string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})),
	}
	if c.pair, err = tls.X509KeyPair([]byte(c.certPEM), []byte(c.keyPEM)); err != nil {
		t.Fatal(err)
	}
	return c
}

// msg5424 is one strictly parsed RFC 5424 message.
type msg5424 struct {
	pri                            int
	ts                             time.Time
	host, app, procid, msgid, sdID string
	params                         map[string]string
	msg                            string
}

func token(s string) (string, string, error) {
	i := strings.IndexByte(s, ' ')
	if i <= 0 {
		return "", "", fmt.Errorf("missing field in %q", s)
	}
	for _, c := range []byte(s[:i]) {
		if c < 33 || c > 126 {
			return "", "", fmt.Errorf("non-printable header byte %#x", c)
		}
	}
	return s[:i], s[i+1:], nil
}

// parse5424 accepts exactly one SD element (what the sender writes).
func parse5424(s string) (msg5424, error) {
	var m msg5424
	if !strings.HasPrefix(s, "<") {
		return m, errors.New("no PRI")
	}
	end := strings.Index(s, ">1 ")
	if end < 2 || end > 4 {
		return m, fmt.Errorf("bad PRI/VERSION in %q", s)
	}
	pri, err := strconv.Atoi(s[1:end])
	if err != nil || pri > 191 || (len(s[1:end]) > 1 && s[1] == '0') {
		return m, fmt.Errorf("bad PRI %q", s[1:end])
	}
	m.pri, s = pri, s[end+3:]
	var ts string
	if ts, s, err = token(s); err != nil {
		return m, err
	}
	if m.ts, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return m, err
	}
	if m.host, s, err = token(s); err != nil {
		return m, err
	}
	if m.app, s, err = token(s); err != nil {
		return m, err
	}
	if m.procid, s, err = token(s); err != nil {
		return m, err
	}
	if m.msgid, s, err = token(s); err != nil {
		return m, err
	}
	if len(m.host) > 255 || len(m.app) > 48 || len(m.procid) > 128 || len(m.msgid) > 32 {
		return m, errors.New("header field too long")
	}
	if !strings.HasPrefix(s, "[") {
		return m, fmt.Errorf("no SD in %q", s)
	}
	s = s[1:]
	i := strings.IndexAny(s, " ]")
	if i <= 0 {
		return m, errors.New("bad SD-ID")
	}
	m.sdID, s = s[:i], s[i:]
	m.params = map[string]string{}
	for strings.HasPrefix(s, " ") {
		s = s[1:]
		eq := strings.Index(s, "=\"")
		if eq <= 0 {
			return m, fmt.Errorf("bad SD-PARAM at %q", s)
		}
		name := s[:eq]
		s = s[eq+2:]
		var v strings.Builder
		for {
			if s == "" {
				return m, errors.New("unterminated PARAM-VALUE")
			}
			c := s[0]
			if c == '"' {
				s = s[1:]
				break
			}
			if c == ']' {
				return m, errors.New("unescaped ] in PARAM-VALUE")
			}
			if c == '\\' && len(s) > 1 && strings.IndexByte(`"\]`, s[1]) >= 0 {
				v.WriteByte(s[1])
				s = s[2:]
				continue
			}
			v.WriteByte(c)
			s = s[1:]
		}
		if _, dup := m.params[name]; dup {
			return m, fmt.Errorf("duplicate param %s", name)
		}
		m.params[name] = v.String()
	}
	if !strings.HasPrefix(s, "] ") {
		return m, fmt.Errorf("SD not closed: %q", s)
	}
	m.msg = s[2:]
	if strings.ContainsAny(m.msg, "\r\n\x00") {
		return m, errors.New("control character in MSG")
	}
	return m, nil
}

// readFrames reads RFC 5425 octet-counted frames strictly: MSG-LEN is
// NONZERO-DIGIT *DIGIT, one space, then exactly that many octets.
func readFrames(r io.Reader, out chan<- string, errs chan<- error) {
	br := bufio.NewReader(r)
	for {
		ls, err := br.ReadString(' ')
		if err != nil {
			if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				errs <- err
			} else if ls != "" {
				errs <- fmt.Errorf("partial frame header %q", ls)
			}
			return
		}
		ls = ls[:len(ls)-1]
		n, err := strconv.Atoi(ls)
		if err != nil || ls[0] == '0' || len(ls) > 5 || n > maxMessage {
			errs <- fmt.Errorf("bad MSG-LEN %q", ls)
			return
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			errs <- fmt.Errorf("short frame: %w", err)
			return
		}
		out <- string(b)
	}
}

// collector is a Go syslog listener (TLS, TCP or UDP) for the parts the
// rsyslog test does not cover (framing byte by byte, outages, stalls).
type collector struct {
	addr  string
	msgs  chan string
	errs  chan error
	close func()
}

func startCollector(t testing.TB, transport, addr string, cert *tls.Certificate, read bool) *collector {
	t.Helper()
	c := &collector{msgs: make(chan string, 100000), errs: make(chan error, 16)}
	if transport == TransportUDP {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.addr, c.close = pc.LocalAddr().String(), func() { pc.Close() }
		go func() {
			b := make([]byte, 65536)
			for {
				n, _, err := pc.ReadFrom(b)
				if err != nil {
					return
				}
				c.msgs <- string(b[:n])
			}
		}()
		t.Cleanup(c.close)
		return c
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if cert != nil {
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12})
	}
	var mu sync.Mutex
	var conns []net.Conn
	c.addr = ln.Addr().String()
	c.close = func() {
		ln.Close()
		mu.Lock()
		for _, cn := range conns {
			cn.Close()
		}
		mu.Unlock()
	}
	go func() {
		for {
			cn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, cn)
			mu.Unlock()
			if read {
				go readFrames(cn, c.msgs, c.errs)
			}
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *collector) next(t *testing.T) msg5424 {
	t.Helper()
	select {
	case s := <-c.msgs:
		m, err := parse5424(s)
		if err != nil {
			t.Fatalf("collector got an invalid RFC 5424 message %q: %v", s, err)
		}
		return m
	case err := <-c.errs:
		t.Fatalf("collector: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("collector: no message within 20 s")
	}
	return msg5424{}
}

func runSender(t *testing.T, cfg SenderConfig, set SyslogSettings) *Sender {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	}
	s := NewSender(cfg)
	if err := s.Apply(set); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

// hostile fields: framing, SD and line breakers in attacker-controlled text.
var hostileUA = "friendly\"] [evil@1 x=\"y\"]\\\n<13>1 forged line\x00\xff"

func TestSyslogDeliveryPerTransport(t *testing.T) {
	ca := newTestCA(t)
	for _, tr := range []string{TransportTLS, TransportTCP, TransportUDP} {
		t.Run(tr, func(t *testing.T) {
			var cert *tls.Certificate
			if tr == TransportTLS {
				cert = &ca.pair
			}
			col := startCollector(t, tr, "127.0.0.1:0", cert, true)
			set := SyslogSettings{Enabled: true, Address: col.addr, Transport: tr, Facility: FacilityAuto}
			if tr == TransportTLS {
				set.CAPEM = ca.caPEM
			}
			s := runSender(t, SenderConfig{Hostname: "SN 0042"}, set)
			log, _ := New(nil, 16)
			log.Forward(s.Event)
			log.Record(Event{Kind: KindAuthFailure, Source: "192.0.2.7:5060", Transport: "UDP", User: "100", UserAgent: hostileUA, Reason: "wrong password"})
			s.Audit(AuditRecord{Seq: 9, Time: time.Unix(1e9, 0), Actor: "alice", Source: "192.0.2.9", Action: "account.create", Target: "bob", Outcome: "denied", Hash: "abcd"})

			m := col.next(t)
			if m.pri != facAuthpriv*8+sevWarning || m.host != "SN_0042" || m.app != AppName || m.msgid != "sip.auth_failure" || m.sdID != sdEvent {
				t.Errorf("header: %+v", m)
			}
			want := map[string]string{"kind": "sip.auth_failure", "seq": "1", "source": "192.0.2.7:5060", "transport": "UDP", "user": "100",
				"user_agent": "friendly\"] [evil@1 x=\"y\"]\\\ufffd<13>1 forged line\ufffd\ufffd", "reason": "wrong password"}
			if fmt.Sprint(m.params) != fmt.Sprint(want) {
				t.Errorf("params\n got %q\nwant %q", m.params, want)
			}
			a := col.next(t)
			if a.pri != facAudit*8+sevWarning || a.msgid != "audit" || a.sdID != sdAudit || a.params["actor"] != "alice" ||
				a.params["hash"] != "abcd" || a.params["seq"] != "9" || !a.ts.Equal(time.Unix(1e9, 0)) {
				t.Errorf("audit message: %+v", a)
			}
			waitSent(s, 2) // counted once Write returned, maybe after the collector read it
			if st := s.Status(); st.Sent != 2 || st.Dropped != 0 {
				t.Errorf("status %+v", st)
			}
		})
	}
}

func TestSyslogTLSVerification(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	col := startCollector(t, TransportTLS, "127.0.0.1:0", &ca.pair, true)
	_, port, _ := net.SplitHostPort(col.addr)
	cases := []struct {
		name string
		set  SyslogSettings
		ok   bool
	}{
		{"right CA", SyslogSettings{Address: col.addr, Transport: TransportTLS, Facility: FacilityAuto, CAPEM: ca.caPEM}, true},
		{"name in certificate", SyslogSettings{Address: "localhost:" + port, Transport: TransportTLS, Facility: FacilityAuto, CAPEM: ca.caPEM}, true},
		{"wrong CA", SyslogSettings{Address: col.addr, Transport: TransportTLS, Facility: FacilityAuto, CAPEM: other.caPEM}, false},
		{"system roots", SyslogSettings{Address: col.addr, Transport: TransportTLS, Facility: FacilityAuto}, false},
	}
	s := NewSender(SenderConfig{Hostname: "box"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := s.Test(context.Background(), c.set)
			if c.ok != (err == nil) {
				t.Fatalf("Test: %v, want ok=%v", err, c.ok)
			}
			if c.ok {
				if m := col.next(t); m.msgid != "test" {
					t.Errorf("test message %+v", m)
				}
				return
			}
			var uerr x509.UnknownAuthorityError
			if !errors.As(err, &uerr) {
				t.Errorf("want an unknown-authority error, got %v", err)
			}
		})
	}
	// The running sender refuses the wrong CA too and delivers nothing.
	set := cases[2].set
	set.Enabled = true
	r := runSender(t, SenderConfig{Hostname: "box"}, set)
	r.Event(Event{Kind: KindBan, Source: "192.0.2.1"})
	for r.Status().LastError == "" {
		time.Sleep(5 * time.Millisecond)
	}
	if st := r.Status(); st.Sent != 0 || st.Connected || !strings.Contains(st.LastError, "certificate") {
		t.Errorf("status with a wrong CA: %+v", st)
	}
	select {
	case m := <-col.msgs:
		t.Errorf("collector got %q over an unverified connection", m)
	default:
	}
}

// waitSent waits for the sender to count n messages sent (the test's
// deadline bounds it).
func waitSent(s *Sender, n uint64) {
	for s.Status().Sent < n {
		time.Sleep(2 * time.Millisecond)
	}
}

// freeAddr returns a loopback TCP address nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestSyslogQueueBoundAndReconnect(t *testing.T) {
	ca := newTestCA(t)
	addr := freeAddr(t)
	const queue, total = 8, 20
	s := runSender(t, SenderConfig{Hostname: "box", QueueSize: queue, ConfirmAfter: 10 * time.Millisecond},
		SyslogSettings{Enabled: true, Address: addr, Transport: TransportTLS, Facility: "local3", CAPEM: ca.caPEM})
	for i := 1; i <= total; i++ {
		s.Event(Event{Kind: KindScanner, Seq: uint64(i)})
	}
	if st := s.Status(); st.Queued != queue || st.Dropped != total-queue || st.Sent != 0 || st.Connected {
		t.Fatalf("collector down: %+v", st)
	}
	for s.Status().LastError == "" {
		time.Sleep(5 * time.Millisecond)
	}
	col := startCollector(t, TransportTLS, addr, &ca.pair, true)
	for i := total - queue + 1; i <= total; i++ {
		m := col.next(t)
		if m.params["seq"] != strconv.Itoa(i) || m.pri != 19*8+sevNotice {
			t.Fatalf("after reconnect got %+v, want seq %d (the newest kept)", m, i)
		}
	}
	waitSent(s, queue)
	if st := s.Status(); st.Sent != queue || st.Dropped != total-queue || !st.Connected {
		t.Errorf("after reconnect: %+v", st)
	}
	// The collector goes away and comes back: the sender follows. What
	// was not confirmed yet would be sent again (at least once): wait for
	// the confirmation so the next collector gets only the new message.
	for s.Status().Queued != 0 {
		time.Sleep(5 * time.Millisecond)
	}
	col.close()
	for !strings.Contains(s.Status().LastError, "closed the connection") {
		time.Sleep(5 * time.Millisecond)
	}
	col2 := startCollector(t, TransportTLS, addr, &ca.pair, true)
	s.Event(Event{Kind: KindBan, Seq: 99})
	if m := col2.next(t); m.params["seq"] != "99" {
		t.Errorf("after the second outage got %+v", m)
	}
}

func TestSyslogStalledCollectorNeverBlocksProducer(t *testing.T) {
	// Accepts and never reads: the socket buffers fill, the sender's
	// write blocks; Record must still return at once for every event.
	col := startCollector(t, TransportTCP, "127.0.0.1:0", nil, false)
	s := runSender(t, SenderConfig{Hostname: "box", QueueSize: 256, WriteTimeout: time.Minute},
		SyslogSettings{Enabled: true, Address: col.addr, Transport: TransportTCP, Facility: FacilityAuto})
	log, _ := New(nil, 64)
	log.Forward(s.Event)
	const total = 300000
	ua := strings.Repeat("u", 128)
	for i := 0; i < total; i++ {
		log.Record(Event{Kind: KindFlood, Source: "198.51.100.1:5060", UserAgent: ua, Reason: "rate"})
	}
	st := s.Status()
	if st.Dropped == 0 || st.Queued != 256 || !st.Connected {
		t.Fatalf("a stalled collector: %+v (want drops, a full queue, connected)", st)
	}
	// Settings applied meanwhile take effect at once (the stuck write ends).
	if err := s.Apply(SyslogSettings{Transport: TransportTLS, Facility: FacilityAuto}); err != nil {
		t.Fatal(err)
	}
	for s.Status().Connected {
		time.Sleep(5 * time.Millisecond)
	}
	if st := s.Status(); st.Queued != 0 || st.Enabled {
		t.Errorf("disabled: %+v", st)
	}
}

func TestSyslogOffCostsNothing(t *testing.T) {
	s := NewSender(SenderConfig{})
	s.Event(Event{Kind: KindBan})
	if st := s.Status(); st.Queued != 0 || st.Enabled {
		t.Errorf("off sender queued: %+v", st)
	}
}

func TestSeverityOf(t *testing.T) {
	cases := map[Kind]int{
		KindRegister: sevInfo, KindAuthFailure: sevWarning, KindBan: sevWarning, KindScanner: sevNotice,
		KindTrunkRegFail: sevWarning, "dialplan.suspended": sevCrit, "dialplan.burst": sevErr,
		"dialplan.blocked": sevWarning, "call.replace_denied": sevWarning, "certs.acme_failed": sevErr,
		"certs.acme_issued": sevNotice,
	}
	for k, want := range cases {
		if got := severityOf(k); got != want {
			t.Errorf("severityOf(%s) = %d, want %d", k, got, want)
		}
	}
}

// BenchmarkSenderEvent is the producer's cost (SIP hot path) with the
// sender on and its queue full (worst case: drop-oldest every time).
func BenchmarkSenderEvent(b *testing.B) {
	s := NewSender(SenderConfig{QueueSize: 1024})
	s.on.Store(true)
	e := Event{Kind: KindAuthFailure, Source: "192.0.2.7:5060", Transport: "UDP", User: "100", UserAgent: "friendly-scanner", Reason: "wrong password"}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.Event(e)
		}
	})
}

// BenchmarkSenderTLS is end-to-end throughput over TLS to a collector that
// reads and parses every frame: ns/op is per delivered message.
func BenchmarkSenderTLS(b *testing.B) {
	ca := newTestCA(b)
	col := startCollector(b, TransportTLS, "127.0.0.1:0", &ca.pair, true)
	go func() {
		for range col.msgs {
		}
	}()
	// Confirmed 1 ms after the TCP acknowledgement: the queue (which
	// counts unconfirmed messages) stays below the drop point.
	s := NewSender(SenderConfig{Hostname: "box", QueueSize: 1 << 16, ConfirmAfter: time.Millisecond})
	if err := s.Apply(SyslogSettings{Enabled: true, Address: col.addr, Transport: TransportTLS, Facility: FacilityAuto, CAPEM: ca.caPEM}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	e := Event{Kind: KindAuthFailure, Source: "192.0.2.7:5060", Transport: "UDP", User: "100", UserAgent: "friendly-scanner", Reason: "wrong password"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for s.Status().Queued > 1<<15 {
			time.Sleep(100 * time.Microsecond) // stay below the drop point
		}
		s.Event(e)
	}
	for s.Status().Sent < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if st := s.Status(); st.Dropped != 0 {
		b.Fatalf("dropped %d", st.Dropped)
	}
}

// TestSyslogCollectorDiesWithUnreadBytes: the collector's TCP
// acknowledged our bytes but its process never read them before it went
// away. RFC 5425 gives no acknowledgement, so the sender keeps the batch
// until the connection has stayed up ConfirmAfter after the TCP
// acknowledgement; here it did not, and the next collector gets it all.
func TestSyslogCollectorDiesWithUnreadBytes(t *testing.T) {
	for _, tr := range []string{TransportTCP, TransportTLS} {
		t.Run(tr, func(t *testing.T) {
			ca := newTestCA(t)
			var cert *tls.Certificate
			set := SyslogSettings{Enabled: true, Transport: tr, Facility: FacilityAuto}
			if tr == TransportTLS {
				cert, set.CAPEM = &ca.pair, ca.caPEM
			}
			// Accepts (and completes TLS), then never reads.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			accepted := make(chan net.Conn, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				if cert != nil {
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
					if err := tc.Handshake(); err != nil {
						t.Logf("deaf collector: %v", err)
						c.Close()
						return
					}
				}
				accepted <- c
			}()
			set.Address = ln.Addr().String()
			s := runSender(t, SenderConfig{Hostname: "box", ConfirmAfter: time.Hour}, set)
			for i := 1; i <= 20; i++ {
				s.Event(Event{Kind: KindScanner, Seq: uint64(i)})
			}
			waitSent(s, 20) // written into the collector's socket
			ln.Close()
			(<-accepted).Close() // unread bytes: the kernel resets the connection
			col := startCollector(t, tr, set.Address, cert, true)
			for i := 1; i <= 20; i++ {
				if m := col.next(t); m.params["seq"] != strconv.Itoa(i) {
					t.Fatalf("got %+v, want seq %d", m, i)
				}
			}
		})
	}
}
