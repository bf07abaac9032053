package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/image"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/qemu"
)

const (
	ownerPW = "Vz4#mq9!Tr2$kw-lab" // boxAdmin.claim's
	trunkPW = "TrunkPW-Zq81-known-secret"
	// clearMarker is stored in the clear (a trunk's host name): found on
	// the raw disk before the reset, it proves the scan reads the store's
	// blocks; gone afterwards, it proves the wipe overwrote them.
	clearMarker = "pbx-marker-7f3a9c.example.net"
)

// login starts a session for user (no second factor on these accounts).
func (a *boxAdmin) login(user, pw string) {
	a.t.Helper()
	var ans struct {
		Status    string `json:"status"`
		CSRFToken string `json:"csrf_token"`
	}
	out := a.do(http.StatusOK, "POST", "/api/v1/login", map[string]string{"username": user, "password": pw})
	if err := json.Unmarshal(out, &ans); err != nil || ans.CSRFToken == "" {
		a.t.Fatalf("login answer %s (%v)", out, err)
	}
	a.csrf = ans.CSRFToken
}

// raw sends body as it is (a backup upload).
func (a *boxAdmin) raw(want int, method, path string, body []byte) []byte {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Origin", a.base)
	req.Header.Set("X-CSRF-Token", a.csrf)
	resp, err := a.c.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != want {
		a.t.Fatalf("%s %s = %d, want %d: %.300s", method, path, resp.StatusCode, want, out)
	}
	return out
}

func telephonyWithTrunk(version int64, ext string) pbxconfig.Telephony {
	c := pbxconfig.DefaultTelephony()
	c.Version = version
	c.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: clearMarker + ":5060", Transport: "udp", Auth: pbxconfig.TrunkAuthRegister,
		Username: "trunkuser", Domain: clearMarker, Password: trunkPW}}
	c.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
	c.Extensions = []dialplan.Extension{{Number: ext, Classes: []dialplan.Class{dialplan.Internal}}}
	return c
}

// readDiskFile reads a file out of the (not running) ext4 data disk.
// diskKeys reads the key hierarchy of a box without a TPM off its raw
// data disk (the plain device key and the wrapped data keys) and opens it
// on the host: what an attacker holding such a disk gets.
func diskKeys(t *testing.T, disk string) (kek []byte, wrapped map[keys.Purpose][]byte, ring *keys.Ring) {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, keys.DataKeyDir), 0o700); err != nil {
		t.Fatal(err)
	}
	kek = readDiskFile(t, disk, "/identity/"+keys.PlainFile)
	if err := os.WriteFile(filepath.Join(dir, keys.PlainFile), kek, 0o600); err != nil {
		t.Fatal(err)
	}
	wrapped = map[keys.Purpose][]byte{}
	for _, p := range keys.Purposes {
		name := string(p) + ".key"
		wrapped[p] = readDiskFile(t, disk, "/identity/"+keys.DataKeyDir+"/"+name)
		if err := os.WriteFile(filepath.Join(dir, keys.DataKeyDir, name), wrapped[p], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ring, err := keys.Open(dir, keys.Options{})
	if err != nil {
		t.Fatalf("key hierarchy on the disk: %v", err)
	}
	return kek, wrapped, ring
}

func readDiskFile(t *testing.T, disk, path string) []byte {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, disk).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return out
}

// scanDisk returns which needles occur in the raw disk image.
func scanDisk(t *testing.T, disk string, needles map[string][]byte) map[string]bool {
	t.Helper()
	img, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for name, n := range needles {
		if len(n) > 0 && bytes.Contains(img, n) {
			found[name] = true
		}
	}
	return found
}

func waitExit(t *testing.T, vm *qemu.VM, within time.Duration) {
	t.Helper()
	select {
	case <-vm.Exited():
	case <-time.After(within):
		t.Fatalf("box did not restart within %s\n%s", within, vm.Tail(40))
	}
}

func powerdown(t *testing.T, vm *qemu.VM) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if err := vm.Powerdown(ctx); err != nil {
		t.Fatalf("powerdown: %v", err)
	}
}

