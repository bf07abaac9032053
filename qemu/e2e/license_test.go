package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/board"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
	"github.com/edgepbx/edgepbx/qemu"
)

// The licence server as the guest sees it: an address in QEMU's user
// network that QEMU forwards to the host (restrict=on stays: the guest
// reaches this and nothing else).
var licenseGuestAddr = netip.MustParseAddrPort("10.0.2.100:443")

// The box's serial, written to its data disk as the factory would; microvm
// has no DMI, so without it the box would make one up at first boot and
// the vendor could not have issued its licence in advance.
const licenseSerial = "EPXLICE2E01"

// TestX86LicenseCheckin boots an image built to phone home (vendor key,
// server URL and CA baked in) and checks that it checks in with a real
// licensed on the host over TLS, and that the box then reports full
// service backed by a good check-in.
func TestX86LicenseCheckin(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	dir := t.TempDir()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	// The vendor's side: signing keys, a CA and a server certificate for
	// the name the boxes use, one licence for this box.
	licensed := filepath.Join(dir, "licensed")
	goBuild(t, repo, licensed, "./cmd/licensed")
	run(t, licensed, "keys", "-out", dir)
	pubText, err := os.ReadFile(filepath.Join(dir, "vendor.pub"))
	if err != nil {
		t.Fatal(err)
	}
	vendorPub, err := license.ParsePublicKey(string(pubText))
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	certFile, keyFile := ca.serverCert(t, dir, licenseGuestAddr.Addr().AsSlice(), net.IPv4(127, 0, 0, 1))
	db := filepath.Join(dir, "licensed.db")
	run(t, licensed, "issue", "-db", db, "-id", licenseSerial, "-days", "30")
	token := rand.Text()
	tokenFile := filepath.Join(dir, "admin.token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvAddr := serve(t, licensed, "serve", "-db", db, "-key", filepath.Join(dir, "vendor.key"), "-listen", "127.0.0.1:0",
		"-tls-cert", certFile, "-tls-key", keyFile, "-admin-token-file", tokenFile)
	admin := &adminClient{base: "https://" + srvAddr, token: token, c: &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}}}}

	// QEMU dials the guest forward's target once, at start, and holds the
	// connection idle until the guest connects: the relay accepts it and
	// dials licensed only when the guest's first bytes arrive. It also
	// counts what crosses the wire.
	relay := newRelay(t, srvAddr)

	img := buildLicenseImage(t, repo, ca.pem, vendorPub, fmt.Sprintf("https://%s", licenseGuestAddr.Addr()))
	disk := seededDataDisk(t, dir, licenseSerial)
	opts := []qemu.Option{
		qemu.WithDataDisk(disk),
		qemu.WithHostForward("tcp", 0, 443),
		qemu.WithGuestForward(licenseGuestAddr, relay.addr()),
	}
	// With a TPM, the check-in sequence reaches TPM NV through PID 1
	// (checked after power-off); without swtpm, outside CI, no TPM.
	chip := filepath.Join(dir, "tpm")
	if _, err := exec.LookPath("swtpm"); err == nil || os.Getenv("CI") != "" {
		opts = append(opts, qemu.WithTPM(swtpmtest.StartForQEMU(t, chip).Ctrl))
	} else {
		chip = ""
	}
	vm := boot(t, img, opts...)
	bn := banner(t, vm)
	if bn["serial"] != licenseSerial {
		t.Fatalf("banner serial %q, want the factory serial %q", bn["serial"], licenseSerial)
	}

	// The server's record: a check-in from this box's serial.
	var ci checkin
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	for {
		cis, err := admin.checkins(ctx, licenseSerial)
		if err == nil && len(cis) > 0 {
			ci = cis[0]
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no check-in recorded (last error %v)\n%s", err, vm.Tail(40))
		}
		time.Sleep(time.Second)
	}
	if ci.Serial != licenseSerial || ci.Firmware != "e2e-license" || ci.InstallID == "" || ci.Fingerprint == "" {
		t.Errorf("recorded check-in %+v: want serial %s, firmware e2e-license, an install id and a fingerprint", ci, licenseSerial)
	}
	t.Logf("recorded check-in: %+v", ci)
	lic, err := admin.licence(ctx, licenseSerial)
	if err != nil {
		t.Fatal(err)
	}
	if len(lic.Fingerprints) != 1 || lic.Fingerprints[0] != ci.Fingerprint || lic.Clone {
		t.Errorf("licence after the check-in: %+v", lic)
	}

	// The box's view: full service since a good check-in, shown to anyone
	// on /healthz.
	var view struct {
		License struct {
			Configured bool      `json:"configured"`
			Mode       string    `json:"mode"`
			LastGood   time.Time `json:"last_good"`
		} `json:"license"`
	}
	for {
		rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
		status, body, _, err := healthz(rctx, vm.HostPort("tcp", 443))
		rcancel()
		if err == nil && status == http.StatusOK {
			if err = json.Unmarshal([]byte(body), &view); err == nil && !view.License.LastGood.IsZero() {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("/healthz never showed a good check-in: %v %s", err, body)
		}
		time.Sleep(time.Second)
	}
	// The first check-in carries no CPU figure (no baseline yet), so a box
	// that just booted under TCG is not judged "hardware too small".
	if ci.Load.CPUPercent != 0 {
		t.Errorf("first check-in reported CPU %d%%, want no figure", ci.Load.CPUPercent)
	}
	wantMode := string(license.ModeFull)
	if !view.License.Configured || view.License.Mode != wantMode {
		t.Errorf("/healthz licence = %+v, want configured, mode %s", view.License, wantMode)
	}
	if d := time.Since(view.License.LastGood); d < -time.Minute || d > 10*time.Minute {
		t.Errorf("last good check-in %s is not this boot's", view.License.LastGood)
	}

	up, down := relay.bytes()
	t.Logf("check-in on the wire (TLS records, TCP payload): %d bytes box->server, %d bytes server->box, %d total; request body %d bytes",
		up, down, up+down, ci.Bytes)
	if up == 0 || down == 0 {
		t.Errorf("relay saw %d/%d bytes: the check-in did not cross the forward", up, down)
	}

	pctx, pcancel := context.WithTimeout(context.Background(), stepTimeout)
	defer pcancel()
	if err := vm.Powerdown(pctx); err != nil {
		t.Fatalf("powerdown: %v", err)
	}
	if chip != "" {
		// The box's TPM, read from the host: edgepbxd asked PID 1 to raise
		// the sequence floor before the request left.
		tpm := swtpmtest.Start(t, chip)
		fl, err := keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock))
		if err != nil {
			t.Fatal(err)
		}
		if f := fl.All(); f[license.FloorSeq] < 1 {
			t.Errorf("TPM NV floors after a check-in: %v, want %s >= 1", f, license.FloorSeq)
		}
	}
}

