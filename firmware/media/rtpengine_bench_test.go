package media

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/pion/srtp/v3"
	"golang.org/x/net/ipv4"
)

// Side-by-side benchmark of our relay and Debian's rtpengine (user-space
// forwarding, --table=-1). Both run as separate processes fed by the same
// sender and receiver in this process, so the CPU time read from
// /proc/<pid>/stat is the relay's alone: packets per CPU-second is
// "packets/s per core". Our relay runs in a re-executed copy of this test
// binary (TestRelayProcessHelper), controlled over stdin/stdout.
//
//	go test -run '^$' -bench VsRTPEngine -benchtime 200000x ./firmware/media/

const relayHelperEnv = "EDGEPBX_MEDIA_RELAY_HELPER"

// relayProc is a relay running in another process.
type relayProc interface {
	// call sets up one call from a to b (SDES on a's leg when crypto is
	// set, plain RTP on b's) and returns the port a must send to.
	call(a, b netip.AddrPort, crypto string) (uint16, error)
	pid() int
	close()
}

// TestRelayProcessHelper is the relay process of the benchmarks; it does
// nothing unless started by them.
func TestRelayProcessHelper(t *testing.T) {
	if os.Getenv(relayHelperEnv) == "" {
		return
	}
	r := newTestRelayRange(t, 20000, 29999)
	ctx := context.Background()
	in := bufio.NewScanner(os.Stdin)
	var calls []*Call
	defer func() {
		for _, c := range calls {
			c.Close()
		}
	}()
	for n := 0; in.Scan(); n++ {
		f := strings.Fields(in.Text())
		if len(f) < 3 || f[0] != "call" {
			fmt.Println("err bad command")
			continue
		}
		a, errA := netip.ParseAddrPort(f[1])
		b, errB := netip.ParseAddrPort(f[2])
		if errA != nil || errB != nil {
			fmt.Println("err bad address")
			continue
		}
		c, err := r.NewCall(fmt.Sprint(n))
		if err != nil {
			fmt.Println("err", err)
			continue
		}
		calls = append(calls, c)
		pa := Peer{Addr: a.Addr(), RTPPort: a.Port(), RTCPMux: true}
		if len(f) > 3 {
			keys, ok, err := AnswerSDES([]string{strings.Join(f[3:], " ")}, sdes.Suites())
			if err != nil || !ok {
				fmt.Println("err sdes", err)
				continue
			}
			pa.SDES = &keys
		}
		if err := c.SetPeer(ctx, A, pa); err != nil {
			fmt.Println("err", err)
			continue
		}
		if err := c.SetPeer(ctx, B, Peer{Addr: b.Addr(), RTPPort: b.Port(), RTCPMux: true}); err != nil {
			fmt.Println("err", err)
			continue
		}
		fmt.Println("ok", c.LocalPort(A))
	}
}

type edgeProc struct {
	cmd   *exec.Cmd
	stdin io.Closer
	in    *bufio.Writer
	out   *bufio.Scanner
}

func startEdge(b *testing.B) *edgeProc {
	b.Helper()
	args := []string{"-test.run=^TestRelayProcessHelper$", "-test.count=1"}
	if prof := os.Getenv("EDGEPBX_MEDIA_RELAY_CPUPROFILE"); prof != "" {
		// Profiles the relay process alone (go tool pprof on the file).
		args = append(args, "-test.cpuprofile="+prof)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), relayHelperEnv+"=1")
	cmd.Stderr = os.Stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	r, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &edgeProc{cmd: cmd, stdin: w, in: bufio.NewWriter(w), out: bufio.NewScanner(r)}
	b.Cleanup(p.close)
	return p
}

func (p *edgeProc) call(a, b netip.AddrPort, crypto string) (uint16, error) {
	fmt.Fprintln(p.in, "call", a, b, crypto)
	if err := p.in.Flush(); err != nil {
		return 0, err
	}
	for p.out.Scan() {
		l := p.out.Text()
		if v, ok := strings.CutPrefix(l, "ok "); ok {
			n, err := strconv.ParseUint(v, 10, 16)
			return uint16(n), err
		}
		if strings.HasPrefix(l, "err") {
			return 0, errors.New(l)
		}
	}
	return 0, errors.New("relay helper exited")
}

