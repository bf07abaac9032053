package provision

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// scan probes n MACs of one vendor prefix; the known phone (in its
// window) sits at position at. It returns how many probes got an answer
// other than "banned", and how many configurations leaked.
func scan(h *harness, n, at int, src func(i int) string) (served, leaked int) {
	ua := "Yealink SIP-T46S 66.86.0.15"
	for i := 0; i < n; i++ {
		mac := fmt.Sprintf("805ec0%06x", i)
		if i == at {
			mac = "805ec0ffffff"
		}
		a := h.do(true, "GET", "/"+mac+".cfg", ua, src(i), nil)
		switch a.status {
		case http.StatusForbidden, http.StatusTooManyRequests:
		case http.StatusOK:
			leaked++
			served++
		default:
			served++
		}
	}
	return served, leaked
}

// TestMACScanBanned: 10,000 MACs from one source, and from 254 loopback
// sources, get the sources banned (through the Banner, as PID 1 would be
// asked) and leak no configuration, not even of a phone in its window.
func TestMACScanBanned(t *testing.T) {
	for _, tc := range []struct {
		name    string
		src     func(int) string
		minBans int
	}{
		{"one-source", func(int) string { return "10.1.1.66" }, 1},
		{"spread", func(i int) string { return fmt.Sprintf("127.0.0.%d", 1+i%254) }, 254},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.add("805ec0ffffff", Yealink, true, "101")
			served, leaked := scan(h, 10000, 5000, tc.src)
			if leaked != 0 {
				t.Fatalf("%d configurations leaked", leaked)
			}
			lim := DefaultLimits()
			sources := 1
			if tc.name == "spread" {
				sources = 254
			}
			if served > sources*lim.ScanMACs {
				t.Fatalf("%d probes served before the bans, want at most %d", served, sources*lim.ScanMACs)
			}
			waitFor(t, func() bool { return h.bans.count() >= tc.minBans })
			for _, b := range h.bans.bans {
				if b.Prefix.Bits() != 32 || b.Reason != "provisioning-mac-scan" {
					t.Fatalf("ban %+v: want one host, reason provisioning-mac-scan", b)
				}
			}
			t.Logf("%s: %d probes answered before the bans (%d sources banned)", tc.name, served, h.bans.count())
			// The phone still enrols from its own address, by token (bare
			// MAC enrolment is closed while the box is scanned).
			e, err := h.svc.Enrolment("805ec0ffffff")
			if err != nil || e.URL == "" {
				t.Fatalf("enrolment: %v %+v", err, e)
			}
			if tc.name == "spread" {
				if !h.svc.UnderAttack() {
					t.Fatal("a 10,000-MAC scan from 254 sources did not close bare-MAC enrolment")
				}
				if a := h.do(true, "GET", "/805ec0ffffff.cfg", "Yealink SIP-T46S 66.86.0.15", "10.7.7.7", nil); a.status != 401 {
					t.Fatalf("bare MAC under attack: %d", a.status)
				}
			}
			path := strings.TrimPrefix(e.URL, "https://pbx.example.test:8443")
			if a := h.do(true, "GET", path, "Yealink SIP-T46S 66.86.0.15", "10.7.7.7", nil); a.status != 200 {
				t.Fatalf("token under attack: %d", a.status)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMACScanOverNetwork runs a scan through real sockets from a spread of
// loopback source addresses against the HTTPS and HTTP listeners.
func TestMACScanOverNetwork(t *testing.T) {
	h := newHarness(t)
	h.listen()
	h.add("805ec0ffffff", Yealink, true, "101")
	leaked, served := 0, 0
	for s := 1; s <= 16; s++ {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(s))}
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: local}).DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
		c := &http.Client{Transport: tr}
		for i := 0; i < 40; i++ {
			for _, base := range []string{h.https.URL, h.http.URL} {
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/805ec0%02x%04x.cfg", base, s, i), nil)
				req.Header.Set("User-Agent", "Yealink SIP-T46S 66.86.0.15")
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 && strings.Contains(string(body), "account.1.password") {
					leaked++
				}
				if resp.StatusCode != 403 && resp.StatusCode != 429 {
					served++
				}
			}
		}
		tr.CloseIdleConnections()
	}
	if leaked != 0 {
		t.Fatalf("%d configurations leaked", leaked)
	}
	waitFor(t, func() bool { return h.bans.count() == 16 })
	t.Logf("network scan: %d of %d probes answered before the bans", served, 16*40*2)
}

