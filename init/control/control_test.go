package control

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/netfw"
	"github.com/edgepbx/edgepbx/netfw/fwspec"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

const childEnv = "CONTROL_TEST_DIAL"

func TestMain(m *testing.M) {
	if path := os.Getenv(childEnv); path != "" {
		os.Exit(dialChild(path))
	}
	os.Exit(m.Run())
}

// dialChild sends one Health request and prints what came back.
func dialChild(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println("dial:", err)
		return 1
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	// The server may close before or after our write: either way no reply.
	err = WriteFrame(c, TypeHealth, []byte(`{"ready":true}`))
	var f Frame
	if err == nil {
		f, err = ReadFrame(c)
	}
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE):
		fmt.Println("closed-without-reply")
	case err != nil:
		fmt.Println("read:", err)
	default:
		fmt.Printf("reply %v %s\n", f.Type, f.Payload)
	}
	return 0
}

// memFirewall keeps firewall state in memory: the control tests are about
// the protocol; netfw's own tests run the real nftables.
type memFirewall struct {
	mu       sync.Mutex
	pinholes map[netfw.Pinhole]bool
	bans     map[netip.Prefix]netfw.Ban
	calls    int
	// belowFloor counts requests that reached the firewall although they
	// break fwspec's floors or are not in canonical (unmapped) form.
	belowFloor int
}

// state is what the firewall holds, for "a refusal changes nothing".
func (m *memFirewall) state() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprint(m.pinholes, m.bans)
}

func newMemFirewall() *memFirewall {
	return &memFirewall{pinholes: map[netfw.Pinhole]bool{}, bans: map[netip.Prefix]netfw.Ban{}}
}

func (m *memFirewall) checkPinhole(p netfw.Pinhole) {
	if a, err := fwspec.PinholeRemote(p.Remote); err != nil || a != p.Remote || fwspec.PinholePort(p.LocalPort) != nil {
		m.belowFloor++
	}
}

func (m *memFirewall) OpenPinhole(p netfw.Pinhole) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.checkPinhole(p)
	m.pinholes[p] = true
	return nil
}

func (m *memFirewall) ClosePinhole(p netfw.Pinhole) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	m.checkPinhole(p)
	if !m.pinholes[p] {
		return errors.New("no such pinhole")
	}
	delete(m.pinholes, p)
	return nil
}

func (m *memFirewall) Ban(b netfw.Ban) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	if p, err := fwspec.BanPrefix(b.Prefix); err != nil || p != b.Prefix || fwspec.Reason(b.Reason) != nil {
		m.belowFloor++
	}
	b.Expires = time.Unix(1700000000, 0).UTC()
	m.bans[b.Prefix] = b
	return nil
}

func (m *memFirewall) Unban(p netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls++
	delete(m.bans, p)
	return nil
}

func (m *memFirewall) ListBans() ([]netfw.Ban, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []netfw.Ban
	for _, b := range m.bans {
		out = append(out, b)
	}
	return out, nil
}

func (m *memFirewall) Counters() (netfw.Counters, error) {
	return netfw.Counters{Rules: []netfw.RuleCounter{{Name: "drop", Packets: 3, Bytes: 180}}}, nil
}

type sys struct {
	mu                 sync.Mutex
	health             []Health
	reboots, poweroffs int
}

func (s *sys) Health(h Health) { s.mu.Lock(); s.health = append(s.health, h); s.mu.Unlock() }
func (s *sys) Reboot() error   { s.mu.Lock(); s.reboots++; s.mu.Unlock(); return nil }
func (s *sys) Poweroff() error { s.mu.Lock(); s.poweroffs++; s.mu.Unlock(); return nil }

func (s *sys) snapshot() (int, int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.health), s.reboots, s.poweroffs
}

type fixture struct {
	path string
	fw   *memFirewall
	sys  *sys
	srv  *Server
}

func start(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	f := &fixture{path: filepath.Join(dir, "init.sock"), fw: newMemFirewall(), sys: &sys{}}
	cfg := Config{Path: f.path, UID: 1000, GID: 1000, Firewall: f.fw, System: f.sys}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return f
}

