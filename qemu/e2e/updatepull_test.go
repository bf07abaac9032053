package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/qemu"
)

// updateGuestAddr is where the box reaches the vendor's update repository
// (a guest forward to the host's file server).
var updateGuestAddr = netip.MustParseAddrPort("10.0.2.101:443")

// repoServer serves a TUF repository's plain files over HTTPS, as any
// web server or CDN would, and counts what it sends per path.
type repoServer struct {
	addr netip.AddrPort
	mu   sync.Mutex
	sent map[string]int64
	reqs atomic.Int64
}

func newRepoServer(t *testing.T, dir, certFile, keyFile string) *repoServer {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rs := &repoServer{addr: ln.Addr().(*net.TCPAddr).AddrPort(), sent: map[string]int64{}}
	files := http.FileServer(http.Dir(dir))
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rs.reqs.Add(1)
			cw := &countingWriter{ResponseWriter: w}
			files.ServeHTTP(cw, r)
			rs.mu.Lock()
			rs.sent[r.URL.Path] += cw.n
			rs.mu.Unlock()
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 30 * time.Second,
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return rs
}

func (rs *repoServer) bytes(path string) int64 {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.sent[path]
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// pullReport is the update service's last look at the repository.
type pullReport struct {
	Action string `json:"action"`
	Detail string `json:"detail"`
	Newest *struct {
		Version string `json:"version"`
	} `json:"newest"`
}

func (a *boxAdmin) lastPull() pullReport {
	a.t.Helper()
	var v struct {
		Last pullReport `json:"last"`
	}
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/update/policy", nil), &v); err != nil {
		a.t.Fatal(err)
	}
	return v.Last
}

