package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// baresipModules is where Debian's baresip-core installs its modules.
const baresipModules = "/usr/lib/baresip/modules"

// needBaresip skips (fails with CI set) when Debian's baresip-core with
// the modules the test loads is missing.
func needBaresip(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("baresip")
	if err == nil {
		for _, m := range []string{"g711", "ausine", "aubridge", "sndfile", "srtp", "dtls_srtp", "account", "menu", "ctrl_tcp"} {
			if _, err = os.Stat(filepath.Join(baresipModules, m+".so")); err != nil {
				break
			}
		}
	}
	if err == nil {
		return bin
	}
	netnstest.Unavailable(t, "needs baresip (Debian package baresip-core) with its modules: %v", err)
	return ""
}

// TestBaresipCalls runs the real binary in dev mode and two real phones
// (Debian's baresip, headless: a sine source, audio recorded to WAV by
// the sndfile filter) calling each other through the box, once with SDES
// on both legs and once with DTLS-SRTP toward the caller (the box offers
// SDES toward the callee, so the relay bridges DTLS-SRTP↔SDES). Each side
// sends its own tone; each side's decoded audio must be the other's tone,
// and the CDR must report both legs encrypted.
func TestBaresipCalls(t *testing.T) {
	bin := needBaresip(t)
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	api := claimBox(t, base, fp, code)
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002", "1003", "1004", "1005", "1006"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}

	// Distinct extensions per case: the CDRs tell the cases apart by From.
	// Toward the callee the box (policy SRTPOptional) offers SDES keys on
	// RTP/AVP, which baresip takes with mediaenc=srtp; srtp-mand answers
	// such an offer with 488.
	// A DTLS-SRTP caller's callee is offered DTLS-SRTP first; baresip with
	// mediaenc=srtp refuses that INVITE (488 "No audio codecs"), and the box
	// offers SDES next, which it takes.
	cases := []struct {
		name                 string
		caller, callee       string
		callerEnc, calleeEnc string // baresip mediaenc
		calleeRefusesFirst   bool
	}{
		{"SDES", "1001", "1002", "srtp-mand", "srtp", false},             // RTP/SAVP offer to the box
		{"SDES-best-effort", "1005", "1006", "srtp", "srtp", false},      // keys on RTP/AVP to the box
		{"DTLS-SRTP-to-SDES", "1003", "1004", "dtls_srtp", "srtp", true}, // UDP/TLS/RTP/SAVP to the box
	}
	const callerTone, calleeTone = 440, 1000
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			a := startBaresip(ctx, t, bin, tc.caller, pw[tc.caller], tc.callerEnc, callerTone, udp.Port)
			b := startBaresip(ctx, t, bin, tc.callee, pw[tc.callee], tc.calleeEnc, calleeTone, udp.Port)
			a.waitRegistered(ctx, t)
			b.waitRegistered(ctx, t)

			a.command(ctx, t, "dial", fmt.Sprintf("sip:%s@127.0.0.1:%d", tc.callee, udp.Port))
			a.waitEvent(ctx, t, "CALL_ESTABLISHED")
			if tc.calleeRefusesFirst {
				b.waitEvent(ctx, t, "CALL_CLOSED")
			}
			b.waitEvent(ctx, t, "CALL_ESTABLISHED")
			// Two seconds of decoded audio on both sides.
			a.waitAudio(ctx, t, 2*time.Second)
			b.waitAudio(ctx, t, 2*time.Second)
			a.command(ctx, t, "hangup", "")
			a.waitEvent(ctx, t, "CALL_CLOSED")
			b.waitEvent(ctx, t, "CALL_CLOSED")
			a.stop(t) // sndfile completes the WAV headers on exit
			b.stop(t)
			// Each phone says it encrypted: its own word for what it saw
			// of the box's keys or certificate.
			for _, side := range []struct {
				b   *baresip
				enc string
			}{{a, tc.callerEnc}, {b, tc.calleeEnc}} {
				for _, want := range secureMarks[side.enc] {
					if !strings.Contains(side.b.log(), want) {
						t.Errorf("baresip %s (%s) never logged %q:\n%s", side.b.user, side.enc, want, side.b.log())
					}
				}
			}

			// What each side decoded is the other side's tone, as loud as sent.
			checkTone(t, "callee hears caller", b.wav(t, "dec"), a.wav(t, "enc"), callerTone)
			checkTone(t, "caller hears callee", a.wav(t, "dec"), b.wav(t, "enc"), calleeTone)
		})
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.OpenAt(t, filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	recs, err := cdr.New(db).Range(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		n := 0
		for _, r := range recs {
			if r.From != tc.caller {
				continue
			}
			n++
			if r.To != tc.callee || r.Result != cdr.Answered || !r.SRTPCaller || !r.SRTPCallee {
				t.Errorf("%s: CDR %+v: want answered with SRTP on both legs", tc.name, r)
			}
		}
		if n != 1 {
			t.Errorf("%s: %d CDRs from %s in %+v", tc.name, n, tc.caller, recs)
		}
	}
}