// buildLicenseImage builds the x86 image the way a vendor would for boxes
// that phone home.
func buildLicenseImage(t *testing.T, repo string, caPEM []byte, vendorPub ed25519.PublicKey, url string) *image.Image {
	t.Helper()
	prof, err := board.Load("qemu-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img, err := image.Build(ctx, prof,
		image.WithCacheDir(filepath.Join(cache, "edgepbx")),
		image.WithOutDir(filepath.Join(t.TempDir(), "image")),
		image.WithVersion("e2e-license"),
		image.WithBuildTags("testhook"),
		image.WithRepoDir(repo),
		image.WithLicense(url, caPEM, vendorPub),
		image.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))),
	)
	if err != nil {
		t.Fatalf("build licence image: %v", err)
	}
	return img
}

// seededDataDisk makes the box's data disk with its serial already in
// /data/identity, as factory provisioning would; PID 1 creates the rest.
func seededDataDisk(t *testing.T, dir, serial string) string {
	t.Helper()
	src := filepath.Join(dir, "data-seed")
	if err := os.MkdirAll(filepath.Join(src, "identity"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "identity", "serial"), []byte(serial+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "data.img")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "1", "-L", qemu.DataLabel, "-d", src, disk).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}
	return disk
}

func goBuild(t *testing.T, repo, out, pkg string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

func run(t *testing.T, bin string, args ...string) {
	t.Helper()
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

// serve starts licensed and returns the address it listens on; its log
// goes to the test log on failure.
func serve(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var logs syncBuffer
	cmd.Stderr = &logs
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		if t.Failed() {
			t.Logf("licensed log:\n%s", logs.String())
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "licensed: listening on https://"); ok {
				addr <- a
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("licensed exited before listening:\n%s", logs.String())
		}
		return a
	case <-time.After(30 * time.Second):
		t.Fatalf("licensed did not report its address:\n%s", logs.String())
	}
	return ""
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testCA is the vendor's private CA for its licence server.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgepbx e2e licence CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// serverCert writes a server certificate for ips and its key as PEM files.
func (ca *testCA) serverCert(t *testing.T, dir string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "licensed"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// relay carries QEMU's guest-forward connections to licensed, dialling it
// only when the guest sends, and counts the bytes each way.
type relay struct {
	ln       net.Listener
	target   string
	up, down atomic.Int64
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
	closed   bool
}

func newRelay(t *testing.T, target string) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, target: target}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		r.closed = true
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) addr() netip.AddrPort {
	return r.ln.Addr().(*net.TCPAddr).AddrPort()
}

func (r *relay) bytes() (up, down int64) { return r.up.Load(), r.down.Load() }

// track keeps c for cleanup to close; after cleanup it closes c at once.
func (r *relay) track(c net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return false
	}
	r.conns = append(r.conns, c)
	return true
}

