package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/init/control"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// binPath is the edgepbxd binary built once by TestMain for the tests that
// run the real thing.
var binPath string

// vendorPriv signs the test licence server's answers; TestMain builds its
// public half into the binary as the vendor key, as a release build does.
var vendorPriv ed25519.PrivateKey

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edgepbxd-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// World-readable so the unprivileged uid the production tests use can run it.
	os.Chmod(dir, 0o755)
	binPath = filepath.Join(dir, "edgepbxd")
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	vendorPriv = priv
	ldflags := "-X main.version=test-build -X github.com/edgepbx/edgepbx/firmware/license.buildVendorKey=" + license.FormatPublicKey(pub)
	args := []string{"build", "-o", binPath, "-ldflags", ldflags}
	if raceBuild {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build edgepbxd:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// unprivUID is the uid production-mode tests run edgepbxd as, like PID 1 does.
const unprivUID = 1000

// proc is a running edgepbxd with its output collected line by line.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	out   []string
	lines chan string
	done  chan struct{}
	exit  int
}

type procOpts struct {
	bootstrap []byte // written to fd 3 when non-nil
	noFD3     bool
	uid       int // 0: as the test process
}

func startProc(t testing.TB, o procOpts, args ...string) *proc {
	t.Helper()
	// A dev daemon listens for SIP over TLS on the fixed 127.0.0.1:5061
	// unless told: tests that do not name the port get a free one, so two
	// daemons on one machine cannot collide ("bind: address already in
	// use" failed TestBaresipRecording while another test's daemon ran).
	if slices.Contains(args, "--dev") && !slices.ContainsFunc(args, func(a string) bool { return a == "--sip-tls" || strings.HasPrefix(a, "--sip-tls=") }) {
		args = append(args, "--sip-tls", "127.0.0.1:0")
	}
	p := &proc{cmd: exec.Command(binPath, args...), lines: make(chan string, 1024), done: make(chan struct{})}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var w *os.File
	if !o.noFD3 {
		r, wr, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		w = wr
		p.cmd.ExtraFiles = []*os.File{r}
	}
	if o.uid != 0 {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(o.uid), Gid: uint32(o.uid)}}
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if w != nil {
		go func() {
			if o.bootstrap != nil {
				w.Write(o.bootstrap)
			}
			w.Close()
		}()
	}
	var wg sync.WaitGroup
	for _, rd := range []io.Reader{stdout, stderr} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(rd)
			for sc.Scan() {
				p.mu.Lock()
				p.out = append(p.out, sc.Text())
				p.mu.Unlock()
				select {
				case p.lines <- sc.Text():
				default:
				}
			}
		}()
	}
	go func() {
		wg.Wait()
		err := p.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			p.exit = ee.ExitCode()
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// waitLine returns the submatches of the first output line matching re.
func (p *proc) waitLine(t testing.TB, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.After(60 * time.Second) // a hang, not a performance limit
	for {
		select {
		case l := <-p.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-p.done:
			// Drain what was printed before exit.
			for {
				select {
				case l := <-p.lines:
					if m := re.FindStringSubmatch(l); m != nil {
						return m
					}
				default:
					t.Fatalf("edgepbxd exited (%d) before printing %v:\n%s", p.exit, re, p.output())
				}
			}
		case <-deadline:
			t.Fatalf("edgepbxd did not print %v:\n%s", re, p.output())
		}
	}
}

// stop sends SIGTERM and returns the exit code.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.wait(t)
}

func (p *proc) wait(t testing.TB) int {
	t.Helper()
	select {
	case <-p.done:
		return p.exit
	case <-time.After(60 * time.Second):
		t.Fatalf("edgepbxd did not exit:\n%s", p.output())
		return -1
	}
}

var (
	adminRE   = regexp.MustCompile(`^\s+admin:\s+(https://\S+)/$`)
	fpRE      = regexp.MustCompile(`^\s+fingerprint:\s+SHA-256 ([0-9A-F:]{95})$`)
	setupRE   = regexp.MustCompile(`^\s+setup code:\s+(\S+)$`)
	serialRE2 = regexp.MustCompile(`^\s+serial:\s+(\S+)$`)
	listenRE  = regexp.MustCompile(`msg="https: listening" addr=(\S+) fingerprint=([0-9A-F:]{95})`)
)

// pinnedClient trusts exactly the certificate with fingerprint fp, as an
// admin does after comparing it with the console banner.
func pinnedClient(fp string, minV, maxV uint16) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			ForceAttemptHTTP2: true,
			TLSClientConfig: &tls.Config{
				MinVersion:         minV,
				MaxVersion:         maxV,
				InsecureSkipVerify: true, // replaced by the pin below
				VerifyConnection: func(cs tls.ConnectionState) error {
					if len(cs.PeerCertificates) == 0 {
						return errors.New("no certificate")
					}
					sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
					if got := certs.FingerprintOf(cs.PeerCertificates[0].Raw); got != fp {
						return fmt.Errorf("fingerprint %s (%x), pinned %s", got, sum[:4], fp)
					}
					return nil
				},
			},
		},
	}
}

