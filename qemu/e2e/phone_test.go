package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// boxAdmin is an admin API client for a booted appliance, pinned to the
// certificate fingerprint its console shows.
type boxAdmin struct {
	t      *testing.T
	base   string
	c      *http.Client
	csrf   string
	certPE []byte // the box's certificate, PEM, as served
}

func newBoxAdmin(t *testing.T, base, fingerprint string) *boxAdmin {
	t.Helper()
	a := &boxAdmin{t: t, base: base}
	want := normFingerprint(fingerprint)
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	a.c = &http.Client{Jar: jar, Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // self-signed: pinned to the console's fingerprint instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != want {
				return fmt.Errorf("certificate sha256 %s, console shows %s", got, want)
			}
			a.certPE = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cs.PeerCertificates[0].Raw})
			return nil
		},
	}}}
	t.Cleanup(a.c.CloseIdleConnections)
	return a
}

// do sends a JSON request as a browser on the admin origin would.
func (a *boxAdmin) do(want int, method, path string, body any) []byte {
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
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", a.base)
	if a.csrf != "" {
		req.Header.Set("X-CSRF-Token", a.csrf)
	}
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s = %d, want %d: %s", method, path, resp.StatusCode, want, out)
	}
	return out
}

// claim claims the box with the console's setup code.
func (a *boxAdmin) claim(code string) {
	a.t.Helper()
	var ans struct {
		Status    string `json:"status"`
		CSRFToken string `json:"csrf_token"`
	}
	out := a.do(http.StatusOK, "POST", "/api/v1/claim", map[string]string{
		"setup_code": code, "username": "owner1", "password": "Vz4#mq9!Tr2$kw-lab"})
	if err := json.Unmarshal(out, &ans); err != nil || ans.Status != "ok" {
		a.t.Fatalf("claim answer %s (%v)", out, err)
	}
	a.csrf = ans.CSRFToken
}

// extension creates a SIP extension and returns its generated password.
func (a *boxAdmin) extension(user string) string {
	a.t.Helper()
	var ans struct{ User, Password string }
	if err := json.Unmarshal(a.do(http.StatusCreated, "POST", "/api/v1/extensions", map[string]string{"user": user}), &ans); err != nil || ans.Password == "" {
		a.t.Fatalf("create extension %s: %v", user, err)
	}
	return ans.Password
}

// baresipModules is where Debian's baresip-core installs its modules.
const baresipModules = "/usr/lib/baresip/modules"

func needBaresip(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	for _, m := range []string{"g711", "ausine", "aubridge", "sndfile", "srtp", "account", "menu", "ctrl_tcp"} {
		if err == nil {
			_, err = os.Stat(filepath.Join(baresipModules, m+".so"))
		}
	}
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("baresip (Debian package baresip-core) missing: %v", err)
		}
		t.Fatalf("baresip (Debian package baresip-core) missing: %v", err)
	}
	return bin
}

// phone is one headless baresip on the host (a sine source, what it sends
// and decodes recorded to WAV), driven over ctrl_tcp.
type phone struct {
	name   string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	conn   net.Conn
	events chan map[string]any
	resps  chan map[string]any
	seen   []string
}

// phoneConfig is what differs between the test's phones.
type phoneConfig struct {
	name     string
	local    net.IP   // address the phone listens and sends RTP from
	accounts []string // baresip account lines
	tone     int      // Hz of the sine it sends
	caFile   string   // trusted CA for SIP over TLS
}

// freePort is a port free for UDP and TCP at ip, with the next one free for
// TCP too (baresip listens for SIP/TLS at port+1).
func freePort(t *testing.T, ip net.IP) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		ok := port < 65535
		var ls []net.Listener
		for _, p := range []int{port, port + 1} {
			if !ok {
				break
			}
			l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		u.Close()
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no free port pair")
	return 0
}

