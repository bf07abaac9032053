package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

const (
	testAdmin    = "owner1"
	testAdminPW  = "Vz4#mq9!Tr2$kw-lab"
	testExt      = "101"
	testExtPW    = "correct-horse-battery-staple"
	testRealm    = "edgepbx"
	sipLineRegex = `^\s+sip:\s+udp (\S+) tcp (\S+) tls (\S+)$`
)

var sipRE = regexp.MustCompile(sipLineRegex)

// apiClient is an admin API client pinned to the box certificate, with a
// cookie jar for the session and the CSRF token from the login answer.
type apiClient struct {
	t      testing.TB
	base   string
	origin string // sent as Origin on state changes, as a browser would
	c      *http.Client
	csrf   string
}

func newAPIClient(t testing.TB, base, fp string) *apiClient {
	c := pinnedClient(fp, 0, 0)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	t.Cleanup(c.CloseIdleConnections)
	return &apiClient{t: t, base: base, origin: base, c: c}
}

// do sends a request and returns status, headers and the body.
func (a *apiClient) do(method, path string, body any) (int, http.Header, []byte) {
	a.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			a.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, a.base+path, rd)
	if err != nil {
		a.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if method != http.MethodGet {
		req.Header.Set("Origin", a.origin)
		if a.csrf != "" {
			req.Header.Set("X-CSRF-Token", a.csrf)
		}
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, resp.Header, out
}

func (a *apiClient) must(want int, method, path string, body any) []byte {
	a.t.Helper()
	code, _, out := a.do(method, path, body)
	if code != want {
		a.t.Fatalf("%s %s = %d, want %d: %s", method, path, code, want, out)
	}
	return out
}

// login keeps the CSRF token of a successful claim or login answer.
func (a *apiClient) login(out []byte) {
	a.t.Helper()
	var ans struct {
		Status    string `json:"status"`
		CSRFToken string `json:"csrf_token"`
	}
	if err := json.Unmarshal(out, &ans); err != nil || ans.Status != "ok" {
		a.t.Fatalf("login answer %s (%v)", out, err)
	}
	a.csrf = ans.CSRFToken
}

// claimBox claims the box with the printed setup code over the real HTTPS
// API, then logs in afresh, checks the session works and returns it.
func claimBox(t testing.TB, base, fp, setupCode string) *apiClient {
	t.Helper()
	c := newAPIClient(t, base, fp)
	// Unclaimed: the API refuses everything but the claim.
	c.must(http.StatusConflict, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW})
	c.must(http.StatusUnauthorized, "POST", "/api/v1/claim", admin.ClaimRequest{SetupCode: "ZZZZ-ZZZZ-ZZZZ", Username: testAdmin, Password: testAdminPW})
	// A browser on another site cannot claim, even with the right code.
	evil := newAPIClient(t, base, fp)
	evil.origin = "https://evil.example"
	evil.must(http.StatusForbidden, "POST", "/api/v1/claim", admin.ClaimRequest{SetupCode: setupCode, Username: "evil", Password: testAdminPW})

	c.login(c.must(http.StatusOK, "POST", "/api/v1/claim", admin.ClaimRequest{SetupCode: setupCode, Username: testAdmin, Password: testAdminPW}))
	c.must(http.StatusOK, "GET", "/api/v1/me", nil)
	// Single use: the code does not claim a claimed box.
	other := newAPIClient(t, base, fp)
	other.must(http.StatusConflict, "POST", "/api/v1/claim", admin.ClaimRequest{SetupCode: setupCode, Username: "second", Password: testAdminPW})

	// A fresh client logs in with the account chosen at the claim.
	l := newAPIClient(t, base, fp)
	l.must(http.StatusUnauthorized, "GET", "/api/v1/me", nil)
	l.login(l.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	var me struct {
		Account struct {
			Username string `json:"username"`
			Role     string `json:"role"`
		} `json:"account"`
	}
	if err := json.Unmarshal(l.must(http.StatusOK, "GET", "/api/v1/me", nil), &me); err != nil {
		t.Fatal(err)
	}
	if me.Account.Username != testAdmin || me.Account.Role != "admin" {
		t.Fatalf("/api/v1/me = %+v", me)
	}
	return l
}

// seedExtension creates the dev identity and one SIP extension in its store
// before edgepbxd first starts, as the admin UI would.
func seedExtension(t *testing.T, dir string) {
	t.Helper()
	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.OpenAt(t, filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	defer db.Close() // before edgepbxd opens it: bbolt locks the file
	exts, err := sipedge.LoadExtensions(db, testRealm)
	if err != nil {
		t.Fatal(err)
	}
	if err := exts.Set(testExt, testExtPW); err != nil {
		t.Fatal(err)
	}
}

// rawRegister sends one REGISTER without credentials over a stream and
// returns the response's status line and WWW-Authenticate values.
func rawRegister(t *testing.T, c net.Conn, transport, domain string) (string, []string) {
	t.Helper()
	local := c.LocalAddr().String()
	msg := "REGISTER sip:" + domain + " SIP/2.0\r\n" +
		"Via: SIP/2.0/" + transport + " " + local + ";branch=z9hG4bK" + fmt.Sprint(time.Now().UnixNano()) + "\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + testExt + "@" + domain + ">;tag=a1\r\n" +
		"To: <sip:" + testExt + "@" + domain + ">\r\n" +
		"Call-ID: wiring-" + transport + "\r\n" +
		"CSeq: 1 REGISTER\r\n" +
		"Contact: <sip:" + testExt + "@" + local + ";transport=" + strings.ToLower(transport) + ">\r\n" +
		"User-Agent: wiring-test\r\n" +
		"Content-Length: 0\r\n\r\n"
	c.SetDeadline(time.Now().Add(10 * time.Second)) // a hang, not a speed limit
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("%s: write: %v", transport, err)
	}
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: no answer: %v", transport, err)
	}
	var auth []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: read headers: %v", transport, err)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			break
		}
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "WWW-Authenticate") {
			auth = append(auth, strings.TrimSpace(v))
		}
	}
	return strings.TrimRight(status, "\r\n"), auth
}