func getHealthz(t *testing.T, base, fp string) healthzResponse {
	t.Helper()
	c := pinnedClient(fp, 0, 0)
	defer c.CloseIdleConnections()
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %s", resp.Status)
	}
	wantHeaders := map[string]string{
		"Content-Type":              "application/json",
		"Strict-Transport-Security": "max-age=63072000",
		"X-Content-Type-Options":    "nosniff",
		"X-Frame-Options":           "DENY",
		"Cache-Control":             "no-store",
	}
	for k, v := range wantHeaders {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	var h healthzResponse
	dec := json.NewDecoder(io.LimitReader(resp.Body, 4096))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("decode /healthz: %v", err)
	}
	if h.Status != "ok" || h.Version != "test-build" || h.Uptime < 0 {
		t.Fatalf("/healthz = %+v", h)
	}
	return h
}

// tlsVersion handshakes with only version v enabled and reports the error.
func tlsVersion(addr, fp string, v uint16) error {
	c := pinnedClient(fp, v, v)
	defer c.CloseIdleConnections()
	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.TLS.Version != v {
		return fmt.Errorf("negotiated %s", tls.VersionName(resp.TLS.Version))
	}
	return nil
}

func rssKB(pid int) string {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func TestDevModeBinary(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	serial := p.waitLine(t, serialRE2)[1]
	if !setupCodeRE.MatchString(code) {
		t.Fatalf("setup code %q", code)
	}
	getHealthz(t, base, fp)
	t.Logf("edgepbxd RSS after start (dev mode, one /healthz served): %s", rssKB(p.cmd.Process.Pid))

	addr := strings.TrimPrefix(base, "https://")
	versions := []struct {
		v  uint16
		ok bool
	}{{tls.VersionTLS10, false}, {tls.VersionTLS11, false}, {tls.VersionTLS12, true}, {tls.VersionTLS13, true}}
	for _, tc := range versions {
		err := tlsVersion(addr, fp, tc.v)
		if tc.ok && err != nil {
			t.Errorf("%s refused: %v", tls.VersionName(tc.v), err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s accepted", tls.VersionName(tc.v))
		}
	}
	// A wrong pin must fail: the check above is not vacuous.
	if err := tlsVersion(addr, strings.Repeat("00:", 31)+"00", tls.VersionTLS13); err == nil {
		t.Fatal("a wrong fingerprint pin was accepted")
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	if !strings.Contains(p.output(), `msg="service: stopped" service=https`) {
		t.Fatalf("no graceful HTTPS stop logged:\n%s", p.output())
	}

	// Restart on the same directory: same identity and certificate, new setup code.
	p2 := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base2 := p2.waitLine(t, adminRE)[1]
	fp2 := p2.waitLine(t, fpRE)[1]
	code2 := p2.waitLine(t, setupRE)[1]
	serial2 := p2.waitLine(t, serialRE2)[1]
	if fp2 != fp || serial2 != serial {
		t.Fatalf("restart changed identity: fingerprint %s→%s serial %s→%s", fp, fp2, serial, serial2)
	}
	if code2 == code {
		t.Fatal("setup code reused across starts")
	}
	getHealthz(t, base2, fp)
	if code := p2.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}

func TestDevModeRefusesPublicAddress(t *testing.T) {
	p := startProc(t, procOpts{noFD3: true}, "--dev", t.TempDir(), "--https", "0.0.0.0:0")
	if code := p.wait(t); code != exitStayDown {
		t.Fatalf("exit %d, want %d", code, exitStayDown)
	}
	if !strings.Contains(p.output(), "not a loopback address") {
		t.Fatalf("no clear message:\n%s", p.output())
	}
}

func TestProductionRefusesRoot(t *testing.T) {
	netnstest.NeedRoot(t, "starting edgepbxd as an unprivileged uid")
	p := startProc(t, procOpts{bootstrap: bootstrapJSON(nil)}, "--data", t.TempDir(), "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0", "--control", "")
	if code := p.wait(t); code != exitStayDown {
		t.Fatalf("exit %d, want %d:\n%s", code, exitStayDown, p.output())
	}
	if !strings.Contains(p.output(), "refusing to run as root") {
		t.Fatalf("no clear message:\n%s", p.output())
	}
}

// unprivDir makes a directory the unprivileged uid owns, under a path it can reach.
func unprivDir(t *testing.T) string {
	t.Helper()
	parent, err := os.MkdirTemp("", "edgepbxd-prod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o755)
	dir := filepath.Join(parent, "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, unprivUID, unprivUID); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestProductionBootstrapErrors(t *testing.T) {
	netnstest.NeedRoot(t, "starting edgepbxd as an unprivileged uid")
	tests := []struct {
		name string
		o    procOpts
		want string
	}{
		{"too big", procOpts{bootstrap: make([]byte, maxBootstrap+100)}, "more than 4096 bytes"},
		{"malformed", procOpts{bootstrap: []byte(`{"device_key": `)}, "malformed JSON"},
		{"missing key", procOpts{bootstrap: bootstrapJSON(func(m map[string]any) { delete(m, "device_key") })}, "device_key must be 32 bytes"},
		{"empty pipe", procOpts{bootstrap: []byte{}}, "malformed JSON"},
		{"no fd 3", procOpts{noFD3: true}, "bootstrap: fd 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := unprivDir(t)
			tc.o.uid = unprivUID
			p := startProc(t, tc.o, "--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0", "--control", "")
			if code := p.wait(t); code != exitStayDown {
				t.Fatalf("exit %d, want %d:\n%s", code, exitStayDown, p.output())
			}
			if !strings.Contains(p.output(), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, p.output())
			}
			// Nothing was created from bad input.
			if ents, _ := os.ReadDir(data); len(ents) != 0 {
				t.Fatalf("data dir not empty after refused start: %v", ents)
			}
		})
	}
}

// healthLog is PID 1's side of the control socket in the test.
type healthLog struct {
	mu      sync.Mutex
	reports []control.Health
	changed chan struct{}
}

func (h *healthLog) Health(r control.Health) {
	h.mu.Lock()
	h.reports = append(h.reports, r)
	h.mu.Unlock()
	select {
	case h.changed <- struct{}{}:
	default:
	}
}
func (h *healthLog) Reboot() error   { return errors.New("not in this test") }
func (h *healthLog) Poweroff() error { return errors.New("not in this test") }

func (h *healthLog) last() (control.Health, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reports) == 0 {
		return control.Health{}, 0
	}
	return h.reports[len(h.reports)-1], len(h.reports)
}

func TestProductionRun(t *testing.T) {
	netnstest.NeedRoot(t, "starting edgepbxd as an unprivileged uid")
	data := unprivDir(t)
	sock := filepath.Join(filepath.Dir(data), "init.sock")
	hl := &healthLog{changed: make(chan struct{}, 1)}
	srv, err := control.Listen(control.Config{Path: sock, UID: unprivUID, GID: unprivUID, System: hl})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	defer srv.Close()

	run := func() (string, string) {
		p := startProc(t, procOpts{bootstrap: bootstrapJSON(nil), uid: unprivUID},
			"--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0", "--control", sock)
		m := p.waitLine(t, listenRE)
		addr, fp := m[1], m[2]
		p.waitLine(t, regexp.MustCompile(`msg="health: reported ready to PID 1"`))
		h, _ := hl.last()
		if !h.Ready || h.Claimed || h.TLSFingerprint != fp {
			t.Fatalf("health report %+v, fingerprint %s", h, fp)
		}
		getHealthz(t, "https://"+addr, fp)
		if code := p.stop(t); code != 0 {
			t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
		}
		if h, _ := hl.last(); h.Ready || h.Detail != "stopping" {
			t.Fatalf("last report on shutdown %+v, want not ready/stopping", h)
		}
		return addr, fp
	}
	_, fp1 := run()
	st, err := os.Stat(filepath.Join(data, "edgepbx.db"))
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != unprivUID || st.Mode().Perm() != 0o600 {
		t.Fatalf("edgepbx.db owned by %d mode %v", sys.Uid, st.Mode().Perm())
	}
	// Second boot: same certificate from the store.
	if _, fp2 := run(); fp2 != fp1 {
		t.Fatalf("certificate changed across restarts: %s -> %s", fp1, fp2)
	}

	// The same data with another device key: the sealed key does not open,
	// and edgepbxd stays down rather than minting a new identity.
	p := startProc(t, procOpts{uid: unprivUID, bootstrap: bootstrapJSON(func(m map[string]any) {
		m["device_key"] = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
	})}, "--data", data, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0", "--control", sock)
	if code := p.wait(t); code != exitStayDown {
		t.Fatalf("wrong device key: exit %d, want %d:\n%s", code, exitStayDown, p.output())
	}
	if !strings.Contains(p.output(), "sealed value does not open") {
		t.Fatalf("wrong device key: no clear message:\n%s", p.output())
	}
}

// TestDamagedStoreStaysDown: a store that fails the consistency check
// stops edgepbxd for good (exit 125, no restart loop) with the choices
// named, and is neither replaced by an empty one nor modified.
func TestDamagedStoreStaysDown(t *testing.T) {
	dir := t.TempDir()
	bad := bytes.Repeat([]byte{0x5a}, 64<<10)
	db := filepath.Join(dir, "edgepbx.db")
	if err := os.WriteFile(db, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0")
	if code := p.wait(t); code != exitStayDown {
		t.Fatalf("exit %d, want %d:\n%s", code, exitStayDown, p.output())
	}
	for _, want := range []string{"database file is damaged", "restore a backup", "factory-reset"} {
		if !strings.Contains(p.output(), want) {
			t.Fatalf("output does not say %q:\n%s", want, p.output())
		}
	}
	if after, err := os.ReadFile(db); err != nil || !bytes.Equal(after, bad) {
		t.Fatalf("damaged store was modified or replaced: %v", err)
	}
}