func startPhone(ctx context.Context, t *testing.T, bin string, pc phoneConfig) *phone {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "baresip-"+pc.name)
	if err := os.MkdirAll(filepath.Join(dir, "rec"), 0o700); err != nil {
		t.Fatal(err)
	}
	sipPort := freePort(t, pc.local)
	ctrl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctrlPort := ctrl.Addr().(*net.TCPAddr).Port
	ctrl.Close()
	cafile := ""
	if pc.caFile != "" {
		cafile = "sip_cafile " + pc.caFile + "\n"
	}
	config := fmt.Sprintf(`poll_method epoll
sip_listen %[1]s
%[8]snet_interface %[9]s
call_local_timeout 20
audio_player aubridge,play%[3]s
audio_alert aubridge,alert%[3]s
audio_source ausine,%[4]d
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
auplay_channels 1
rtcp_mux no
jitter_buffer_delay 1-10
module_path %[5]s
module g711.so
module sndfile.so
module ausine.so
module aubridge.so
module srtp.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:%[2]d
snd_path %[6]s
%[7]s`, net.JoinHostPort(pc.local.String(), strconv.Itoa(sipPort)), ctrlPort, pc.name, pc.tone, baresipModules,
		filepath.Join(dir, "rec"), "", cafile, pc.local)
	for name, body := range map[string]string{"config": config, "accounts": strings.Join(pc.accounts, "\n") + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{name: pc.name, dir: dir, cmd: exec.Command(bin, "-f", dir), done: make(chan struct{}),
		events: make(chan map[string]any, 1024), resps: make(chan map[string]any, 8)}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		if p.conn != nil {
			p.conn.Close()
		}
		p.kill()
	})
	for p.conn == nil {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ctrlPort))
		if err == nil {
			p.conn = c
			break
		}
		select {
		case <-p.done:
			t.Fatalf("baresip %s exited:\n%s", pc.name, p.log())
		case <-ctx.Done():
			t.Fatalf("baresip %s: no ctrl_tcp: %v\n%s", pc.name, err, p.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	go p.read()
	return p
}

func (p *phone) log() string {
	out, _ := os.ReadFile(filepath.Join(p.dir, "log"))
	return string(out)
}

func (p *phone) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// stop ends baresip with SIGTERM, so sndfile completes its WAV headers.
func (p *phone) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
		t.Fatalf("baresip %s ignored SIGTERM:\n%s", p.name, p.log())
	}
}

// read splits ctrl_tcp's netstrings ("<len>:<json>,") into events and
// command responses.
func (p *phone) read() {
	defer close(p.events)
	r := bufio.NewReader(p.conn)
	for {
		head, err := r.ReadString(':')
		if err != nil || len(head) > 8 {
			return
		}
		n, err := strconv.Atoi(head[:len(head)-1])
		if err != nil || n < 0 || n > 1<<20 {
			return
		}
		msg := make([]byte, n+1)
		if _, err := io.ReadFull(r, msg); err != nil || msg[n] != ',' {
			return
		}
		var m map[string]any
		if json.Unmarshal(msg[:n], &m) != nil {
			return
		}
		switch {
		case m["response"] == true:
			p.resps <- m
		case m["event"] == true:
			p.events <- m
		}
	}
}

func (p *phone) command(ctx context.Context, t *testing.T, cmd, params string) string {
	t.Helper()
	req := map[string]string{"command": cmd, "token": cmd}
	if params != "" {
		req["params"] = params
	}
	js, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(p.conn, "%d:%s,", len(js), js); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-p.resps:
		data, _ := m["data"].(string)
		if m["ok"] != true {
			t.Fatalf("baresip %s: %s %s: %s\n%s", p.name, cmd, params, data, p.log())
		}
		return data
	case <-ctx.Done():
		t.Fatalf("baresip %s: %s: no answer\n%s", p.name, cmd, p.log())
	}
	return ""
}

func (p *phone) waitEvent(ctx context.Context, t *testing.T, typ string) {
	t.Helper()
	for {
		select {
		case m, ok := <-p.events:
			if !ok {
				t.Fatalf("baresip %s: ctrl_tcp closed waiting for %s (events %v)\n%s", p.name, typ, p.seen, p.log())
			}
			got, _ := m["type"].(string)
			p.seen = append(p.seen, got)
			if got == typ {
				return
			}
			if got == "CALL_CLOSED" {
				t.Fatalf("baresip %s: call closed (%v) waiting for %s (events %v)\n%s", p.name, m["param"], typ, p.seen, p.log())
			}
		case <-ctx.Done():
			t.Fatalf("baresip %s: no %s (events %v)\n%s", p.name, typ, p.seen, p.log())
		}
	}
}