// TestUpdatePullTUFUEFI: a box booted from the disk image pulls its update
// from a TUF repository the vendor keeps with `edgepbx repo` and serves
// from the host as plain files over HTTPS (its CA in the image). Nobody
// uploads or reboots: under an "all" policy the box installs the newer
// bundle by itself, restarts into the trial since no call is in progress,
// and commits once healthy. Then the repository is replayed (yesterday's
// timestamp, validly signed): the box refuses it, says so, audits it, and
// nothing changes.
func TestUpdatePullTUFUEFI(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4", "busybox")
	requireFirmware(t, "ovmf", ovmfCode, ovmfVars)
	dir := t.TempDir()
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}

	// The vendor's side: the real CLI keeps the repository.
	cli := filepath.Join(dir, "edgepbx")
	goBuild(t, src, cli, "./cmd/edgepbx")
	repoDir, tufKeys := filepath.Join(dir, "repo"), filepath.Join(dir, "tuf-keys")
	run(t, cli, "repo", "init", "--dir", repoDir, "--keys", tufKeys)
	root, err := os.ReadFile(filepath.Join(repoDir, "1.root.json"))
	if err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t)
	certFile, keyFile := ca.serverCert(t, dir, updateGuestAddr.Addr().AsSlice())
	srv := newRepoServer(t, repoDir, certFile, keyFile)
	release, err := bundle.GenerateKey(bundle.RoleRelease)
	if err != nil {
		t.Fatal(err)
	}
	keyring, err := bundle.MarshalKeyring([]bundle.KeyringKey{release.Public()})
	if err != nil {
		t.Fatal(err)
	}
	trust := func(n uint64) image.UpdateTrust {
		return image.UpdateTrust{VersionNumber: n, Keyring: keyring, TUFRoot: root, RepoCA: ca.pem,
			RepoURL: fmt.Sprintf("https://%s/", updateGuestAddr.Addr())}
	}
	const n = 2
	start := time.Now()
	oldImg := buildUpdatableTrust(t, filepath.Join(dir, "n"), "e2e-2", trust(n))
	newImg := buildUpdatableTrust(t, filepath.Join(dir, "n1"), "e2e-3", trust(n+1))
	t.Logf("two image builds: %.1fs", time.Since(start).Seconds())
	good := filepath.Join(dir, "edgepbx-e2e-3.bundle")
	size := signSlot(t, newImg.Disk.Slot, good, release, "e2e-3", n+1)

	u := &qemu.UEFI{Code: ovmfCode, Vars: filepath.Join(dir, "vars.fd"), Disk: filepath.Join(dir, "disk.img")}
	copyFile(t, ovmfVars, u.Vars)
	copyFile(t, oldImg.Disk.Path, u.Disk)
	fwd := []qemu.Option{qemu.WithHostForward("tcp", 0, 443), qemu.WithGuestForwardEach(updateGuestAddr, srv.addr)}

	// Boot 1: version N; its first look at the repository finds nothing newer.
	vm, b1 := uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot a booted, slot a committed")
	healthzEventually(t, vm.HostPort("tcp", 443))
	a := newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), b1["tls sha256"])
	a.claim(b1["setup code"])
	waitPull(t, a, vm, func(r pullReport) bool { return r.Action == "up-to-date" })
	stale, err := os.ReadFile(filepath.Join(repoDir, "timestamp.json")) // what a replaying mirror will serve later
	if err != nil {
		t.Fatal(err)
	}

	// The vendor publishes N+1; the admin lets the box install everything
	// at any time. Nothing else: the box installs and restarts by itself.
	run(t, cli, "repo", "add", good, "--dir", repoDir, "--keys", tufKeys)
	t0 := time.Now()
	a.do(http.StatusOK, "PUT", "/api/v1/update/policy", map[string]any{"mode": "all", "window": map[string]any{"start": "00:00", "hours": 24}})
	waitExit(t, vm, 10*time.Minute) // the box reboots into the trial by itself
	installed := time.Since(t0)
	fetched := srv.bytes("/targets/pc-x86_64/edgepbx-e2e-3.bundle")
	if fetched != size {
		t.Fatalf("the box fetched %d bytes of the %d-byte bundle", fetched, size)
	}
	vm, _ = uefiBootWith(t, qemu.ArchX86_64, u, fwd, "edgepbx: slot b booted, slot a committed (trial boot")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: update committed", "edgepbx: UPDATE ROLLED BACK")
	if err != nil || !strings.HasPrefix(line, "edgepbx: update committed: slot b, version e2e-3") {
		t.Fatalf("trial: %v %s\n%s", err, line, vm.Tail(40))
	}
	t.Logf("pulled update: policy set to committed %.1fs (fetch, verify, write and restart %.1fs); bundle %d bytes fetched once, %d requests to the repository",
		time.Since(t0).Seconds(), installed.Seconds(), fetched, srv.reqs.Load())
	a = newBoxAdmin(t, fmt.Sprintf("https://127.0.0.1:%d", vm.HostPort("tcp", 443)), b1["tls sha256"])
	a.login("owner1", ownerPW)
	after, afterRaw := a.updateStatus()
	if after.VersionNumber != n+1 || after.Trial == nil || !after.Trial.Committed || after.Floor != n+1 {
		t.Fatalf("after commit: %s; want version number %d committed, floor %d", afterRaw, n+1, n+1)
	}
	var audit struct {
		Entries []struct{ Actor, Outcome, Detail string } `json:"entries"`
	}
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/audit?action=update.restart", nil), &audit); err != nil {
		t.Fatal(err)
	}
	if len(audit.Entries) != 1 || audit.Entries[0].Actor != "system" || !strings.Contains(audit.Entries[0].Detail, "e2e-3") {
		t.Fatalf("audit update.restart: %+v; want the system's restart into e2e-3", audit.Entries)
	}

	// A mirror replays yesterday's repository: refused, said, audited; nothing changes.
	waitPull(t, a, vm, func(r pullReport) bool { return r.Action == "up-to-date" })
	if err := os.WriteFile(filepath.Join(repoDir, "timestamp.json"), stale, 0o644); err != nil {
		t.Fatal(err)
	}
	var rep pullReport
	if err := json.Unmarshal(a.do(http.StatusOK, "POST", "/api/v1/update/pull", nil), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Action != "failed" || !strings.Contains(rep.Detail, "replayed") {
		t.Fatalf("replayed timestamp: %+v; want a failure naming the replay", rep)
	}
	t.Logf("replayed repository refused: %s", rep.Detail)
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/audit?action=update.pull", nil), &audit); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit.Entries {
		found = found || (e.Outcome == "failed" && strings.Contains(e.Detail, "replayed"))
	}
	if !found {
		t.Fatalf("audit update.pull: %+v; want the refused replay", audit.Entries)
	}
	if _, raw := a.updateStatus(); raw != afterRaw {
		t.Fatalf("the replay changed the update status:\n%s\nthen\n%s", afterRaw, raw)
	}
	vm.Kill()
}

// waitPull waits for the update service's last look to satisfy ok.
func waitPull(t *testing.T, a *boxAdmin, vm *qemu.VM, ok func(pullReport) bool) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		r := a.lastPull()
		if ok(r) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the box's look at the repository: %+v\n%s", r, vm.Tail(40))
		}
		time.Sleep(2 * time.Second)
	}
}
