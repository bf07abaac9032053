package call

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// pinholeLog is a real implementation of media.Pinholes that records what
// the firewall would do, and how many calls were up at each step.
type pinholeLog struct {
	active func() int

	mu       sync.Mutex
	open     map[netfw.Pinhole]bool
	opens    int
	outside  int // opens or closes while no call was in progress
	maxOpen  int
	closeErr int
	remotes  map[netip.Addr]bool // every address a pinhole was ever opened to
}

func (p *pinholeLog) OpenPinhole(_ context.Context, h netfw.Pinhole) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	h.Timeout = 0
	p.open[h] = true
	if p.remotes == nil {
		p.remotes = map[netip.Addr]bool{}
	}
	p.remotes[h.Remote] = true
	p.opens++
	p.maxOpen = max(p.maxOpen, len(p.open))
	if p.active() == 0 {
		p.outside++
	}
	return nil
}

func (p *pinholeLog) ClosePinhole(_ context.Context, h netfw.Pinhole) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	h.Timeout = 0
	if !p.open[h] {
		p.closeErr++
	}
	delete(p.open, h)
	if p.active() == 0 {
		p.outside++
	}
	return nil
}

func (p *pinholeLog) state() (open, opens, outside, maxOpen, closeErr int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.open), p.opens, p.outside, p.maxOpen, p.closeErr
}

// directory is the routing the SIP edge does with its location service:
// extensions and trunks at fixed loopback addresses.
type directory struct {
	mu     sync.Mutex
	exts   map[string]string   // extension -> host:port
	multi  map[string][]string // extension -> several contacts (forking)
	trunks map[string]string
	creds  map[string][2]string // trunk -> user, password
	policy map[Identity]media.Policy
	shown  map[string]string // extension -> outbound caller ID
	assert map[string]bool   // trunk -> trusted with P-Asserted-Identity
}

func (d *directory) OutboundCallerID(ext, trunk string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.shown[ext], d.assert[trunk]
}

func (d *directory) Contacts(ext string) []Target {
	d.mu.Lock()
	defer d.mu.Unlock()
	hps := d.multi[ext]
	if hp, ok := d.exts[ext]; ok {
		hps = []string{hp}
	}
	var ts []Target
	for _, hp := range hps {
		t, err := TargetFromBinding("<sip:"+ext+"@"+hp+">", hp, "udp")
		if err != nil {
			return nil
		}
		ts = append(ts, t)
	}
	return ts
}

func (d *directory) setContacts(ext string, hps ...string) {
	d.mu.Lock()
	d.multi[ext] = hps
	d.mu.Unlock()
}

func (d *directory) Trunk(name string) (Target, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	hp, ok := d.trunks[name]
	if !ok {
		return Target{}, false
	}
	t, err := TargetFromBinding("sip:"+hp, hp, "udp")
	return t, err == nil
}

func (d *directory) Policy(id Identity) media.Policy {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.policy[id]; ok {
		return p
	}
	return media.SRTPOptional
}

func (d *directory) Credentials(trunk string) (string, string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.creds[trunk]
	return c[0], c[1], ok
}

func (d *directory) setCreds(trunk, user, pass string) {
	d.mu.Lock()
	d.creds[trunk] = [2]string{user, pass}
	d.mu.Unlock()
}

func (d *directory) setTrunk(name, hp string) {
	d.mu.Lock()
	d.trunks[name] = hp
	d.mu.Unlock()
}

func (d *directory) set(ext, hp string) {
	d.mu.Lock()
	d.exts[ext] = hp
	d.mu.Unlock()
}

type ended struct {
	rec cdr.Record
	st  media.Stats
}

// harness is a sipgo server on loopback doing what the SIP edge will do:
// identify the caller (here: the From user is the extension, as if digest
// auth had passed) and dispatch to the B2BUA.
type harness struct {
	b     *B2BUA
	addr  string
	dir   *directory
	pins  *pinholeLog
	cdrs  *cdr.Store
	ended chan ended
}

// noStateLeft fails unless every call and dialog of the B2BUA is gone and,
// with pins, every pinhole is closed again.
func (h *harness) noStateLeft(t testing.TB, pins bool) {
	t.Helper()
	if h.b.Active() != 0 || h.b.dialogCount() != 0 {
		t.Fatalf("state left: %d calls, %d dialogs", h.b.Active(), h.b.dialogCount())
	}
	if !pins {
		return
	}
	if open, _, _, _, _ := h.pins.state(); open != 0 {
		t.Fatalf("%d pinholes left open", open)
	}
}