func (r *relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		if !r.track(c) {
			return
		}
		r.wg.Add(1)
		go r.carry(c)
	}
}

func (r *relay) carry(guest net.Conn) {
	defer r.wg.Done()
	first := make([]byte, 16<<10)
	n, err := guest.Read(first)
	if err != nil {
		return
	}
	srv, err := net.DialTimeout("tcp", r.target, 10*time.Second)
	if err != nil {
		return
	}
	if !r.track(srv) {
		return
	}
	r.up.Add(int64(n))
	if _, err := srv.Write(first[:n]); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		io.Copy(counting{srv, &r.up}, guest)
	}()
	// The guest's one stream ends with the server's answer; QEMU's side
	// stays open until the VM goes, and cleanup closes it. Bytes are counted
	// as they pass, so a reading taken mid-stream is already complete.
	io.Copy(counting{guest, &r.down}, srv)
	<-done
}

// counting adds what it writes to n as it goes.
type counting struct {
	w io.Writer
	n *atomic.Int64
}

func (c counting) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// checkin is the part of licensed's check-in record the test reads.
type checkin struct {
	Serial      string `json:"serial"`
	InstallID   string `json:"install"`
	Fingerprint string `json:"hw"`
	Firmware    string `json:"fw"`
	Bytes       int    `json:"bytes"`
	Load        struct {
		CPUs       int `json:"cpus"`
		CPUPercent int `json:"cpu"`
		MemMB      int `json:"mem_mb"`
		MemPercent int `json:"mem"`
	} `json:"load"`
}

type licenceRecord struct {
	Fingerprints []string `json:"fingerprints"`
	Clone        bool     `json:"clone"`
}

// adminClient reads licensed's admin API.
type adminClient struct {
	base, token string
	c           *http.Client
}

func (a *adminClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.Unmarshal(body, v)
}

func (a *adminClient) checkins(ctx context.Context, id string) ([]checkin, error) {
	var cis []checkin
	return cis, a.get(ctx, "/admin/licences/"+id+"/checkins", &cis)
}

func (a *adminClient) licence(ctx context.Context, id string) (licenceRecord, error) {
	var l licenceRecord
	return l, a.get(ctx, "/admin/licences/"+id, &l)
}