func checkChallenges(t *testing.T, transport string, auth []string) {
	t.Helper()
	joined := strings.Join(auth, "\n")
	for _, want := range []string{`realm="` + testRealm + `"`, "algorithm=SHA-256", "algorithm=MD5", "nonce="} {
		if !strings.Contains(joined, want) {
			t.Errorf("%s: challenges %q lack %s", transport, auth, want)
		}
	}
}

// sipRegister registers testExt over UDP with sipgo's own digest client
// (independent of firmware/sipedge's digest code).
func sipRegister(t *testing.T, udpAddr, password string) (first, second *sip.Response) {
	t.Helper()
	host, port, err := net.SplitHostPort(udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	var p int
	fmt.Sscan(port, &p)
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("wiring-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	aor := sip.Uri{Scheme: "sip", User: testExt, Host: host}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: host, Port: p})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: "w1"}}})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:"+testExt+"@127.0.0.1:5099>"))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	if first, err = cl.Do(ctx, req); err != nil {
		t.Fatalf("REGISTER: %v", err)
	}
	if first.StatusCode != 401 {
		return first, nil
	}
	if second, err = cl.DoDigestAuth(ctx, req, first, sipgo.DigestAuth{Username: testExt, Password: password}); err != nil {
		t.Fatalf("REGISTER with digest: %v", err)
	}
	return first, second
}

