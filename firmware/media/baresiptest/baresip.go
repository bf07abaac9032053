// Package baresiptest runs Debian's baresip as a headless test phone (a
// sine source, what it sends and decodes recorded to WAV by the sndfile
// filter), drives it over ctrl_tcp, and checks that recorded audio is the
// tone the other side sent. The daemon's tests and the QEMU end-to-end
// tests share it.
package baresiptest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// Modules is where Debian's baresip-core installs its modules.
const Modules = "/usr/lib/baresip/modules"

// baseModules are the modules every phone loads.
var baseModules = []string{"g711", "ausine", "aubridge", "sndfile", "srtp", "account", "menu", "ctrl_tcp"}

// Need returns baresip's path; when it or one of its modules (the base ones
// and extra, e.g. "dtls_srtp") is missing the test skips with the reason,
// or fails under CI (netnstest.Unavailable's rule).
func Need(tb testing.TB, extra ...string) string {
	tb.Helper()
	bin, err := exec.LookPath("baresip")
	if err == nil {
		for _, m := range append(baseModules[:len(baseModules):len(baseModules)], extra...) {
			if _, err = os.Stat(filepath.Join(Modules, m+".so")); err != nil {
				break
			}
		}
	}
	if err == nil {
		return bin
	}
	netnstest.Unavailable(tb, "needs baresip (Debian package baresip-core) with its modules: %v", err)
	return ""
}

// Config is what differs between phones.
type Config struct {
	Name     string   // for its directory, players and failure messages
	Local    net.IP   // address it listens and sends RTP from; nil is 127.0.0.1
	Accounts []string // baresip account lines
	Tone     int      // Hz of the sine it sends
	CAFile   string   // trusted CA for SIP over TLS, if any
	Modules  []string // modules loaded beyond the base ones, e.g. "dtls_srtp"
}

// Phone is one running baresip with its ctrl_tcp connection.
type Phone struct {
	Name   string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	conn   net.Conn
	events chan map[string]any
	resps  chan map[string]any
	seen   []string // event types, for failure messages
}

// freeSIPPort finds a port at ip free for UDP and TCP with the next one
// free for TCP too: baresip listens for SIP on UDP and TCP at the port and
// for SIP/TLS at port+1.
func freeSIPPort(tb testing.TB, ip net.IP) int {
	tb.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), "0"))
		if err != nil {
			tb.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		var ls []net.Listener
		ok := port < 65535
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
	tb.Fatal("no free SIP port pair")
	return 0
}

// config is baresip's config file for pc. No ICE/STUN/TURN modules;
// net_interface keeps SDP and media on the local address; ausine only
// makes 48 kHz stereo, resampled to PCMU's 8 kHz mono; aubridge is a player
// that needs no sound card.
func config(pc Config, local net.IP, sipPort, ctrlPort int, recDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "poll_method epoll\nsip_listen %s\n", net.JoinHostPort(local.String(), strconv.Itoa(sipPort)))
	if pc.CAFile != "" {
		fmt.Fprintf(&b, "sip_cafile %s\n", pc.CAFile)
	}
	fmt.Fprintf(&b, `net_interface %[1]s
call_local_timeout 20
audio_player aubridge,play%[2]s
audio_alert aubridge,alert%[2]s
audio_source ausine,%[3]d
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
auplay_channels 1
rtcp_mux no
jitter_buffer_delay 1-10
module_path %[4]s
module g711.so
module sndfile.so
module ausine.so
module aubridge.so
module srtp.so
`, local, pc.Name, pc.Tone, Modules)
	for _, m := range pc.Modules {
		fmt.Fprintf(&b, "module %s.so\n", m)
	}
	fmt.Fprintf(&b, `module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:%d
snd_path %s
`, ctrlPort, recDir)
	return b.String()
}