type harnessOpt func(*Config, *dialplan.Plan)

func startHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	return startHarnessMedia(t, nil, opts...)
}

// startHarnessMedia is startHarness with tune applied to the relay's
// configuration (e.g. a short DTLS handshake timeout).
func startHarnessMedia(t testing.TB, tune func(*media.Config), opts ...harnessOpt) *harness {
	t.Helper()
	return startHarnessEnv(t, harnessEnv{}, tune, opts...)
}

// harnessEnv places the harness elsewhere than on loopback with every
// caller an extension (zero value: that).
type harnessEnv struct {
	listen    func() (net.PacketConn, error) // the SIP socket (default 127.0.0.1:0)
	mediaAddr netip.Addr                     // the relay's address (default 127.0.0.1)
	// identify is the edge's decision on a new INVITE (default: the From
	// user is the extension, as if digest auth had passed).
	identify func(*sip.Request) Identity
}

func startHarnessEnv(t testing.TB, env harnessEnv, tune func(*media.Config), opts ...harnessOpt) *harness {
	t.Helper()
	if env.listen == nil {
		env.listen = func() (net.PacketConn, error) { return net.ListenPacket("udp", "127.0.0.1:0") }
	}
	if !env.mediaAddr.IsValid() {
		env.mediaAddr = netip.MustParseAddr("127.0.0.1")
	}
	if env.identify == nil {
		env.identify = func(req *sip.Request) Identity { return Identity{Extension: req.From().Address.User} }
	}
	db := storetest.Open(t, nil)

	h := &harness{dir: &directory{exts: map[string]string{}, multi: map[string][]string{}, shown: map[string]string{}, assert: map[string]bool{}, trunks: map[string]string{}, creds: map[string][2]string{}, policy: map[Identity]media.Policy{}}, cdrs: cdr.New(db), ended: make(chan ended, 100000)}
	h.pins = &pinholeLog{open: map[netfw.Pinhole]bool{}, active: func() int { return h.b.Active() }}
	ports, err := media.NewPorts(30000, 39999)
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := media.NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	mcfg := media.Config{Addr: env.mediaAddr, Ports: ports, Pinholes: h.pins, Certificate: &cert, Log: quiet}
	if tune != nil {
		tune(&mcfg)
	}
	relay, err := media.NewRelay(mcfg)
	if err != nil {
		t.Fatal(err)
	}
	plan := dialplan.Plan{
		Country: "DE",
		Trunks:  []dialplan.Trunk{{Name: "itsp", Limits: dialplan.Limits{MaxConcurrent: 1000, MaxPerHour: 10000}}},
		Extensions: []dialplan.Extension{
			{Number: "101", Limits: dialplan.Limits{MaxConcurrent: 1000, MaxPerHour: 10000}},
			{Number: "102"}, {Number: "103"},
		},
		Routes:        []dialplan.Route{{Prefix: "", Trunk: "itsp"}},
		BurstAttempts: 1000,
	}

	conn, err := env.listen()
	if err != nil {
		t.Fatal(err)
	}
	h.addr = conn.LocalAddr().String()
	// Stray provisional responses (a 180 processed after its 200) are
	// dropped quietly, as the edge should.
	ua, err := sipgo.NewUA(sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet),
		sip.WithTransactionLayerUnhandledResponseHandler(func(*sip.Response) {})),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(h.addr)
	var p int
	fmt.Sscan(port, &p)
	host, _, _ := net.SplitHostPort(h.addr)
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(host), sipgo.WithClientLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Client: client, Contact: h.addr, Relay: relay, Directory: h.dir, CDR: h.cdrs, MaxCalls: 1000, Log: quiet,
		Ended: func(r cdr.Record, st media.Stats) { h.ended <- ended{r, st} }}
	for _, o := range opts {
		o(&cfg, &plan)
	}
	eng, err := dialplan.New(plan, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Plan = eng
	if cfg.Apps != nil {
		// The feature-code table (firmware/features, which imports this
		// package) sits in front of the plan in the product; here *97
		// reaches the caller's mailbox the same way.
		cfg.Plan = appCodes{eng}
	}
	if h.b, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		h.b.OnInvite(req, tx, env.identify(req))
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { h.b.OnAck(req, tx) })
	srv.OnBye(h.b.OnBye)
	srv.OnCancel(h.b.OnCancel)
	srv.OnUpdate(h.b.OnUpdate)
	srv.OnRefer(h.b.OnRefer)
	srv.OnPrack(h.b.OnPrack)
	srv.OnInfo(h.b.OnInfo)
	go func() { _ = srv.ServeUDP(conn) }()
	t.Cleanup(func() {
		_ = h.b.Close()
		_ = ua.Close()
		_ = conn.Close()
	})
	return h
}