// TestDevModeClaimAndSIP drives the dev-mode daemon as an installer and a
// phone would: claim over HTTPS with the printed setup code, log in, and
// register over SIP (401 challenge on UDP, TCP and TLS; digest over UDP).
func TestDevModeClaimAndSIP(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	h := getHealthz(t, base, fp)
	if h.License.Configured || h.License.Mode != "not configured" {
		t.Fatalf("licence without --license-url: %+v", h.License)
	}

	// The admin UI answers everything but /healthz, with its own CSP
	// (not clobbered by the daemon's default-src 'none').
	c := newAPIClient(t, base, fp)
	st, hdr, _ := c.do("GET", "/", nil)
	if st != http.StatusSeeOther || hdr.Get("Location") != "/claim" {
		t.Fatalf("GET / on an unclaimed box = %d %s", st, hdr.Get("Location"))
	}
	st, hdr, body := c.do("GET", "/claim", nil)
	if st != http.StatusOK || !strings.Contains(string(body), "<form") {
		t.Fatalf("GET /claim = %d: %.300s", st, body)
	}
	if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("admin page CSP = %q", csp)
	}
	if hdr.Get("X-Frame-Options") != "DENY" || hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("admin page headers %v", hdr)
	}

	claimBox(t, base, fp, code)

	// SIP: an unauthenticated REGISTER gets a 401 with SHA-256 and MD5
	// challenges on every transport; TLS serves the box certificate.
	tcp, err := net.Dial("tcp", sipAddrs[2])
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	status, auth := rawRegister(t, tcp, "TCP", "127.0.0.1")
	if status != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("TCP REGISTER: %q", status)
	}
	checkChallenges(t, "TCP", auth)

	tc, err := tls.Dial("tcp", sipAddrs[3], &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("SIP TLS: %v", err)
	}
	defer tc.Close()
	cs := tc.ConnectionState()
	if got := fmt.Sprintf("%X", sha256.Sum256(cs.PeerCertificates[0].Raw)); strings.ReplaceAll(fp, ":", "") != got {
		t.Fatalf("SIP TLS certificate %s is not the box certificate %s", got, fp)
	}
	status, auth = rawRegister(t, tc, "TLS", "127.0.0.1")
	if status != "SIP/2.0 401 Unauthorized" {
		t.Fatalf("TLS REGISTER: %q", status)
	}
	checkChallenges(t, "TLS", auth)

	first, second := sipRegister(t, sipAddrs[1], testExtPW)
	if first.StatusCode != 401 || second == nil || second.StatusCode != 200 {
		t.Fatalf("UDP REGISTER: %v then %v", first, second)
	}
	// A wrong password gets a fresh challenge, nothing that tells it apart.
	if _, second := sipRegister(t, sipAddrs[1], "wrong-password-1"); second == nil || second.StatusCode != 401 {
		t.Fatalf("wrong password: %v", second)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	for _, s := range []string{"https", "sip", "seclog"} {
		if !strings.Contains(p.output(), `msg="service: stopped" service=`+s) {
			t.Errorf("no graceful %s stop logged", s)
		}
	}

	// Restarted, the box is still claimed: no setup code shown, the claim
	// page gone, the account still logs in.
	p2 := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	base2 := p2.waitLine(t, adminRE)[1]
	if got := p2.waitLine(t, setupRE)[1]; got != "(claimed)" {
		t.Fatalf("claimed box shows setup code %q", got)
	}
	l := newAPIClient(t, base2, fp)
	if st, hdr, _ := l.do("GET", "/claim", nil); st != http.StatusSeeOther || hdr.Get("Location") != "/login" {
		t.Fatalf("GET /claim on a claimed box = %d %s", st, hdr.Get("Location"))
	}
	l.login(l.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	if code := p2.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// TestDevModeSIPTLSOff: --sip-tls "" leaves SIP on UDP and TCP only.
func TestDevModeSIPTLSOff(t *testing.T) {
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "")
	line := p.waitLine(t, regexp.MustCompile(`^\s+sip:\s+(.*)$`))[1]
	if !regexp.MustCompile(`^udp 127\.0\.0\.1:\d+ tcp 127\.0\.0\.1:\d+$`).MatchString(line) {
		t.Fatalf("sip line %q", line)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// TestDevModeSIPPortTaken: a taken SIP port fails the start loudly (exit 1,
// so PID 1 retries) before anything reports ready.
func TestDevModeSIPPortTaken(t *testing.T) {
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "127.0.0.1:0", "--sip", busy.LocalAddr().String(), "--sip-tls", "")
	if code := p.wait(t); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, p.output())
	}
	if out := p.output(); !strings.Contains(out, "sip: listen udp") || strings.Contains(out, "setup code:") {
		t.Fatalf("unclear failure or banner printed:\n%s", out)
	}
}