// waitRegistered polls reginfo until all n accounts show OK.
func (p *phone) waitRegistered(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	for {
		out := p.command(ctx, t, "reginfo", "")
		if strings.Count(out, "OK") >= n {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("baresip %s: not all %d accounts registered: %q\n%s", p.name, n, out, p.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *phone) recording(dir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(p.dir, "rec", "dump-*-"+dir+".wav"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("%d %s recordings", len(m), dir)
	}
	return m[0], nil
}

// waitAudio waits until the decoded recording holds d of 8 kHz 16-bit audio.
func (p *phone) waitAudio(ctx context.Context, t *testing.T, d time.Duration) {
	t.Helper()
	want := int64(44 + 2*8000*d/time.Second)
	for {
		var size int64
		path, err := p.recording("dec")
		if err == nil {
			if fi, err := os.Stat(path); err == nil {
				size = fi.Size()
			}
		}
		if size >= want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("baresip %s: %d of %d bytes of decoded audio (%v)\n%s", p.name, size, want, err, p.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (p *phone) wav(t *testing.T, dir string) wavPCM {
	t.Helper()
	path, err := p.recording(dir)
	if err == nil {
		var w wavPCM
		if w, err = readWAV(path); err == nil {
			return w
		}
	}
	t.Fatalf("baresip %s: %v", p.name, err)
	return wavPCM{}
}

// wavPCM is mono 16-bit PCM.
type wavPCM struct {
	rate    int
	samples []int16
}

func readWAV(path string) (wavPCM, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return wavPCM{}, err
	}
	if len(raw) < 12 || string(raw[:4]) != "RIFF" || string(raw[8:12]) != "WAVE" {
		return wavPCM{}, fmt.Errorf("%s: not a WAV file", path)
	}
	var w wavPCM
	for p := 12; p+8 <= len(raw); {
		id, size := string(raw[p:p+4]), int(binary.LittleEndian.Uint32(raw[p+4:]))
		body := raw[p+8:]
		if size > len(body) || size < 0 {
			size = len(body)
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if len(body) < 16 || binary.LittleEndian.Uint16(body) != 1 || binary.LittleEndian.Uint16(body[2:]) != 1 || binary.LittleEndian.Uint16(body[14:]) != 16 {
				return wavPCM{}, fmt.Errorf("%s: want mono 16-bit PCM", path)
			}
			w.rate = int(binary.LittleEndian.Uint32(body[4:]))
		case "data":
			if w.rate == 0 {
				return wavPCM{}, fmt.Errorf("%s: data before fmt", path)
			}
			w.samples = make([]int16, size/2)
			for i := range w.samples {
				w.samples[i] = int16(binary.LittleEndian.Uint16(body[2*i:]))
			}
			return w, nil
		}
		p += 8 + size + size%2
	}
	return wavPCM{}, errors.New(path + ": no data chunk")
}

// goertzel is the share of x's energy at freq Hz (1 for a pure sine).
func goertzel(x []float64, freq float64, rate int) float64 {
	w := 2 * math.Pi * freq / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2, energy float64
	for _, v := range x {
		s1, s2 = v+c*s1-s2, s1
		energy += v * v
	}
	if energy == 0 {
		return 0
	}
	return 2 * (s1*s1 + s2*s2 - c*s1*s2) / (float64(len(x)) * energy)
}

func rms(x []float64) float64 {
	var e float64
	for _, v := range x {
		e += v * v
	}
	return math.Sqrt(e / float64(len(x)))
}

// blocks100ms is the audio after the first half second, in 100 ms blocks.
func blocks100ms(w wavPCM) [][]float64 {
	block := w.rate / 10
	var out [][]float64
	for i := w.rate / 2; i+block <= len(w.samples); i += block {
		b := make([]float64, block)
		for j := range b {
			b[j] = float64(w.samples[i+j])
		}
		out = append(out, b)
	}
	return out
}

// checkTone requires nearly every 100 ms block of got (one side's decoded
// audio) to be the other side's tone: the strongest frequency in a 10 Hz
// scan, at least 90 % of the energy, about as loud as sent. Silence, noise
// (undecryptable or lost packets) or the wrong tone fail.
func checkTone(t *testing.T, what string, got, sent wavPCM, tone float64) {
	t.Helper()
	if got.rate != 8000 || sent.rate != 8000 {
		t.Fatalf("%s: rates %d/%d, want 8000 (PCMU)", what, got.rate, sent.rate)
	}
	blocks, ref := blocks100ms(got), blocks100ms(sent)
	if len(blocks) < 10 || len(ref) < 10 {
		t.Fatalf("%s: %d/%d blocks of audio", what, len(blocks), len(ref))
	}
	var sentRMS float64
	for _, b := range ref {
		sentRMS += rms(b) / float64(len(ref))
	}
	if sentRMS < 1000 {
		t.Fatalf("%s: sent audio rms %.0f: the sine source is silent", what, sentRMS)
	}
	good := 0
	var bad []string
	for i, b := range blocks {
		best, bestF := 0.0, 0.0
		for f := 100.0; f < 3900; f += 10 {
			if p := goertzel(b, f, got.rate); p > best {
				best, bestF = p, f
			}
		}
		share, level := goertzel(b, tone, got.rate), rms(b)
		if math.Abs(bestF-tone) <= 10 && share >= 0.9 && level >= 0.7*sentRMS && level <= 1.3*sentRMS {
			good++
		} else if len(bad) < 5 {
			bad = append(bad, fmt.Sprintf("block %d: peak %.0f Hz, %.0f Hz share %.2f, rms %.0f", i, bestF, tone, share, level))
		}
	}
	t.Logf("%s: %d of %d blocks a clean %.0f Hz tone", what, good, len(blocks), tone)
	if good < len(blocks)*9/10 {
		t.Fatalf("%s: only %d of %d blocks carry the %.0f Hz tone: %s", what, good, len(blocks), tone, strings.Join(bad, "; "))
	}
}