// sippUAS starts a sipp callee (built-in uas, RTP echo, or a scenario file)
// and returns its SIP address; it is killed at cleanup.
func sippUAS(t testing.TB, scenario string, extra ...string) string {
	t.Helper()
	addr, _ := sippUASRun(t, scenario, extra...)
	return addr
}

// sippUASRun is sippUAS that also reports how sipp exited (non-nil: a
// call failed its scenario); pass "-m", "N" so that it exits.
func sippUASRun(t testing.TB, scenario string, extra ...string) (string, <-chan error) {
	t.Helper()
	port := netnstest.FreePort(t, "udp")
	mport := netnstest.FreeMediaPorts(t, "127.0.0.1")
	args := []string{"-i", "127.0.0.1", "-p", fmt.Sprint(port), "-mi", "127.0.0.1", "-mp", fmt.Sprint(mport), "-nostdin"}
	if scenario == "" {
		args = append(args, "-sn", "uas")
	} else {
		sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", scenario))
		args = append(args, "-sf", sc)
	}
	args = append(args, extra...)
	cmd := exec.Command(siptest.NeedSipp(t), append(args, "-trace_err")...)
	cmd.Dir = t.TempDir()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(exited)
		err := cmd.Wait()
		if err != nil {
			logs, _ := filepath.Glob(filepath.Join(cmd.Dir, "*_errors.log"))
			var el []byte
			if len(logs) > 0 {
				el, _ = os.ReadFile(logs[0])
			}
			err = fmt.Errorf("sipp %s: %w\nerrors:\n%s", scenario, err, tail(el))
		}
		done <- err
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	// The box must not send before sipp listens: an INVITE refused with
	// ICMP port unreachable is not retransmitted to a socket bound later.
	for !udpBound(port) {
		select {
		case <-exited:
			t.Fatal("sipp callee exited before listening")
		case <-time.After(10 * time.Millisecond):
		}
	}
	return fmt.Sprintf("127.0.0.1:%d", port), done
}

// udpBound reports whether some process has a UDP socket bound to port
// (read from /proc/net/udp, without touching the port).
func udpBound(port int) bool {
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if strings.Contains(string(b), fmt.Sprintf(":%04X ", port)) {
			return true
		}
	}
	return false
}

// sippUAC runs a sipp caller to the harness and fails on any failed call.
func sippUAC(t testing.TB, scenario, service, addr string, calls, rate, limit int, extra ...string) time.Duration {
	t.Helper()
	dir := t.TempDir()
	sc, _ := filepath.Abs(filepath.Join("testdata", "sipp", scenario))
	port := netnstest.FreePort(t, "udp")
	args := []string{"-sf", sc, "-i", "127.0.0.1", "-p", fmt.Sprint(port), "-mi", "127.0.0.1", "-mp", fmt.Sprint(netnstest.FreeMediaPorts(t, "127.0.0.1")),
		"-s", service, "-m", fmt.Sprint(calls), "-r", fmt.Sprint(rate), "-l", fmt.Sprint(limit),
		"-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err"}
	args = append(args, extra...)
	args = append(args, addr)
	cmd := exec.Command(siptest.NeedSipp(t), args...)
	cmd.Dir = dir
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if err != nil {
		logs, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var el []byte
		if len(logs) > 0 {
			el, _ = os.ReadFile(logs[0])
		}
		t.Fatalf("sipp %s: %v\n%s\nerrors:\n%s", scenario, err, tail(out), tail(el))
	}
	return took
}

func tail(b []byte) []byte {
	if len(b) > 4000 {
		return b[len(b)-4000:]
	}
	return b
}

func waitEnded(t testing.TB, h *harness) ended {
	t.Helper()
	select {
	case e := <-h.ended:
		return e
	case <-time.After(40 * time.Second):
		t.Fatal("no call ended")
	}
	return ended{}
}