// urlHost is the host:port of a URL string.
func urlHost(t *testing.T, s string) string {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// banLog is PID 1's firewall side of the control socket in the test: it
// records the bans edgepbxd asks for.
type banLog struct{ bans chan netfw.Ban }

func (f *banLog) OpenPinhole(netfw.Pinhole) error  { return errors.New("not in this test") }
func (f *banLog) ClosePinhole(netfw.Pinhole) error { return errors.New("not in this test") }
func (f *banLog) Unban(netip.Prefix) error         { return errors.New("not in this test") }
func (f *banLog) ListBans() ([]netfw.Ban, error)   { return nil, nil }
func (f *banLog) Counters() (netfw.Counters, error) {
	return netfw.Counters{}, nil
}
func (f *banLog) Ban(b netfw.Ban) error {
	select {
	case f.bans <- b:
	default:
	}
	return nil
}

// udpPhone is a raw SIP-over-UDP client (siptest.Raw) bound to a chosen
// loopback address.
type udpPhone struct {
	t    *testing.T
	raw  *siptest.Raw
	cseq int
}

func newUDPPhone(t *testing.T, local, srv string) *udpPhone {
	t.Helper()
	ra, err := netip.ParseAddrPort(srv)
	if err != nil {
		t.Fatal(err)
	}
	return &udpPhone{t: t, raw: siptest.NewRaw(t, "UDP", netip.MustParseAddr(local), ra)}
}

// register sends a REGISTER for testExt@domain with an optional
// Authorization header and returns the status line and MD5 nonce.
func (p *udpPhone) register(domain, authz string) (status, md5Nonce string) {
	p.t.Helper()
	p.send(domain, authz)
	b, _, err := p.raw.Read(10 * time.Second) // a hang, not a speed limit
	if err != nil {
		p.t.Fatalf("no answer to REGISTER: %v", err)
	}
	resp := string(b)
	status, _, _ = strings.Cut(resp, "\r\n")
	for _, l := range strings.Split(resp, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "www-authenticate:") && strings.Contains(l, "algorithm=MD5") {
			if m := regexp.MustCompile(`nonce="([^"]+)"`).FindStringSubmatch(l); m != nil {
				md5Nonce = m[1]
			}
		}
	}
	return status, md5Nonce
}