// secureMarks are what baresip 1.0 logs once media encryption mediaenc
// is up on a call.
var secureMarks = map[string][]string{
	"srtp":      {"srtp: audio: SRTP is Enabled"},
	"srtp-mand": {"srtp: audio: SRTP is Enabled"},
	"dtls_srtp": {"dtls_srtp: verified sha-256 fingerprint OK", "DTLS-SRTP complete"},
}

// baresip is one running baresip with its ctrl_tcp connection.
type baresip struct {
	user   string
	dir    string
	cmd    *exec.Cmd
	done   chan struct{}
	conn   net.Conn
	events chan map[string]any
	resps  chan map[string]any
	seen   []string // event types, for failure messages
}

// freeSIPPort finds a loopback port free for UDP and TCP with the next
// one free for TCP too: baresip listens for SIP on UDP and TCP at the
// port and for SIP/TLS at port+1.
func freeSIPPort(t *testing.T) int {
	t.Helper()
	for range 50 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		var ls []net.Listener
		ok := port < 65535
		for _, p := range []int{port, port + 1} {
			if !ok {
				break
			}
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
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
	t.Fatal("no free SIP port pair")
	return 0
}

// startBaresip starts baresip for user registering at the box's SIP port,
// with media encryption enc and a sine source of tone Hz, and connects to
// its ctrl_tcp socket.
func startBaresip(ctx context.Context, t *testing.T, bin, user, pass, enc string, tone, boxPort int) *baresip {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "baresip-"+user)
	if err := os.MkdirAll(filepath.Join(dir, "rec"), 0o700); err != nil {
		t.Fatal(err)
	}
	sipPort, ctrlPort := freeSIPPort(t), netnstest.FreePort(t, "tcp")
	// No ICE/STUN/TURN modules; net_interface keeps SDP and media on
	// loopback; ausine only makes 48 kHz stereo, resampled to PCMU's 8 kHz
	// mono; aubridge is a player that needs no sound card.
	config := fmt.Sprintf(`poll_method epoll
sip_listen 127.0.0.1:%d
net_interface 127.0.0.1
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
module dtls_srtp.so
module_tmp account.so
module_app menu.so
module_app ctrl_tcp.so
ctrl_tcp_listen 127.0.0.1:%[2]d
snd_path %[6]s
`, sipPort, ctrlPort, user, tone, baresipModules, filepath.Join(dir, "rec"))
	account := fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=%s;answermode=auto;audio_codecs=PCMU;regint=300\n",
		user, boxPort, pass, enc)
	for name, body := range map[string]string{"config": config, "accounts": account} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	b := &baresip{user: user, dir: dir, cmd: exec.Command(bin, "-f", dir), done: make(chan struct{}),
		events: make(chan map[string]any, 1024), resps: make(chan map[string]any, 8)}
	b.cmd.Stdout, b.cmd.Stderr = logf, logf
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = b.cmd.Wait(); logf.Close(); close(b.done) }()
	t.Cleanup(func() {
		if b.conn != nil {
			b.conn.Close()
		}
		b.kill()
	})
	for b.conn == nil {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", ctrlPort))
		if err == nil {
			b.conn = c
			break
		}
		select {
		case <-b.done:
			t.Fatalf("baresip %s exited:\n%s", user, b.log())
		case <-ctx.Done():
			t.Fatalf("baresip %s: no ctrl_tcp: %v\n%s", user, err, b.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	go b.read()
	return b
}

func (b *baresip) log() string {
	out, _ := os.ReadFile(filepath.Join(b.dir, "log"))
	return string(out)
}

// kill ends baresip if it still runs.
func (b *baresip) kill() {
	select {
	case <-b.done:
	default:
		_ = b.cmd.Process.Kill()
		<-b.done
	}
}

// stop asks baresip to exit (SIGTERM) and waits for it.
func (b *baresip) stop(t *testing.T) {
	t.Helper()
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(10 * time.Second):
		b.kill()
		t.Fatalf("baresip %s ignored SIGTERM:\n%s", b.user, b.log())
	}
}

// maxNetstring bounds one ctrl_tcp message.
const maxNetstring = 1 << 20

// read splits ctrl_tcp's netstrings ("<len>:<json>,") into events and
// command responses.
func (b *baresip) read() {
	defer close(b.events)
	r := bufio.NewReader(b.conn)
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
			b.resps <- m
		case m["event"] == true:
			b.events <- m
		}
	}
}