func (p *edgeProc) pid() int { return p.cmd.Process.Pid }

func (p *edgeProc) close() {
	if p.cmd.ProcessState != nil {
		return
	}
	// End of input ends the helper cleanly (its calls closed, a profile
	// written); a helper that hangs is killed.
	p.stdin.Close()
	t := time.AfterFunc(10*time.Second, func() { p.cmd.Process.Kill() })
	p.cmd.Wait()
	t.Stop()
}

// rtpengineProc drives rtpengine over its ng control protocol (bencoded
// dictionaries over UDP).
type rtpengineProc struct {
	cmd  *exec.Cmd
	ng   *net.UDPConn
	addr *net.UDPAddr
	n    int
	errs bytes.Buffer
}

func startRTPEngine(b *testing.B) *rtpengineProc {
	b.Helper()
	path := netnstest.NeedTool(b, "rtpengine", "rtpengine")
	ng, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	// A free port for its control socket: take one and hand it over.
	tmp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	ngPort := tmp.LocalAddr().(*net.UDPAddr).Port
	tmp.Close()
	p := &rtpengineProc{ng: ng}
	p.cmd = exec.Command(path, "--config-file=none", "--foreground", "--log-stderr", "--log-level=3",
		"--table=-1", "--interface=127.0.0.1", fmt.Sprintf("--listen-ng=127.0.0.1:%d", ngPort),
		"--port-min=30000", "--port-max=39999", "--delete-delay=0")
	p.cmd.Stderr = &p.errs
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(p.close)
	p.addr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ngPort}
	// Wait until it answers a ping; the deadline only stops a hang.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := p.request(map[string]any{"command": "ping"}, 200*time.Millisecond); err == nil {
			return p
		}
		if time.Now().After(deadline) {
			b.Fatalf("rtpengine does not answer on its ng port: %s", p.errs.String())
		}
	}
}

func (p *rtpengineProc) request(msg map[string]any, wait time.Duration) (map[string]any, error) {
	p.n++
	cookie := fmt.Sprintf("c%d", p.n)
	if _, err := p.ng.WriteToUDP(append([]byte(cookie+" "), bencode(msg)...), p.addr); err != nil {
		return nil, err
	}
	buf := make([]byte, 65536)
	for {
		p.ng.SetReadDeadline(time.Now().Add(wait))
		n, err := p.ng.Read(buf)
		if err != nil {
			return nil, err
		}
		c, body, ok := bytes.Cut(buf[:n], []byte(" "))
		if !ok || string(c) != cookie {
			continue // a late reply to an earlier request
		}
		v, rest, err := bdecode(body)
		d, isDict := v.(map[string]any)
		if err != nil || len(rest) != 0 || !isDict {
			return nil, fmt.Errorf("ng reply %q: %v", body, err)
		}
		if d["result"] != "ok" && d["result"] != "pong" {
			return nil, fmt.Errorf("ng %v: %v %v", msg["command"], d["result"], d["error-reason"])
		}
		return d, nil
	}
}

var reAudioPort = regexp.MustCompile(`(?m)^m=audio (\d+) `)

func sdpFor(ap netip.AddrPort, crypto string) string {
	proto, extra := "RTP/AVP", ""
	if crypto != "" {
		proto, extra = "RTP/SAVP", "a=crypto:"+crypto+"\r\n"
	}
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\n"+
		"m=audio %[2]d %[3]s 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=sendrecv\r\n%[4]s", ap.Addr(), ap.Port(), proto, extra)
}