func rawConn(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

func readReply(t *testing.T, c net.Conn) Reply {
	t.Helper()
	f, err := ReadFrame(c)
	if err != nil {
		t.Fatalf("read reply: %v", err)
	}
	if f.Type != TypeReply {
		t.Fatalf("frame type %v", f.Type)
	}
	var r Reply
	if err := decodeStrict(f.Payload, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSocketMode(t *testing.T) {
	f := start(t, nil)
	fi, err := os.Stat(f.path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Uid != 0 && os.Geteuid() == 0 || st.Gid != 1000 && os.Geteuid() == 0 {
		t.Fatalf("socket mode %v uid %d gid %d", fi.Mode(), st.Uid, st.Gid)
	}
}

func TestClientRoundTrip(t *testing.T) {
	f := start(t, nil)
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Health(ctx, Health{Ready: true, Detail: "ok"}); err != nil {
		t.Fatal(err)
	}
	ph := netfw.Pinhole{Remote: netip.MustParseAddr("192.0.2.7"), LocalPort: 10000}
	if err := c.OpenPinhole(ctx, ph); err != nil {
		t.Fatal(err)
	}
	if err := c.ClosePinhole(ctx, ph); err != nil {
		t.Fatal(err)
	}
	// A firewall error comes back as ErrRemote with its text.
	if err := c.ClosePinhole(ctx, ph); !errors.Is(err, ErrRemote) || !strings.Contains(err.Error(), "no such pinhole") {
		t.Fatalf("err = %v", err)
	}
	ban := netfw.Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Reason: "sip-bruteforce", Timeout: time.Hour}
	if err := c.Ban(ctx, ban); err != nil {
		t.Fatal(err)
	}
	bans, err := c.ListBans(ctx)
	if err != nil || len(bans) != 1 || bans[0].Prefix != ban.Prefix || bans[0].Expires.IsZero() {
		t.Fatalf("bans %+v %v", bans, err)
	}
	if err := c.Unban(ctx, ban.Prefix); err != nil {
		t.Fatal(err)
	}
	n, err := c.Counters(ctx)
	if err != nil || len(n.Rules) != 1 || n.Rules[0].Packets != 3 {
		t.Fatalf("counters %+v %v", n, err)
	}
	if err := c.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if h, r, p := f.sys.snapshot(); h != 1 || r != 1 || p != 1 {
		t.Fatalf("health %d reboot %d poweroff %d", h, r, p)
	}
}

// auto makes frame compute the length from the payload.
const auto = -1

func frame(v, typ byte, length int, payload string) []byte {
	if length == auto {
		length = len(payload)
	}
	b := []byte{v, typ, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(length))
	return append(b, payload...)
}

func TestBadFrames(t *testing.T) {
	tests := []struct {
		name      string
		in        []byte
		wantErr   string
		wantField string // the refusal must name this field
		keepsConn bool
	}{
		{"oversize length", frame(1, byte(TypeHealth), MaxPayload+1, ""), "larger than", "", false},
		{"max length", frame(1, byte(TypeHealth), 0xffff, ""), "larger than", "", false},
		{"bad version", frame(2, byte(TypeHealth), auto, "{}"), "version", "", false},
		{"version zero", frame(0, byte(TypeReboot), auto, "{}"), "version", "", false},
		{"bad json", frame(1, byte(TypeHealth), auto, `{"rea`), "bad payload", "", true},
		{"unknown field", frame(1, byte(TypeReboot), auto, `{"force":1}`), "unknown field", "force", true},
		{"trailing data", frame(1, byte(TypeHealth), auto, `{}{}`), "after the JSON value", "", true},
		{"wrong type", frame(1, byte(TypeHealth), auto, `{"ready":"y"}`), "bad payload", "ready", true},
		{"unknown type", frame(1, 42, auto, "{}"), "unknown request type", "", true},
		{"reply type as request", frame(1, byte(TypeReply), auto, "{}"), "unknown request type", "", true},
		// encoding/json would match these case-insensitively or keep the last.
		{"field name case", frame(1, byte(TypeClosePinhole), auto, `{"remote":"1::","loCAl_port":2000}`), "unknown field", "loCAl_port", true},
		{"duplicate field", frame(1, byte(TypeBan), auto, `{"prefix":"0.0.0.0/0","prefix":"192.0.2.0/24","reason":"x"}`), "duplicate field", "prefix", true},
		{"bad pinhole", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"0.0.0.0","local_port":80}`), "unicast", "remote", true},
		{"mapped unspecified pinhole", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"::ffff:0.0.0.0","local_port":20000}`), "unicast", "remote", true},
		{"loopback pinhole", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"::ffff:127.0.0.1","local_port":20000}`), "unicast", "remote", true},
		{"zoned pinhole", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"fe80::1%eth0","local_port":20000}`), "zone", "remote", true},
		{"privileged pinhole port", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"192.0.2.1","local_port":22}`), "1024", "local_port", true},
		{"pinhole for a year", frame(1, byte(TypeOpenPinhole), auto, `{"remote":"192.0.2.1","local_port":20000,"timeout":31536000000000000}`), "timeout", "timeout", true},
		{"ban the world", frame(1, byte(TypeBan), auto, `{"prefix":"0.0.0.0/0","reason":"x"}`), "wider than /16", "prefix", true},
		{"ban the mapped world", frame(1, byte(TypeBan), auto, `{"prefix":"::ffff:0.0.0.0/96","reason":"x"}`), "0.0.0.0/0 is wider than /16", "prefix", true},
		{"ban a mapped /8", frame(1, byte(TypeBan), auto, `{"prefix":"::ffff:10.0.0.0/104","reason":"x"}`), "10.0.0.0/8 is wider than /16", "prefix", true},
		{"ban mixed mapped space", frame(1, byte(TypeBan), auto, `{"prefix":"::ffff:0:0/80","reason":"x"}`), "mixes IPv4-mapped", "prefix", true},
		{"ban an IPv6 /32", frame(1, byte(TypeBan), auto, `{"prefix":"2001:db8::/32","reason":"x"}`), "wider than /48", "prefix", true},
		{"unmasked ban", frame(1, byte(TypeBan), auto, `{"prefix":"192.0.2.1/24","reason":"x"}`), "host bits", "prefix", true},
		{"ban without reason", frame(1, byte(TypeBan), auto, `{"prefix":"192.0.2.0/24"}`), "1..64", "reason", true},
		{"ban reason with spaces", frame(1, byte(TypeBan), auto, `{"prefix":"192.0.2.0/24","reason":"a b"}`), "ASCII", "reason", true},
		{"ban for a year", frame(1, byte(TypeBan), auto, `{"prefix":"192.0.2.0/24","reason":"x","timeout":31536000000000000}`), "timeout", "timeout", true},
		{"ban sets expiry", frame(1, byte(TypeBan), auto, `{"prefix":"192.0.2.0/24","reason":"x","expires":"2030-01-01T00:00:00Z"}`), "expires", "expires", true},
		{"unban mixed mapped space", frame(1, byte(TypeUnban), auto, `{"prefix":"::ffff:0:0/80"}`), "mapped", "prefix", true},
		{"control chars in detail", frame(1, byte(TypeHealth), auto, `{"detail":"a\u001bb"}`), "printable", "detail", true},
		{"fingerprint not hex", frame(1, byte(TypeHealth), auto, `{"tls_fingerprint":"<b>"}`), "hex", "tls_fingerprint", true},
		{"unknown licence mode", frame(1, byte(TypeHealth), auto, `{"ready":true,"licence":"platinum"}`), "licence", "licence", true},
		{"confirm bad id", frame(1, byte(TypeConfirmPolicy), auto, `{"id":"zz"}`), "32 hex", "id", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, nil)
			c := rawConn(t, f.path)
			if _, err := c.Write(tt.in); err != nil {
				t.Fatal(err)
			}
			r := readReply(t, c)
			if r.OK || !strings.Contains(r.Error, tt.wantErr) || r.Field != tt.wantField {
				t.Fatalf("reply %+v, want error containing %q naming field %q", r, tt.wantErr, tt.wantField)
			}
			if h, rb, p := f.sys.snapshot(); h+rb+p != 0 || f.fw.calls != 0 {
				t.Fatalf("state changed: health %d reboot %d poweroff %d firewall calls %d", h, rb, p, f.fw.calls)
			}
			// The connection either still works or is closed by the server.
			err := WriteFrame(c, TypeHealth, []byte(`{}`))
			if err == nil {
				_, err = ReadFrame(c)
			}
			if tt.keepsConn && err != nil {
				t.Fatalf("connection closed after recoverable error: %v", err)
			}
			if !tt.keepsConn && err == nil {
				t.Fatal("connection kept after unrecoverable framing error")
			}
		})
	}
}

func TestNoFirewall(t *testing.T) {
	f := start(t, func(c *Config) { c.Firewall = nil })
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.ListBans(context.Background()); !errors.Is(err, ErrRemote) {
		t.Fatalf("err = %v", err)
	}
}

func TestRateLimit(t *testing.T) {
	f := start(t, func(c *Config) { c.ConnRate, c.ConnBurst = 0.001, 3 })
	c := rawConn(t, f.path)
	for i := range 5 {
		if err := WriteFrame(c, TypeHealth, []byte(`{"ready":true}`)); err != nil {
			t.Fatal(err)
		}
		r := readReply(t, c)
		if limited := strings.Contains(r.Error, "rate limited"); limited != (i >= 3) {
			t.Fatalf("request %d: reply %+v", i, r)
		}
	}
	if h, _, _ := f.sys.snapshot(); h != 3 {
		t.Fatalf("%d health reports passed the limit", h)
	}
	// Another connection has its own per-connection budget.
	c2 := rawConn(t, f.path)
	WriteFrame(c2, TypeHealth, []byte(`{}`))
	if r := readReply(t, c2); !r.OK {
		t.Fatalf("fresh connection: %+v", r)
	}
}

func TestGlobalRateLimit(t *testing.T) {
	f := start(t, func(c *Config) { c.GlobalRate, c.GlobalBurst = 0.001, 2 })
	for i := range 3 {
		c := rawConn(t, f.path)
		WriteFrame(c, TypeHealth, []byte(`{}`))
		if r := readReply(t, c); r.OK != (i < 2) {
			t.Fatalf("connection %d: %+v", i, r)
		}
	}
}

func TestIdleDeadline(t *testing.T) {
	f := start(t, func(c *Config) { c.IdleTimeout, c.FrameTimeout = 50*time.Millisecond, 50*time.Millisecond })
	c := rawConn(t, f.path)
	c.Write([]byte{1, byte(TypeHealth)}) // half a header, then silence
	if _, err := ReadFrame(c); !errors.Is(err, io.EOF) {
		t.Fatalf("stalled peer not dropped: %v", err)
	}
}

func TestMaxConns(t *testing.T) {
	f := start(t, func(c *Config) { c.MaxConns = 1 })
	c1 := rawConn(t, f.path)
	WriteFrame(c1, TypeHealth, []byte(`{}`))
	readReply(t, c1) // c1 now holds the only slot
	c2 := rawConn(t, f.path)
	WriteFrame(c2, TypeHealth, []byte(`{}`))
	if _, err := ReadFrame(c2); err == nil {
		t.Fatal("second connection served beyond MaxConns")
	}
}

// TestPeerCredentials connects from child processes running as other uids.
func TestPeerCredentials(t *testing.T) {
	netnstest.NeedRoot(t, "running a child as another uid")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "child")
	data, _ := os.ReadFile(self)
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(bin); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	tests := []struct {
		name     string
		uid, gid uint32
		want     string
		health   int
	}{
		{"stranger", 65534, 1000, "closed-without-reply", 0},
		{"edgepbxd uid", 1000, 1000, `reply Reply {"ok":true}`, 1},
		{"root", 0, 0, `reply Reply {"ok":true}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := start(t, nil)
			cmd := exec.Command(bin)
			cmd.Env = []string{childEnv + "=" + f.path}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tt.uid, Gid: tt.gid}}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v %s", err, out)
			}
			if got := strings.TrimSpace(string(out)); got != tt.want {
				t.Fatalf("child saw %q, want %q", got, tt.want)
			}
			if h, _, _ := f.sys.snapshot(); h != tt.health {
				t.Fatalf("%d health reports accepted, want %d", h, tt.health)
			}
		})
	}
}

func TestFrameRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, MaxPayload} {
		p := bytes.Repeat([]byte("x"), n)
		var buf bytes.Buffer
		if err := WriteFrame(&buf, TypeBan, p); err != nil {
			t.Fatal(err)
		}
		f, err := ReadFrame(&buf)
		if err != nil || f.Type != TypeBan || !bytes.Equal(f.Payload, p) {
			t.Fatalf("n=%d: %v %v", n, f.Type, err)
		}
	}
	if err := WriteFrame(io.Discard, TypeBan, make([]byte, MaxPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize write: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(frame(1, 1, auto, "{}"))
	f.Add(frame(1, 1, 0xffff, ""))
	f.Add(frame(2, 9, 0, ""))
	f.Add(frame(1, byte(TypeSetPolicy), MaxPolicyPayload+1, ""))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr, err := ReadFrame(bytes.NewReader(in))
		if err != nil {
			return
		}
		if len(fr.Payload) > MaxPayloadFor(fr.Type) || (fr.Type != TypeSetPolicy && fr.Type != TypeReply && len(fr.Payload) > MaxPayload) {
			t.Fatalf("payload of %d bytes accepted", len(fr.Payload))
		}
		out, err := AppendFrame(nil, fr.Type, fr.Payload)
		if err != nil || !bytes.HasPrefix(in, out) {
			t.Fatalf("re-encoding differs: %x vs %x", out, in)
		}
	})
}