// TestProductionClaimAndBan runs edgepbxd as PID 1 does (unprivileged uid,
// bootstrap on fd 3, control socket): claiming the box through the HTTPS
// API shows up as Claimed in its health reports, and a SIP password guesser
// is banned at PID 1's firewall through the control socket.
func TestProductionClaimAndBan(t *testing.T) {
	netnstest.NeedRoot(t, "starting edgepbxd as an unprivileged uid")
	data := unprivDir(t)
	// The store as the admin UI leaves it: one extension. Created here as
	// root, then handed to the unprivileged uid.
	db := storetest.OpenAt(t, filepath.Join(data, "edgepbx.db"), bytes.Repeat([]byte{7}, 32)) // bootstrapJSON's key
	exts, err := sipedge.LoadExtensions(db, testRealm)
	if err != nil {
		t.Fatal(err)
	}
	if err := exts.Set(testExt, testExtPW); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Chown(filepath.Join(data, "edgepbx.db"), unprivUID, unprivUID); err != nil {
		t.Fatal(err)
	}

	sock := filepath.Join(filepath.Dir(data), "init.sock")
	hl := &healthLog{changed: make(chan struct{}, 1)}
	fw := &banLog{bans: make(chan netfw.Ban, 16)}
	srv, err := control.Listen(control.Config{Path: sock, UID: unprivUID, GID: unprivUID, System: hl, Firewall: fw})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	p := startProc(t, procOpts{bootstrap: bootstrapJSON(nil), uid: unprivUID},
		"--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "", "--control", sock)
	// Lines come in this order: SIP binds before HTTPS.
	udp := p.waitLine(t, regexp.MustCompile(`msg="sip: listening" udp=(\S+)`))[1]
	m := p.waitLine(t, listenRE)
	addr, fp := m[1], m[2]
	p.waitLine(t, regexp.MustCompile(`msg="health: reported ready to PID 1"`))
	if h, _ := hl.last(); !h.Ready || h.Claimed || !strings.Contains(h.Detail, "sip udp "+udp) || !strings.Contains(h.Detail, "licence not configured") {
		t.Fatalf("first health report %+v", h)
	}

	claimBox(t, "https://"+addr, fp, "AB12-CD34-EF56") // bootstrapJSON's setup code
	// The next periodic report (every healthInterval) says claimed.
	deadline := time.After(60 * time.Second) // a hang, not a speed limit
	for {
		if h, _ := hl.last(); h.Claimed {
			break
		}
		select {
		case <-hl.changed:
		case <-deadline:
			t.Fatalf("health never reported claimed: %+v\n%s", hl.reports, p.output())
		}
	}

	// The cert's DNS name is a served SIP domain; 127.0.0.2 tries a wrong
	// password for five different users (a scan, max_users_per_source by
	// default) until the guard bans it. Failures for one user alone only
	// throttle that user (TestMistypedPasswordThrottles in firmware/sipedge).
	domain := "edgepbx-epx-0001"
	ph := newUDPPhone(t, "127.0.0.2", udp)
	users := []string{testExt, "102", "103", "104", "105"}
	for i, user := range users {
		status, nonce := ph.register(domain, "")
		if status != "SIP/2.0 401 Unauthorized" || nonce == "" {
			t.Fatalf("guess %d: challenge %q nonce %q", i, status, nonce)
		}
		uri := "sip:" + domain
		authz := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%032x", algorithm=MD5, qop=auth, nc=00000001, cnonce="c%d"`,
			user, testRealm, nonce, uri, i+1, i)
		if i < len(users)-1 {
			if status, _ := ph.register(domain, authz); status != "SIP/2.0 401 Unauthorized" {
				t.Fatalf("wrong password %d for %s: %q", i, user, status)
			}
			continue
		}
		// The fifth user makes it a scan: no answer, and the ban goes to PID 1.
		ph.send(domain, authz)
	}
	select {
	case b := <-fw.bans:
		if b.Prefix != netip.MustParsePrefix("127.0.0.2/32") || b.Reason == "" {
			t.Fatalf("ban %+v", b)
		}
	case <-time.After(60 * time.Second): // a hang, not a speed limit
		t.Fatalf("no ban reached PID 1:\n%s", p.output())
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	// Next start: claimed from the first report on.
	p = startProc(t, procOpts{bootstrap: bootstrapJSON(nil), uid: unprivUID},
		"--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "", "--control", sock)
	p.waitLine(t, regexp.MustCompile(`msg="health: reported ready to PID 1"`))
	if h, _ := hl.last(); !h.Ready || !h.Claimed {
		t.Fatalf("first report after restart %+v", h)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

// send writes a REGISTER for testExt@domain, with an Authorization header
// when authz is set, and does not wait for an answer.
func (p *udpPhone) send(domain, authz string) {
	p.t.Helper()
	p.cseq++
	local := p.raw.Local()
	msg := "REGISTER sip:" + domain + " SIP/2.0\r\n" +
		fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-prod-%d;rport\r\n", local, p.cseq) +
		"Max-Forwards: 70\r\n" +
		"From: <sip:" + testExt + "@" + domain + ">;tag=p1\r\n" +
		"To: <sip:" + testExt + "@" + domain + ">\r\n" +
		"Call-ID: prod-ban-test\r\n" +
		fmt.Sprintf("CSeq: %d REGISTER\r\n", p.cseq) +
		"Contact: <sip:" + testExt + "@" + local + ">\r\n" +
		"User-Agent: wiring-test\r\n"
	if authz != "" {
		msg += "Authorization: " + authz + "\r\n"
	}
	p.raw.Send(msg + "Content-Length: 0\r\n\r\n")
}