// TestSippCallWithMedia: sipp caller (G.711 pcap) → B2BUA → sipp callee
// with RTP echo. The call connects, RTP flows both ways through the
// relay, BYE tears down, pinholes are opened and closed only while the
// call is up, and the CDR is written.
func TestSippCallWithMedia(t *testing.T) {
	h := startHarness(t)
	h.dir.set("102", sippUAS(t, "", "-rtp_echo"))
	sippUAC(t, "uac_pcap.xml", "102", h.addr, 1, 1, 1, "-d", "3000")
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || e.rec.Cause != "caller BYE" || e.rec.To != "102" || e.rec.From != "101" {
		t.Fatalf("CDR %+v", e.rec)
	}
	if e.rec.Duration <= 0 || !strings.HasPrefix(e.rec.Codec, "PCMA") {
		t.Fatalf("CDR duration %v codec %q", e.rec.Duration, e.rec.Codec)
	}
	a, b := e.st.Legs[media.A], e.st.Legs[media.B]
	if a.Received < 50 || b.Received < 50 || a.Sent < 50 || b.Sent < 50 {
		t.Fatalf("media did not flow both ways through the relay: A %+v B %+v", a, b)
	}
	if a.DroppedSource+b.DroppedSource != 0 {
		t.Fatalf("packets from the negotiated peers dropped: A %+v B %+v", a, b)
	}
	open, opens, outside, maxOpen, closeErr := h.pins.state()
	if open != 0 || opens < 2 || outside != 0 || closeErr != 0 || maxOpen < 2 {
		t.Fatalf("pinholes: %d left open, %d opened, %d outside the call, max %d at once, %d bad closes", open, opens, outside, maxOpen, closeErr)
	}
	if h.b.Active() != 0 {
		t.Fatalf("%d calls still active", h.b.Active())
	}
	recs, err := h.cdrs.Range(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 0)
	if err != nil || len(recs) != 1 || recs[0].ID != e.rec.ID {
		t.Fatalf("stored CDRs %+v, %v", recs, err)
	}
	if h.b.dialogCount() != 0 {
		t.Fatalf("%d dialogs left", h.b.dialogCount())
	}
}

// TestSippEmergency: an extension whose class of service allows nothing
// external still reaches the emergency number over the trunk.
func TestSippEmergency(t *testing.T) {
	h := startHarness(t, func(_ *Config, p *dialplan.Plan) {
		p.Extensions[0].Classes = []dialplan.Class{dialplan.Internal}
	})
	h.dir.setTrunk("itsp", sippUAS(t, ""))
	sippUAC(t, "uac.xml", "112", h.addr, 1, 1, 1, "-d", "200")
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || e.rec.Direction != string(dialplan.KindEmergency) || e.rec.Trunk != "itsp" {
		t.Fatalf("CDR %+v", e.rec)
	}
}

// TestSippCancel: the caller cancels while the callee rings: 487 to the
// caller, CANCEL to the callee, nothing left open.
func TestSippCancel(t *testing.T) {
	h := startHarness(t)
	h.dir.set("102", sippUAS(t, "uas_ring.xml", "-m", "1"))
	sippUAC(t, "uac_cancel.xml", "102", h.addr, 1, 1, 1)
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Cancelled {
		t.Fatalf("CDR %+v", e.rec)
	}
	if open, _, outside, _, _ := h.pins.state(); open != 0 || outside != 0 {
		t.Fatalf("pinholes left open %d, outside the call %d", open, outside)
	}
	h.noStateLeft(t, false)
}

func (b *B2BUA) dialogCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.dialogs) + len(b.calls)
}

// appCodes routes *97 to the caller's voicemail-access application, with
// the caller's concurrency slot, as firmware/features does in front of the
// dial plan; everything else goes to the plan.
type appCodes struct{ *dialplan.Engine }

func (a appCodes) RouteOutbound(from, dialled string) (dialplan.Decision, *dialplan.Lease, error) {
	if n, err := dialplan.Normalize(dialled); err == nil && n == "*97" {
		lease, err := a.AdmitApp(from)
		return dialplan.Decision{Kind: dialplan.KindApp, Class: dialplan.Internal,
			Target: dialplan.AppTarget(dialplan.AppVoicemailAccess, from), Dialled: n}, lease, err
	}
	return a.Engine.RouteOutbound(from, dialled)
}