func (p *rtpengineProc) call(a, b netip.AddrPort, crypto string) (uint16, error) {
	id := fmt.Sprintf("bench-%d", p.n)
	offer := map[string]any{"command": "offer", "call-id": id, "from-tag": "a", "sdp": sdpFor(a, crypto),
		"transport-protocol": "RTP/AVP", "ICE": "remove", "rtcp-mux": []any{"accept"}}
	if _, err := p.request(offer, 5*time.Second); err != nil {
		return 0, err
	}
	ans, err := p.request(map[string]any{"command": "answer", "call-id": id, "from-tag": "a", "to-tag": "b",
		"sdp": sdpFor(b, ""), "ICE": "remove"}, 5*time.Second)
	if err != nil {
		return 0, err
	}
	sd, _ := ans["sdp"].(string)
	m := reAudioPort.FindStringSubmatch(sd)
	if m == nil {
		return 0, fmt.Errorf("no audio port in rtpengine's answer %q", sd)
	}
	n, err := strconv.ParseUint(m[1], 10, 16)
	return uint16(n), err
}

func (p *rtpengineProc) pid() int { return p.cmd.Process.Pid }

func (p *rtpengineProc) close() {
	if p.cmd.ProcessState != nil {
		return
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()
	p.ng.Close()
}

// bencode encodes strings, ints, lists and string-keyed dictionaries.
func bencode(v any) []byte {
	var b []byte
	switch v := v.(type) {
	case string:
		b = fmt.Appendf(b, "%d:%s", len(v), v)
	case int:
		b = fmt.Appendf(b, "i%de", v)
	case []any:
		b = append(b, 'l')
		for _, x := range v {
			b = append(b, bencode(x)...)
		}
		b = append(b, 'e')
	case map[string]any:
		b = append(b, 'd')
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			b = append(b, bencode(k)...)
			b = append(b, bencode(v[k])...)
		}
		b = append(b, 'e')
	default:
		panic(fmt.Sprintf("bencode: %T", v))
	}
	return b
}

// bdecode decodes one value and returns the rest of the input.
func bdecode(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errors.New("bencode: short")
	}
	switch c := b[0]; {
	case c == 'i':
		end := bytes.IndexByte(b, 'e')
		if end < 0 {
			return nil, nil, errors.New("bencode: bad int")
		}
		n, err := strconv.Atoi(string(b[1:end]))
		return n, b[end+1:], err
	case c == 'l' || c == 'd':
		var list []any
		rest := b[1:]
		for len(rest) > 0 && rest[0] != 'e' {
			var x any
			var err error
			if x, rest, err = bdecode(rest); err != nil {
				return nil, nil, err
			}
			list = append(list, x)
		}
		if len(rest) == 0 {
			return nil, nil, errors.New("bencode: unterminated")
		}
		if c == 'l' {
			return list, rest[1:], nil
		}
		if len(list)%2 != 0 {
			return nil, nil, errors.New("bencode: odd dictionary")
		}
		d := map[string]any{}
		for i := 0; i < len(list); i += 2 {
			k, ok := list[i].(string)
			if !ok {
				return nil, nil, errors.New("bencode: key not a string")
			}
			d[k] = list[i+1]
		}
		return d, rest[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b, ':')
		if colon < 0 {
			return nil, nil, errors.New("bencode: bad string")
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 || n > len(b)-colon-1 {
			return nil, nil, errors.New("bencode: bad string length")
		}
		return string(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
	}
	return nil, nil, fmt.Errorf("bencode: unexpected %q", b[0])
}

// procCPU is the process's user+system CPU time (all threads, dead ones
// included) from /proc/<pid>/stat.
func procCPU(tb testing.TB, pid int) time.Duration {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// Fields after the command name, which may contain spaces.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// procRSS is VmRSS in bytes.
func procRSS(tb testing.TB, pid int) int64 {
	tb.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS")
	return 0
}

// pushResult is one relay's run.
type pushResult struct {
	got  int64
	cpu  time.Duration
	wall time.Duration
}

func (r *pushResult) add(o pushResult) {
	r.got += o.got
	r.cpu += o.cpu
	r.wall += o.wall
}

// push sends n G.711-sized packets from a through relay port to to bb,
// with at most window in flight, and measures the relay process's CPU.
func push(b *testing.B, rp relayProc, secure bool, n int) pushResult {
	b.Helper()
	lo := netip.MustParseAddr("127.0.0.1")
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo.AsSlice()})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	bb, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo.AsSlice()})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	bb.SetReadBuffer(4 << 20)
	var enc *srtp.Context
	crypto := ""
	if secure {
		c, err := sdes.New(1, sdes.AES128CMSHA1_80)
		if err != nil {
			b.Fatal(err)
		}
		crypto = c.Marshal()
		if enc, err = srtp.CreateContext(c.Key, c.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
			b.Fatal(err)
		}
	}
	port, err := rp.call(a.LocalAddr().(*net.UDPAddr).AddrPort(), bb.LocalAddr().(*net.UDPAddr).AddrPort(), crypto)
	if err != nil {
		b.Fatal(err)
	}
	// rtpengine leaves its sockets' receive buffers at the default (about
	// 200 G.711 packets): more in flight and it drops bursts.
	const batchN, window = 32, 64
	var got atomic.Int64
	var bad atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc := ipv4.NewPacketConn(bb)
		ms := make([]ipv4.Message, batchN)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 1500)}
		}
		for got.Load() < int64(n) {
			// Only ends a run that lost packets; reported as loss.
			bb.SetReadDeadline(time.Now().Add(2 * time.Second))
			k, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			for i := range k {
				// Plain RTP must arrive: 12-byte header + 160-byte payload.
				if ms[i].N != 172 {
					bad.Add(1)
				}
			}
			got.Add(int64(k))
		}
	}()
	to := &net.UDPAddr{IP: lo.AsSlice(), Port: int(port)}
	pc := ipv4.NewPacketConn(a)
	ms := make([]ipv4.Message, batchN)
	bufs := make([][]byte, batchN)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 256)
	}
	pay := make([]byte, 160)
	rand.Read(pay)
	cpu0, t0 := procCPU(b, rp.pid()), time.Now()
	// Lost packets would hold the window shut forever: when nothing
	// arrives for 100 ms, what is in flight is written off as lost. Late
	// packets that arrive after all take their write-off back, so a relay
	// that was only descheduled is not flooded past the window.
	seq, sent, writtenOff := uint16(1), 0, int64(0)