// FuzzDispatch feeds arbitrary requests to the dispatcher. The invariants:
// it never panics; a refused request changes no state (the firewall may be
// asked and say no, as netfw does for a pinhole outside its RTP range, but
// nothing it holds and nothing of the system may change); every request
// that reaches the firewall meets fwspec's floors in canonical form.
func FuzzDispatch(f *testing.F) {
	f.Add(uint8(TypeBan), []byte(`{"prefix":"192.0.2.0/24","reason":"x"}`))
	f.Add(uint8(TypeBan), []byte(`{"prefix":"::ffff:0.0.0.0/96","reason":"x"}`))
	f.Add(uint8(TypeOpenPinhole), []byte(`{"remote":"2001:db8::1","local_port":20000,"timeout":1}`))
	f.Add(uint8(TypeOpenPinhole), []byte(`{"remote":"::ffff:192.0.2.1","local_port":20000}`))
	f.Add(uint8(TypeClosePinhole), []byte(`{"remote":"1::","loCAl_port":2000}`))
	f.Add(uint8(TypeHealth), []byte(`{"ready":true,"detail":"ok"}`))
	f.Add(uint8(TypeUnban), []byte(`{"prefix":"::/0"}`))
	f.Add(uint8(TypeRaiseFloor), []byte(`{"name":"license.ticks","value":1}`))
	f.Add(uint8(TypeGetFloors), []byte(`{}`))
	f.Add(uint8(TypeDHCPServer), []byte(`{"interface":"eth0.20","open":true}`))
	f.Add(uint8(TypeDHCPServer), []byte(`{"interface":"eth0;x","open":true}`))
	f.Fuzz(func(t *testing.T, typ uint8, p []byte) {
		fw, s := newMemFirewall(), &sys{}
		dhcp := &dhcpRec{}
		srv := &Server{cfg: Config{Firewall: fw, System: s, DHCP: dhcp}}
		before := fw.state()
		r := srv.dispatch(Type(typ), p)
		if fw.belowFloor != 0 {
			t.Fatalf("a request below the floors reached the firewall: %q", p)
		}
		for _, d := range dhcp.got {
			if d.Validate() != nil {
				t.Fatalf("a malformed DHCP port request reached the firewall: %+v", d)
			}
		}
		if r.OK {
			return
		}
		if h, rb, po := s.snapshot(); h+rb+po != 0 || fw.state() != before {
			t.Fatalf("refused request changed state: %+v", r)
		}
	})
}

// dhcpRec is the DHCP side of the firewall: it records what reaches it
// (netfw checks the interface against the policy itself).
type dhcpRec struct{ got []fwspec.DHCPServer }

func (d *dhcpRec) SetDHCPServer(r fwspec.DHCPServer) error {
	d.got = append(d.got, r)
	return nil
}