// command runs a baresip command and returns its output.
func (b *baresip) command(ctx context.Context, t *testing.T, cmd, params string) string {
	t.Helper()
	req := map[string]string{"command": cmd, "token": cmd}
	if params != "" {
		req["params"] = params
	}
	js, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(b.conn, "%d:%s,", len(js), js); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-b.resps:
		data, _ := m["data"].(string)
		if m["ok"] != true {
			t.Fatalf("baresip %s: %s %s: %s\n%s", b.user, cmd, params, data, b.log())
		}
		return data
	case <-ctx.Done():
		t.Fatalf("baresip %s: %s: no answer\n%s", b.user, cmd, b.log())
	}
	return ""
}

// waitEvent waits for a ctrl_tcp event of type typ; a call that closes
// first fails the test.
func (b *baresip) waitEvent(ctx context.Context, t *testing.T, typ string) {
	t.Helper()
	for {
		select {
		case m, ok := <-b.events:
			if !ok {
				t.Fatalf("baresip %s: ctrl_tcp closed waiting for %s (events %v)\n%s", b.user, typ, b.seen, b.log())
			}
			got, _ := m["type"].(string)
			b.seen = append(b.seen, got)
			if got == typ {
				return
			}
			if got == "CALL_CLOSED" {
				t.Fatalf("baresip %s: call closed (%v) waiting for %s (events %v)\n%s", b.user, m["param"], typ, b.seen, b.log())
			}
		case <-ctx.Done():
			t.Fatalf("baresip %s: no %s (events %v)\n%s", b.user, typ, b.seen, b.log())
		}
	}
}