send:
	for sent < n {
		last, since := got.Load(), time.Now()
		for {
			g := got.Load()
			writtenOff = min(writtenOff, int64(sent)-g)
			if int64(sent)-g-writtenOff <= window {
				break
			}
			if g != last {
				last, since = g, time.Now()
			} else if time.Since(since) > 100*time.Millisecond {
				writtenOff = int64(sent) - g
			}
			select {
			case <-done:
				break send // receiver heard nothing for 2 s
			default:
			}
			runtime.Gosched()
		}
		k := min(batchN, n-sent)
		for i := range k {
			p := append(bufs[i][:0], 0x80, 0, byte(seq>>8), byte(seq), 0, 0, byte(seq>>8), byte(seq), 0xca, 0xfe, 0xba, 0xbe)
			p = append(p, pay...)
			seq++
			if enc != nil {
				var err error
				if p, err = enc.EncryptRTP(nil, p, nil); err != nil {
					b.Fatal(err)
				}
			}
			ms[i] = ipv4.Message{Buffers: [][]byte{p}, Addr: to}
		}
		if _, err := pc.WriteBatch(ms[:k], 0); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
	<-done
	res := pushResult{got: got.Load(), wall: time.Since(t0), cpu: procCPU(b, rp.pid()) - cpu0}
	if bad.Load() != 0 {
		b.Fatalf("%d packets arrived with a wrong size (not plain RTP)", bad.Load())
	}
	return res
}