// TestX86FactoryReset: a claimed box with extensions, a trunk and a backup
// is reset from the API; it comes up unclaimed with a new setup code, the
// raw data disk holds neither the old device key nor the store's blocks,
// and the backup restores on the fresh box field by field. Then a reset
// from the kernel command line: cancelled when the console does not
// confirm, done when it does.
func TestX86FactoryReset(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4", "debugfs")
	img := buildImage(t, "qemu-x86_64")
	disk := filepath.Join(t.TempDir(), "data.img")
	opts := []qemu.Option{qemu.WithDataDisk(disk), qemu.WithHostForward("tcp", 0, 443)}
	start := time.Now()

	// Boot 1: claim, extensions, trunk, backup.
	vm := boot(t, img, opts...)
	first := banner(t, vm)
	a := newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), first["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.claim(first["setup code"])
	extPW := map[string]string{}
	for _, u := range []string{"201", "202"} {
		extPW[u] = a.extension(u)
	}
	a.do(http.StatusOK, "PUT", "/api/v1/telephony", telephonyWithTrunk(0, "201"))
	extsBefore := a.do(http.StatusOK, "GET", "/api/v1/extensions", nil)
	telBefore := a.do(http.StatusOK, "GET", "/api/v1/telephony", nil)
	// The backup key (X25519), not a passphrase: age's scrypt (256 MiB)
	// takes minutes under TCG and was OOM-killed on the 512 MiB VM.
	var key struct{ Identity string }
	if err := json.Unmarshal(a.do(http.StatusOK, "POST", "/api/v1/backups/key", map[string]string{"current_password": ownerPW}), &key); err != nil ||
		!strings.HasPrefix(key.Identity, "AGE-SECRET-KEY-") {
		t.Fatalf("backup key: %v", err)
	}
	var made struct{ Name string }
	if err := json.Unmarshal(a.do(http.StatusCreated, "POST", "/api/v1/backups", map[string]string{}), &made); err != nil || made.Name == "" {
		t.Fatalf("backup: %v", err)
	}
	backupFile := a.raw(http.StatusOK, "GET", "/api/v1/backups/"+made.Name, nil)
	powerdown(t, vm)

	oldKey, wrapped, _ := diskKeys(t, disk)
	if len(oldKey) != 32 {
		t.Fatalf("device key on disk: %d bytes", len(oldKey))
	}
	needles := map[string][]byte{
		"device key":         oldKey,
		"device key hex":     []byte(hex.EncodeToString(oldKey)),
		"wrapped store key":  wrapped[keys.Store],
		"wrapped backup key": wrapped[keys.Backup],
		"trunk password":     []byte(trunkPW),
		"owner password":     []byte(ownerPW),
		"backup key":         []byte(key.Identity),
		"clear marker":       []byte(clearMarker),
	}
	for u, pw := range extPW {
		needles["extension "+u+" password"] = []byte(pw)
	}
	before := scanDisk(t, disk, needles)
	// The scan must see the disk: the key file and the store's clear
	// text are there before the reset.
	if !before["device key"] || !before["clear marker"] {
		t.Fatalf("scan before the reset found %v: it does not read the data blocks", before)
	}
	t.Logf("before the reset the raw disk holds: %v", before)

	// Boot 2: factory reset from the API.
	vm = boot(t, img, opts...)
	second := banner(t, vm)
	a = newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), second["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.login("owner1", ownerPW)
	a.do(http.StatusUnprocessableEntity, "POST", "/api/v1/system/factory-reset", map[string]string{"confirm": "ERASE", "current_password": "wrong-password-1"})
	a.do(http.StatusAccepted, "POST", "/api/v1/system/factory-reset", map[string]string{"confirm": "ERASE", "current_password": ownerPW})
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	if _, err := vm.WaitLine(ctx, "edgepbx: factory reset done"); err != nil {
		t.Fatal(err)
	}
	waitExit(t, vm, stepTimeout)

	after := scanDisk(t, disk, needles)
	for name := range after {
		t.Errorf("after the factory reset the raw data disk still holds the %s", name)
	}

	// Boot 3: unclaimed, new setup code, a new key; the backup restores.
	vm = boot(t, img, opts...)
	third := banner(t, vm)
	if third["setup code"] == "" || third["setup code"] == first["setup code"] || third["setup code"] == second["setup code"] {
		t.Errorf("setup code after reset %q (before %q, %q)", third["setup code"], first["setup code"], second["setup code"])
	}
	if third["tls sha256"] == first["tls sha256"] {
		t.Error("admin certificate survived the reset")
	}
	a = newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), third["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.claim(third["setup code"])
	if got := a.do(http.StatusOK, "GET", "/api/v1/extensions", nil); bytes.Contains(got, []byte(`"201"`)) {
		t.Fatalf("extensions after the reset: %s", got)
	}
	var up struct{ Upload string }
	if err := json.Unmarshal(a.raw(http.StatusCreated, "POST", "/api/v1/backups/upload", backupFile), &up); err != nil {
		t.Fatal(err)
	}
	a.do(http.StatusOK, "POST", "/api/v1/backups/restore", map[string]string{"upload": up.Upload, "identity": key.Identity, "current_password": ownerPW})
	if _, err := vm.WaitLine(ctx, "edgepbx: edgepbxd ready"); err != nil {
		t.Fatal(err)
	}
	a = newBoxAdmin(t, a.base, third["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.login("owner1", ownerPW)
	if got := a.do(http.StatusOK, "GET", "/api/v1/extensions", nil); !jsonEqual(got, extsBefore) {
		t.Errorf("extensions after restore:\n%s\nbefore the reset:\n%s", got, extsBefore)
	}
	if got := a.do(http.StatusOK, "GET", "/api/v1/telephony", nil); !jsonEqual(got, telBefore) {
		t.Errorf("telephony after restore:\n%s\nbefore the reset:\n%s", got, telBefore)
	}
	powerdown(t, vm)

	// Boot 4: the flag on the kernel command line, not confirmed: nothing
	// is erased (a flag left in the boot loader must not wipe every boot).
	cmdline := append(append([]qemu.Option{}, opts...), qemu.WithAppend("edgepbx.factory_reset=1"))
	vm = bootReset(t, img, "no", cmdline...)
	if _, err := vm.WaitFirst(ctx, "edgepbx: factory reset cancelled"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, vm)
	b4 := banner(t, vm)
	if b4["setup code"] != "" { // shown only while unclaimed
		t.Errorf("box unclaimed after a cancelled reset: banner %v", b4)
	}
	powerdown(t, vm)

	// Boot 5: confirmed on the console.
	vm = bootReset(t, img, "ERASE", cmdline...)
	if _, err := vm.WaitFirst(ctx, "edgepbx: factory reset done", "edgepbx: HALTED"); err != nil {
		t.Fatal(err)
	}
	waitReady(t, vm)
	fifth := banner(t, vm)
	a = newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), fifth["tls sha256"])
	healthzEventually(t, vm.HostPort("tcp", 443))
	a.claim(fifth["setup code"]) // unclaimed again: the restored owner is gone
	powerdown(t, vm)
	t.Logf("factory reset test: 5 boots in %.1fs", time.Since(start).Seconds())
}

// bootReset boots with the reset flag and answers the console prompt.
func bootReset(t *testing.T, img *image.Image, answer string, opts ...qemu.Option) *qemu.VM {
	t.Helper()
	opts = append([]qemu.Option{qemu.WithConsoleLog(&consoleLog{tb: t})}, opts...)
	vm, err := qemu.Boot(context.Background(), img, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(vm.Kill)
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: FACTORY RESET requested on the kernel command line", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("halted: %s", line)
	}
	if err := vm.SendLine(answer); err != nil {
		t.Fatal(err)
	}
	return vm
}

func waitReady(t *testing.T, vm *qemu.VM) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	defer cancel()
	line, err := vm.WaitFirst(ctx, "edgepbx: ready", "edgepbx: HALTED")
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "edgepbx: HALTED") {
		t.Fatalf("halted: %s\n%s", line, vm.Tail(40))
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}
