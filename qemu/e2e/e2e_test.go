// Package e2e boots real edgepbx images under QEMU (TCG) and checks them from
// the host: readiness, HTTPS through the port forward, dropped ports, service
// restart, clean poweroff and persistence of identity and certificate.
package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/qemu"
)

// Generous: TCG on two shared cores, while other builds run.
const (
	bootTimeout = 4 * time.Minute
	stepTimeout = 2 * time.Minute
)

var workDir string // removed by TestMain

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "edgepbx-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// require skips (or, with CI set, fails) when a host tool is missing.
func require(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "" {
				tb.Skipf("%s not installed: %v", tool, err)
			}
			tb.Fatalf("%s not installed (needed by the QEMU end-to-end tests): %v", tool, err)
		}
	}
}

type built struct {
	once sync.Once
	img  *image.Image
	err  error
}

var images sync.Map // board name -> *built

// buildImage builds a board's image with the test hook, once per test binary.
func buildImage(tb testing.TB, boardName string) *image.Image {
	tb.Helper()
	v, _ := images.LoadOrStore(boardName, &built{})
	b := v.(*built)
	b.once.Do(func() { b.img, b.err = doBuild(boardName) })
	if b.err != nil {
		tb.Fatalf("build %s image: %v", boardName, b.err)
	}
	return b.img
}

func doBuild(boardName string) (*image.Image, error) {
	prof, err := board.Load(boardName)
	if err != nil {
		return nil, err
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		return nil, err
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return image.Build(ctx, prof,
		image.WithCacheDir(filepath.Join(cache, "edgepbx")),
		image.WithOutDir(filepath.Join(workDir, boardName)),
		image.WithVersion("e2e"),
		image.WithBuildTags("testhook"),
		image.WithRepoDir(repo),
		image.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
}

// consoleLog writes the guest console to the test log when -v is given, so a
// failure shows what the appliance printed.
type consoleLog struct {
	tb testing.TB
	mu sync.Mutex
	b  []byte
}

func (w *consoleLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	for {
		i := strings.IndexByte(string(w.b), '\n')
		if i < 0 {
			break
		}
		if testing.Verbose() {
			w.tb.Logf("console| %s", strings.TrimRight(string(w.b[:i]), "\r"))
		}
		w.b = w.b[i+1:]
	}
	return len(p), nil
}

// boot starts img and waits for "edgepbx: ready", failing on HALTED.
func boot(t *testing.T, img *image.Image, opts ...qemu.Option) *qemu.VM {
	t.Helper()
	opts = append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t})}, opts...)
	vm, err := qemu.Boot(context.Background(), img, opts...)
	if err != nil {
		t.Fatalf("boot %s: %v", img.Board.Name, err)
	}
	t.Cleanup(vm.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("appliance halted: %s\n%s", line, vm.Tail(60))
	}
	return vm
}

// banner waits for the status banner that follows "edgepbx: ready" (between
// two "====" rules) and returns its "key: value" lines.
func banner(t *testing.T, vm *qemu.VM) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	head, err := vm.WaitLine(ctx, "====")
	if err == nil {
		_, err = vm.WaitLine(ctx, "=====")
	}
	if err != nil {
		t.Fatalf("status banner: %v", err)
	}
	lines := vm.Lines()
	start := -1
	for i := len(lines) - 1; i >= 0; i-- {
		if lines[i] == head {
			start = i
			break
		}
	}
	kv := map[string]string{}
	for _, l := range lines[start+1:] {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "====") {
			break
		}
		if k, v, ok := strings.Cut(l, ": "); ok {
			kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return kv
}

// healthz fetches /healthz over HTTPS through the forward and returns the
// certificate's SHA-256 fingerprint. The certificate is self-signed, so the
// client checks that it parses and is in date, and callers pin it across boots.
func healthz(ctx context.Context, port int) (status int, body, fingerprint string, err error) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // self-signed: pinned by fingerprint instead
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no certificate")
			}
			c := cs.PeerCertificates[0]
			if _, err := x509.ParseCertificate(c.Raw); err != nil {
				return err
			}
			if now := time.Now(); now.Before(c.NotBefore.Add(-24*time.Hour)) || now.After(c.NotAfter) {
				return fmt.Errorf("certificate not valid now (%s .. %s)", c.NotBefore, c.NotAfter)
			}
			sum := sha256.Sum256(c.Raw)
			fingerprint = hex.EncodeToString(sum[:])
			return nil
		},
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/healthz", port), nil)
	if err != nil {
		return 0, "", "", err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, string(b), fingerprint, err
}

func normFingerprint(s string) string {
	return strings.ToLower(strings.ReplaceAll(s, ":", ""))
}