// TestTokenReplay: the one-time token works once; a replay is refused,
// and a re-provision's new token replaces it.
func TestTokenReplay(t *testing.T) {
	h := newHarness(t)
	d := h.add("", Linphone, true, "101")
	e, _ := h.svc.Enrolment(d.MAC)
	path := strings.TrimPrefix(e.URL, "https://pbx.example.test:8443")
	ua := "Linphone/5.2.0 (Debian) LinphoneSDK/5.2.0"
	if a := h.do(true, "GET", path, ua, "10.1.1.5", nil); a.status != 200 {
		t.Fatalf("first use: %d", a.status)
	}
	if a := h.do(true, "GET", path, ua, "10.1.1.5", nil); a.status != 401 {
		t.Fatalf("replay: %d", a.status)
	}
	if e2, _ := h.svc.Enrolment(d.MAC); e2.URL != "" {
		t.Fatalf("used token still shown: %s", e2.URL)
	}
	if _, err := h.svc.Reprovision(d.MAC, "admin", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if a := h.do(true, "GET", path, ua, "10.1.1.5", nil); a.status != 401 {
		t.Fatalf("old token after reprovision: %d", a.status)
	}
	e3, _ := h.svc.Enrolment(d.MAC)
	if a := h.do(true, "GET", strings.TrimPrefix(e3.URL, "https://pbx.example.test:8443"), ua, "10.1.1.5", nil); a.status != 200 {
		t.Fatalf("new token: %d", a.status)
	}
}

type testCAKey struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCAKey {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour * 365), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return testCAKey{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// deviceCert is a factory certificate naming mac the way Poly's do (CN).
func (ca testCAKey) deviceCert(t *testing.T, cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLS: a phone's factory certificate from the uploaded vendor CA
// opens its own configuration after enrolment, not another phone's; a
// certificate from another CA opens nothing.
func TestMutualTLS(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.Clock = time.Now })
	h.listen()
	ca := newTestCA(t, "Test Poly Device CA")
	other := newTestCA(t, "Someone else's CA")
	if err := h.svc.SetVendorCA(Poly, ca.pem, "admin", "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	ua := "FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application"
	h.add("0004f2aabbcc", Poly, true, "101")
	h.add("0004f2aabbdd", Poly, true, "102")
	// Both enrol, closing their windows.
	for _, m := range []string{"0004f2aabbcc", "0004f2aabbdd"} {
		if a := h.do(true, "GET", "/edgepbx-"+m+".cfg", ua, "10.1.1.9", nil); a.status != 200 {
			t.Fatal(a.status)
		}
	}
	fetch := func(cert tls.Certificate, mac string) int {
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{cert}}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", h.https.URL+"/edgepbx-"+mac+".cfg", nil)
		req.Header.Set("User-Agent", ua)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	good := ca.deviceCert(t, "0004F2AABBCC")
	if got := fetch(good, "0004f2aabbcc"); got != 200 {
		t.Fatalf("right MAC: %d", got)
	}
	if got := fetch(good, "0004f2aabbdd"); got != 401 {
		t.Fatalf("another phone's MAC: %d", got)
	}
	if got := fetch(other.deviceCert(t, "0004f2aabbcc"), "0004f2aabbcc"); got != 401 {
		t.Fatalf("foreign CA: %d", got)
	}
}

// TestDegradedLicence: no new phones, no enrolment; enrolled phones keep
// fetching with their credential.
func TestDegradedLicence(t *testing.T) {
	h := newHarness(t)
	p := phones()[0]
	h.add(p.mac, p.vendor, true, "101")
	h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil)
	h.add("805ec0000002", Yealink, true, "102")
	h.lic.degraded = true
	if _, err := h.svc.Add(AddRequest{MAC: "805ec0000003", Vendor: Yealink}, "admin", "x"); err != ErrDegraded {
		t.Fatalf("add while degraded: %v", err)
	}
	if _, err := h.svc.Approve("805ec0000002", "admin", "x"); err != ErrDegraded {
		t.Fatalf("approve while degraded: %v", err)
	}
	if a := h.do(true, "GET", "/805ec0000002.cfg", p.ua, "10.1.1.21", nil); a.status != 401 {
		t.Fatalf("window enrolment while degraded: %d", a.status)
	}
	sec := h.secrets(p.mac)
	if a := h.do(true, "GET", "/"+p.device, p.ua, "10.1.1.20", nil, h.withDigest(p.mac, sec.Credential)); a.status != 200 {
		t.Fatalf("enrolled phone while degraded: %d", a.status)
	}
}

// TestPolyLogUpload: uploads need the same proof as a fetch and are bounded.
func TestPolyLogUpload(t *testing.T) {
	h := newHarness(t)
	ua := "FileTransport PolycomVVX-VVX_500-UA/5.9.7.4477 Type/Application"
	h.add("0004f2aabbcc", Poly, true, "101")
	h.do(true, "GET", "/edgepbx-0004f2aabbcc.cfg", ua, "10.1.1.9", nil)
	sec := h.secrets("0004f2aabbcc")
	if a := h.do(true, "PUT", "/0004f2aabbcc-boot.log", ua, "10.1.1.9", strings.NewReader("boot ok\n")); a.status != 401 {
		t.Fatalf("upload without proof: %d", a.status)
	}
	if a := h.do(true, "PUT", "/0004f2aabbcc-boot.log", ua, "10.1.1.9", strings.NewReader("boot ok\x1b[2J\n"), h.withDigest("0004f2aabbcc", sec.Credential)); a.status != 204 {
		t.Fatalf("upload: %d", a.status)
	}
	if got := string(h.svc.BootLog("0004f2aabbcc")); got != "boot ok?[2J\n" {
		t.Fatalf("stored log %q", got)
	}
	big := strings.NewReader(strings.Repeat("x", maxLogBody+1))
	if a := h.do(true, "PUT", "/0004f2aabbcc-app.log", ua, "10.1.1.9", big, h.withDigest("0004f2aabbcc", sec.Credential)); a.status != 413 {
		t.Fatalf("oversized upload: %d", a.status)
	}
	if a := h.do(false, "PUT", "/0004f2aabbcc-boot.log", ua, "10.1.1.9", strings.NewReader("x")); a.status == 204 {
		t.Fatal("upload over plain HTTP accepted")
	}
}

// TestFirmwareFiles: uploads are bounded and streamed to disk; a file is
// served only to the models it names, and its URL goes into their config.
func TestFirmwareFiles(t *testing.T) {
	h := newHarness(t, func(d *Deps) { d.MaxFirmwareBytes = 1 << 20 })
	meta, err := ParseFirmwareMeta("T46S-66.86.0.20.rom", "yealink", "SIP-T46S, SIP-T48S", "66.86.0.20")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.UploadFirmware(t.Context(), meta, io.LimitReader(zeros{}, 1<<20+1), "admin", "x"); err == nil {
		t.Fatal("oversized firmware accepted")
	}
	f, err := h.svc.UploadFirmware(t.Context(), meta, io.LimitReader(zeros{}, 300<<10), "admin", "x")
	if err != nil || f.Size != 300<<10 {
		t.Fatalf("upload: %v %+v", err, f)
	}
	if a := h.do(true, "GET", "/fw/"+f.ID, "Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33", "10.1.1.20", nil); a.status != 200 || len(a.body) != 300<<10 {
		t.Fatalf("matching model: %d %d", a.status, len(a.body))
	}
	if a := h.do(true, "GET", "/fw/"+f.ID, "Yealink SIP-T54W 96.86.0.15 805ec0112233", "10.1.1.20", nil); a.status != 404 {
		t.Fatalf("other model: %d", a.status)
	}
	h.add("805ec0112233", Yealink, true, "101")
	a := h.do(true, "GET", "/805ec0112233.cfg", "Yealink SIP-T46S 66.86.0.15 80:5e:c0:11:22:33", "10.1.1.20", nil)
	mustContain(t, a.body, "static.firmware.url = https://pbx.example.test:8443/fw/"+f.ID)
	for _, bad := range [][4]string{{"../x", "yealink", "T46S", "1"}, {"a.rom", "linphone", "T46S", "1"}, {"a.rom", "yealink", "T46S,<x>", "1"}, {"a.rom", "yealink", "T46S", ""}} {
		if _, err := ParseFirmwareMeta(bad[0], bad[1], bad[2], bad[3]); err == nil {
			t.Errorf("metadata %q accepted", bad)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