// waitRegistered polls reginfo until the account's registration is OK
// (it may complete before ctrl_tcp is connected, so its event can be gone).
func (b *baresip) waitRegistered(ctx context.Context, t *testing.T) {
	t.Helper()
	for {
		out := b.command(ctx, t, "reginfo", "")
		if strings.Contains(out, "OK") {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("baresip %s not registered: %q\n%s", b.user, out, b.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// recording is the path of the sndfile dump of direction ("enc": what
// this side sent, "dec": what it decoded from the network).
func (b *baresip) recording(dir string) (string, error) {
	m, err := filepath.Glob(filepath.Join(b.dir, "rec", "dump-*-"+dir+".wav"))
	if err != nil {
		return "", err
	}
	if len(m) != 1 {
		return "", fmt.Errorf("%d %s recordings", len(m), dir)
	}
	return m[0], nil
}

// waitAudio waits until this side's decoded recording holds d of 8 kHz
// 16-bit audio.
func (b *baresip) waitAudio(ctx context.Context, t *testing.T, d time.Duration) {
	t.Helper()
	want := int64(44 + 2*8000*d/time.Second)
	for {
		var size int64
		path, err := b.recording("dec")
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
			t.Fatalf("baresip %s: %d of %d bytes of decoded audio (%v)\n%s", b.user, size, want, err, b.log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *baresip) wav(t *testing.T, dir string) wavPCM {
	t.Helper()
	path, err := b.recording(dir)
	if err != nil {
		t.Fatalf("baresip %s: %v", b.user, err)
	}
	w, err := readWAV(path)
	if err != nil {
		t.Fatalf("baresip %s: %v", b.user, err)
	}
	return w
}

// wavPCM is mono 16-bit PCM.
type wavPCM struct {
	rate    int
	samples []int16
}

// readWAV reads a mono 16-bit PCM RIFF/WAVE file.
func readWAV(path string) (wavPCM, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return wavPCM{}, err
	}
	if len(raw) < 12 || string(raw[:4]) != "RIFF" || string(raw[8:12]) != "WAVE" {
		return wavPCM{}, fmt.Errorf("%s: not a WAV file", path)
	}
	var w wavPCM
	fmtSeen := false
	for p := 12; p+8 <= len(raw); {
		id, size := string(raw[p:p+4]), int(binary.LittleEndian.Uint32(raw[p+4:]))
		body := raw[p+8:]
		if size > len(body) || size < 0 {
			size = len(body) // a header never completed
		}
		body = body[:size]
		switch id {
		case "fmt ":
			if len(body) < 16 {
				return wavPCM{}, fmt.Errorf("%s: short fmt chunk", path)
			}
			format, ch := binary.LittleEndian.Uint16(body), binary.LittleEndian.Uint16(body[2:])
			bits := binary.LittleEndian.Uint16(body[14:])
			if format != 1 || ch != 1 || bits != 16 {
				return wavPCM{}, fmt.Errorf("%s: format %d, %d channels, %d bits: want mono 16-bit PCM", path, format, ch, bits)
			}
			w.rate = int(binary.LittleEndian.Uint32(body[4:]))
			fmtSeen = true
		case "data":
			if !fmtSeen {
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

// goertzel is the power of x at freq Hz, normalised so that a pure sine
// at freq gives its share 1 of the block's energy: 2|X(f)|² / (N·Σx²).
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
	power := s1*s1 + s2*s2 - c*s1*s2
	return 2 * power / (float64(len(x)) * energy)
}

func rms(x []float64) float64 {
	var e float64
	for _, v := range x {
		e += v * v
	}
	return math.Sqrt(e / float64(len(x)))
}

// steady is the audio after the first half second (jitter buffer fill,
// call set-up), in 100 ms blocks, trailing partial block dropped.
func steady(w wavPCM) [][]float64 {
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

// toneBlocks counts the 100 ms blocks of got, one side's decoded audio,
// that are the other side's sent tone: the strongest frequency in a 10 Hz
// scan of the voice band is tone Hz, it holds at least 90 % of the
// block's energy (a corrupted, undecrypted or missing frame is noise or
// silence) and the block is about as loud as what was sent.
func toneBlocks(got, sent wavPCM, tone float64) (good, total int, sentRMS float64, bad []string, err error) {
	if got.rate != 8000 || sent.rate != 8000 {
		return 0, 0, 0, nil, fmt.Errorf("rates %d/%d, want 8000 (PCMU)", got.rate, sent.rate)
	}
	blocks, ref := steady(got), steady(sent)
	if len(blocks) < 10 || len(ref) < 10 {
		return 0, 0, 0, nil, fmt.Errorf("%d/%d blocks of audio", len(blocks), len(ref))
	}
	for _, b := range ref {
		sentRMS += rms(b) / float64(len(ref))
	}
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
	return good, len(blocks), sentRMS, bad, nil
}

// checkTone requires nearly all of got's blocks to be the sent tone.
func checkTone(t *testing.T, what string, got, sent wavPCM, tone float64) {
	t.Helper()
	good, total, sentRMS, bad, err := toneBlocks(got, sent, tone)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Logf("%s: %d of %d blocks a clean %.0f Hz tone (sent rms %.0f)", what, good, total, tone, sentRMS)
	if sentRMS < 1000 {
		t.Fatalf("%s: sent audio rms %.0f: the sine source is silent", what, sentRMS)
	}
	if good < total*9/10 {
		t.Fatalf("%s: only %d of %d blocks carry the %.0f Hz tone: %s", what, good, total, tone, strings.Join(bad, "; "))
	}
}

// TestToneBlocks: the audio check tells the sent tone from another tone,
// noise (what undecrypted or corrupted PCMU sounds like), silence, and a
// tone with every other frame lost or garbled.
func TestToneBlocks(t *testing.T) {
	const n = 3 * 8000
	sine := func(f float64) []int16 {
		x := make([]int16, n)
		for i := range x {
			x[i] = int16(10000 * math.Sin(2*math.Pi*f*float64(i)/8000))
		}
		return x
	}
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(x []int16, from, every int) []int16 { // garble 20 ms frames
		y := slices.Clone(x)
		for f := from; f*160 < len(y); f += every {
			for i := f * 160; i < min((f+1)*160, len(y)); i++ {
				y[i] = int16(rng.IntN(30000) - 15000)
			}
		}
		return y
	}
	sent := wavPCM{rate: 8000, samples: sine(440)}
	cases := []struct {
		name    string
		got     []int16
		minGood int // of 25 blocks
		maxGood int
	}{
		{"the tone", sine(440), 25, 25},
		{"quieter by half", func() []int16 {
			x := sine(440)
			for i := range x {
				x[i] /= 2
			}
			return x
		}(), 0, 0},
		{"another tone", sine(1000), 0, 0},
		{"noise", noise(make([]int16, n), 0, 1), 0, 0},
		{"silence", make([]int16, n), 0, 0},
		{"every other frame garbled", noise(sine(440), 0, 2), 0, 0},
		{"one frame in ten garbled", noise(sine(440), 3, 10), 0, 13}, // every other block holds one
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good, total, _, _, err := toneBlocks(wavPCM{rate: 8000, samples: tc.got}, sent, 440)
			if err != nil {
				t.Fatal(err)
			}
			if total != 25 || good < tc.minGood || good > tc.maxGood {
				t.Fatalf("%d of %d blocks good, want %d..%d", good, total, tc.minGood, tc.maxGood)
			}
		})
	}
}