// BenchmarkVsRTPEngine relays the same RTP→RTP and SRTP→RTP streams
// through our relay and rtpengine in one run; b.N packets per stream.
func BenchmarkVsRTPEngine(b *testing.B) {
	for _, secure := range []bool{false, true} {
		name := "RTP-RTP"
		if secure {
			name = "SRTP-RTP"
		}
		b.Run(name, func(b *testing.B) {
			eng := startRTPEngine(b)
			edge := startEdge(b)
			b.ResetTimer()
			// The machine is shared: alternate the two relays over a few
			// rounds so a burst of other load hits both alike.
			const rounds = 4
			var re, rr pushResult
			for i := range rounds {
				k := b.N / rounds
				if i == rounds-1 {
					k = b.N - (rounds-1)*(b.N/rounds)
				}
				if k == 0 {
					continue
				}
				if i%2 == 0 {
					re.add(push(b, edge, secure, k))
					rr.add(push(b, eng, secure, k))
				} else {
					rr.add(push(b, eng, secure, k))
					re.add(push(b, edge, secure, k))
				}
			}
			b.StopTimer()
			perCore := func(r pushResult) float64 { return float64(r.got) / r.cpu.Seconds() }
			b.ReportMetric(perCore(re), "edgepbx-pkts/cpu-s")
			b.ReportMetric(perCore(rr), "rtpengine-pkts/cpu-s")
			b.ReportMetric(perCore(re)/perCore(rr), "ratio")
			b.ReportMetric(float64(re.got)/re.wall.Seconds(), "edgepbx-pkts/s")
			b.ReportMetric(float64(rr.got)/rr.wall.Seconds(), "rtpengine-pkts/s")
			b.ReportMetric(100*float64(int64(b.N)-re.got)/float64(b.N), "edgepbx-loss%")
			b.ReportMetric(100*float64(int64(b.N)-rr.got)/float64(b.N), "rtpengine-loss%")
		})
	}
}

// BenchmarkVsRTPEngineMemory sets up 1000 SRTP↔RTP calls (no media) in
// each relay and reports the growth of its resident set per call.
func BenchmarkVsRTPEngineMemory(b *testing.B) {
	const calls = 1000
	eng := startRTPEngine(b)
	edge := startEdge(b)
	for _, x := range []struct {
		name string
		rp   relayProc
	}{{"edgepbx", edge}, {"rtpengine", eng}} {
		c, err := sdes.New(1, sdes.AES128CMSHA1_80)
		if err != nil {
			b.Fatal(err)
		}
		rss0 := procRSS(b, x.rp.pid())
		for i := range calls {
			a := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(2000+2*(i%1000)))
			bb := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(4000+2*(i%1000)))
			if _, err := x.rp.call(a, bb, c.Marshal()); err != nil {
				b.Fatalf("%s call %d: %v", x.name, i, err)
			}
		}
		b.ReportMetric(float64(procRSS(b, x.rp.pid())-rss0)/calls, x.name+"-rss-B/call")
	}
}