// Start starts baresip (bin, from Need) for pc and connects to its ctrl_tcp
// socket; the test's cleanup kills it.
func Start(ctx context.Context, tb testing.TB, bin string, pc Config) *Phone {
	tb.Helper()
	local := pc.Local
	if local == nil {
		local = net.IPv4(127, 0, 0, 1)
	}
	dir := filepath.Join(tb.TempDir(), "baresip-"+pc.Name)
	if err := os.MkdirAll(filepath.Join(dir, "rec"), 0o700); err != nil {
		tb.Fatal(err)
	}
	sipPort, ctrlPort := freeSIPPort(tb, local), netnstest.FreePort(tb, "tcp")
	files := map[string]string{
		"config":   config(pc, local, sipPort, ctrlPort, filepath.Join(dir, "rec")),
		"accounts": strings.Join(pc.Accounts, "\n") + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		tb.Fatal(err)
	}
	p := &Phone{Name: pc.Name, dir: dir, cmd: exec.Command(bin, "-f", dir), done: make(chan struct{}),
		events: make(chan map[string]any, 1024), resps: make(chan map[string]any, 8)}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	tb.Cleanup(func() {
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
			tb.Fatalf("baresip %s exited:\n%s", pc.Name, p.Log())
		case <-ctx.Done():
			tb.Fatalf("baresip %s: no ctrl_tcp: %v\n%s", pc.Name, err, p.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	go p.read()
	return p
}

// Log is what baresip has written to stdout and stderr so far.
func (p *Phone) Log() string {
	out, _ := os.ReadFile(filepath.Join(p.dir, "log"))
	return string(out)
}

// kill ends baresip if it still runs.
func (p *Phone) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Stop asks baresip to exit (SIGTERM, so sndfile completes its WAV
// headers) and waits for it.
func (p *Phone) Stop(tb testing.TB) {
	tb.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.kill()
		tb.Fatalf("baresip %s ignored SIGTERM:\n%s", p.Name, p.Log())
	}
}

// maxNetstring bounds one ctrl_tcp message.
const maxNetstring = 1 << 20

// read splits ctrl_tcp's netstrings ("<len>:<json>,") into events and
// command responses.
func (p *Phone) read() {
	defer close(p.events)
	r := bufio.NewReader(p.conn)
	for {
		head, err := r.ReadString(':')
		if err != nil || len(head) > 8 {
			return
		}
		n, err := strconv.Atoi(head[:len(head)-1])
		if err != nil || n < 0 || n > maxNetstring {
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

// Command runs a baresip command and returns its output.
func (p *Phone) Command(ctx context.Context, tb testing.TB, cmd, params string) string {
	tb.Helper()
	req := map[string]string{"command": cmd, "token": cmd}
	if params != "" {
		req["params"] = params
	}
	js, err := json.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := fmt.Fprintf(p.conn, "%d:%s,", len(js), js); err != nil {
		tb.Fatal(err)
	}
	select {
	case m := <-p.resps:
		data, _ := m["data"].(string)
		if m["ok"] != true {
			tb.Fatalf("baresip %s: %s %s: %s\n%s", p.Name, cmd, params, data, p.Log())
		}
		return data
	case <-ctx.Done():
		tb.Fatalf("baresip %s: %s: no answer\n%s", p.Name, cmd, p.Log())
	}
	return ""
}

// WaitEvent waits for a ctrl_tcp event of type typ; a call that closes
// first fails the test.
func (p *Phone) WaitEvent(ctx context.Context, tb testing.TB, typ string) {
	tb.Helper()
	for {
		select {
		case m, ok := <-p.events:
			if !ok {
				tb.Fatalf("baresip %s: ctrl_tcp closed waiting for %s (events %v)\n%s", p.Name, typ, p.seen, p.Log())
			}
			got, _ := m["type"].(string)
			p.seen = append(p.seen, got)
			if got == typ {
				return
			}
			if got == "CALL_CLOSED" {
				tb.Fatalf("baresip %s: call closed (%v) waiting for %s (events %v)\n%s", p.Name, m["param"], typ, p.seen, p.Log())
			}
		case <-ctx.Done():
			tb.Fatalf("baresip %s: no %s (events %v)\n%s", p.Name, typ, p.seen, p.Log())
		}
	}
}

// WaitRegistered polls reginfo until n accounts show OK (a registration
// may complete before ctrl_tcp is connected, so its event can be gone).
func (p *Phone) WaitRegistered(ctx context.Context, tb testing.TB, n int) {
	tb.Helper()
	for {
		out := p.Command(ctx, tb, "reginfo", "")
		if strings.Count(out, "OK") >= n {
			return
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("baresip %s: not all %d accounts registered: %q\n%s", p.Name, n, out, p.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// recording is the path of the sndfile dump of direction ("enc": what
// this side sent, "dec": what it decoded from the network).
func (p *Phone) recording(dir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(p.dir, "rec", "dump-*-"+dir+".wav"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("%d %s recordings", len(m), dir)
	}
	return m[0], nil
}

// WaitAudio waits until this side's decoded recording holds d of 8 kHz
// 16-bit audio.
func (p *Phone) WaitAudio(ctx context.Context, tb testing.TB, d time.Duration) {
	tb.Helper()
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
			tb.Fatalf("baresip %s: %d of %d bytes of decoded audio (%v)\n%s", p.Name, size, want, err, p.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// WAV reads the recording of direction dir ("enc" or "dec"); call it after
// Stop, which completes the headers.
func (p *Phone) WAV(tb testing.TB, dir string) PCM {
	tb.Helper()
	path, err := p.recording(dir)
	if err != nil {
		tb.Fatalf("baresip %s: %v", p.Name, err)
	}
	w, err := ReadWAV(path)
	if err != nil {
		tb.Fatalf("baresip %s: %v", p.Name, err)
	}
	return w
}