// healthzEventually retries while the service comes up behind the forward
// (slirp accepts before the guest does).
func healthzEventually(t *testing.T, port int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	var lastErr error
	for ctx.Err() == nil {
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		status, body, fp, err := healthz(rctx, port)
		rcancel()
		if err == nil && status == http.StatusOK {
			return fp
		}
		if err == nil {
			err = fmt.Errorf("status %d: %s", status, body)
		}
		lastErr = err
		time.Sleep(time.Second)
	}
	t.Fatalf("GET /healthz: %v", lastErr)
	return ""
}

func TestX86Appliance(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	img := buildImage(t, "qemu-x86_64")
	disk := filepath.Join(t.TempDir(), "data.img")
	opts := []qemu.Option{
		qemu.WithDataDisk(disk),
		qemu.WithHostForward("tcp", 0, 443),
		qemu.WithHostForward("tcp", 0, 7070), // no service (8080 is provisioning bootstrap), firewall drops
		qemu.WithHostForward("udp", 0, 9),
	}
	vm := boot(t, img, opts...)
	first := banner(t, vm)
	t.Logf("banner: %v", first)

	var fingerprint string
	t.Run("healthz", func(t *testing.T) {
		fingerprint = healthzEventually(t, vm.HostPort("tcp", 443))
		// Pin: the certificate served is the one the console vouches for.
		if want := normFingerprint(first["tls sha256"]); want != "" && want != fingerprint {
			t.Errorf("served certificate sha256 %s, console shows %s", fingerprint, want)
		}
	})

	t.Run("dropped ports", func(t *testing.T) {
		// slirp accepts the host side itself and then sends SYNs to the guest:
		// a guest RST closes the host connection at once, silence keeps it open
		// with nothing to read. So: no byte and no EOF within the window.
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", vm.HostPort("tcp", 7070)), 10*time.Second)
		if err != nil {
			t.Fatalf("slirp refused the host side: %v", err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(make([]byte, 64))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("tcp to closed guest port 7070: read %d bytes, err %v; want silence (no RST, no data)", n, err)
		}
		u, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", vm.HostPort("udp", 9)))
		if err != nil {
			t.Fatal(err)
		}
		defer u.Close()
		u.Write([]byte("probe"))
		u.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := u.Read(make([]byte, 64)); !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("udp to closed guest port 9: read %d bytes, err %v; want silence", n, err)
		}
	})

	t.Run("edgepbxd restarts", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		// WaitLine looks only past the boot's "edgepbx: ready", so the match
		// is the restarted daemon's line.
		if err := vm.SendLine("edgepbx-test: kill edgepbxd"); err != nil {
			t.Fatal(err)
		}
		if _, err := vm.WaitLine(ctx, "edgepbx: edgepbxd ready"); err != nil {
			t.Fatal(err)
		}
		if fp := healthzEventually(t, vm.HostPort("tcp", 443)); fingerprint != "" && fp != fingerprint {
			t.Errorf("certificate changed across restart: %s -> %s", fingerprint, fp)
		}
	})

	t.Run("clean poweroff", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := vm.Powerdown(ctx); err != nil {
			t.Fatalf("powerdown: %v", err)
		}
		if _, err := vm.WaitLine(ctx, "edgepbx: power off"); err != nil {
			t.Fatalf("no power off line: %v", err)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("second boot keeps identity", func(t *testing.T) {
		vm2 := boot(t, img, opts...)
		second := banner(t, vm2)
		// The serial (and the host name made from it) come from /data and stay;
		// the setup code is one-time per boot while the box is unclaimed.
		same := 0
		for _, k := range []string{"serial", "hostname"} {
			if first[k] == "" {
				continue
			}
			same++
			if first[k] != second[k] {
				t.Errorf("banner %q: first boot %q, second boot %q", k, first[k], second[k])
			}
		}
		if same == 0 {
			t.Errorf("banner shows no serial or hostname: %v", first)
		}
		if c1, c2 := first["setup code"], second["setup code"]; c1 == "" || c2 == "" || c1 == c2 {
			t.Errorf("setup code: first boot %q, second boot %q; want a fresh one each boot", c1, c2)
		}
		fp := healthzEventually(t, vm2.HostPort("tcp", 443))
		if fp != fingerprint {
			t.Errorf("certificate changed across boots: %s -> %s", fingerprint, fp)
		}
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		if err := vm2.Powerdown(ctx); err != nil {
			t.Fatalf("powerdown: %v", err)
		}
	})
}

func TestARM64Ready(t *testing.T) {
	require(t, "qemu-system-aarch64", "mkfs.ext4")
	img := buildImage(t, "qemu-arm64")
	vm := boot(t, img, qemu.WithDataDisk(filepath.Join(t.TempDir(), "data.img")))
	t.Logf("arm64 ready %.1fs after QEMU start (first boot, TCG)", time.Since(vm.Started()).Seconds())
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := vm.Powerdown(ctx); err != nil {
		t.Fatalf("powerdown: %v", err)
	}
}