// pushCalls relays calls simultaneous G.711 streams (one 172-byte packet
// per call every 20 ms, SRTP on leg A when secure) through rp for ticks
// periods and measures the relay process's CPU. Unlike push, each socket
// sees one packet per period, as with real phones: the figure is the cost
// per packet when the relay serves many calls, not one burst.
func pushCalls(b *testing.B, rp relayProc, secure bool, calls, ticks int) pushResult {
	b.Helper()
	lo := net.IPv4(127, 0, 0, 1)
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo})
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	bb, err := net.ListenUDP("udp", &net.UDPAddr{IP: lo})
	if err != nil {
		b.Fatal(err)
	}
	defer bb.Close()
	bb.SetReadBuffer(4 << 20)
	encs := make([]*srtp.Context, calls)
	dsts := make([]*net.UDPAddr, calls)
	for i := range calls {
		crypto := ""
		if secure {
			c, err := sdes.New(1, sdes.AES128CMSHA1_80)
			if err != nil {
				b.Fatal(err)
			}
			crypto = c.Marshal()
			if encs[i], err = srtp.CreateContext(c.Key, c.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80); err != nil {
				b.Fatal(err)
			}
		}
		port, err := rp.call(a.LocalAddr().(*net.UDPAddr).AddrPort(), bb.LocalAddr().(*net.UDPAddr).AddrPort(), crypto)
		if err != nil {
			b.Fatalf("call %d: %v", i, err)
		}
		dsts[i] = &net.UDPAddr{IP: lo, Port: int(port)}
	}
	want := int64(calls * ticks)
	var got, bad atomic.Int64
	sending := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc := ipv4.NewPacketConn(bb)
		ms := make([]ipv4.Message, 64)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 1500)}
		}
		for got.Load() < want {
			// Once sending ended, 1 s of silence means the rest is lost.
			bb.SetReadDeadline(time.Now().Add(time.Second))
			k, err := pc.ReadBatch(ms, 0)
			if err != nil {
				select {
				case <-sending:
					return
				default:
					continue
				}
			}
			for i := range k {
				if ms[i].N != 172 {
					bad.Add(1)
				}
			}
			got.Add(int64(k))
		}
	}()
	pay := make([]byte, 160)
	rand.Read(pay)
	pc := ipv4.NewPacketConn(a)
	ms := make([]ipv4.Message, 0, 64)
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 256)
	}
	flush := func() {
		for len(ms) > 0 {
			n, err := pc.WriteBatch(ms, 0)
			if err != nil {
				b.Fatal(err)
			}
			ms = ms[n:]
		}
		ms = ms[:0]
	}
	cpu0, t0 := procCPU(b, rp.pid()), time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	for t := range ticks {
		<-tick.C
		seq := uint16(t + 1)
		for i := range calls {
			p := append(bufs[len(ms)][:0], 0x80, 0, byte(seq>>8), byte(seq), 0, 0, byte(seq>>8), byte(seq), 0, 0, byte(i>>8), byte(i))
			p = append(p, pay...)
			if encs[i] != nil {
				if p, err = encs[i].EncryptRTP(nil, p, nil); err != nil {
					b.Fatal(err)
				}
			}
			ms = append(ms, ipv4.Message{Buffers: [][]byte{p}, Addr: dsts[i]})
			if len(ms) == cap(ms) {
				flush()
			}
		}
		flush()
	}
	tick.Stop()
	close(sending)
	<-done
	res := pushResult{got: got.Load(), wall: time.Since(t0), cpu: procCPU(b, rp.pid()) - cpu0}
	if bad.Load() != 0 {
		b.Fatalf("%d packets arrived with a wrong size (not plain RTP)", bad.Load())
	}
	return res
}

// BenchmarkVsRTPEngineCalls relays 1000 simultaneous calls (50,000
// packets/s) through our relay and rtpengine, alternating, for 2 s of
// media per round and relay; b.N rounds (run with -benchtime 2x; each
// round adds 1000 calls to both relays' port ranges).
func BenchmarkVsRTPEngineCalls(b *testing.B) {
	const calls, ticks = 1000, 100
	for _, secure := range []bool{false, true} {
		name := "RTP-RTP"
		if secure {
			name = "SRTP-RTP"
		}
		b.Run(name, func(b *testing.B) {
			eng := startRTPEngine(b)
			edge := startEdge(b)
			var re, rr pushResult
			b.ResetTimer()
			for i := range b.N {
				if i%2 == 0 {
					re.add(pushCalls(b, edge, secure, calls, ticks))
					rr.add(pushCalls(b, eng, secure, calls, ticks))
				} else {
					rr.add(pushCalls(b, eng, secure, calls, ticks))
					re.add(pushCalls(b, edge, secure, calls, ticks))
				}
			}
			b.StopTimer()
			want := float64(b.N * calls * ticks)
			perCore := func(r pushResult) float64 { return float64(r.got) / r.cpu.Seconds() }
			b.ReportMetric(perCore(re), "edgepbx-pkts/cpu-s")
			b.ReportMetric(perCore(rr), "rtpengine-pkts/cpu-s")
			b.ReportMetric(perCore(re)/perCore(rr), "ratio")
			b.ReportMetric(100*(want-float64(re.got))/want, "edgepbx-loss%")
			b.ReportMetric(100*(want-float64(rr.got))/want, "rtpengine-loss%")
			// Offered rate actually reached (the sender shares the cores).
			b.ReportMetric(want/re.wall.Seconds(), "edgepbx-offered-pkts/s")
		})
	}
}
