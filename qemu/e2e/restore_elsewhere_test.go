package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
	"github.com/edgepbx/edgepbx/qemu"
)

// scannerProbe is a SIP setting box A changes, to be found on box B.
const scannerProbe = "vm2-restore-probe/1.0"

// TestX86RestoreOnSecondBox: box A (own data disk, own software TPM) is
// claimed and filled: extensions, a trunk with a sealed password, a SIP
// setting. Its backup, downloaded through the API and encrypted to the
// backup key, is restored through the API on box B: a second VM with a
// fresh disk, another TPM and so another identity. B then serves A's
// extensions, telephony (trunk) and SIP settings field by field, one of A's
// extensions registers on B with the password A generated (its sealed
// digest was re-sealed under B's keys), B keeps its own serial and
// certificate, and B's audit log records the restore of box A's backup.
func TestX86RestoreOnSecondBox(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	swtpmtest.Require(t)
	bin := baresiptest.Need(t)
	img := buildImage(t, "qemu-x86_64")
	start := time.Now()
	bootBox := func(name string) (*qemu.VM, map[string]string, *boxAdmin) {
		dir := t.TempDir()
		tpm := swtpmtest.StartForQEMU(t, filepath.Join(dir, "tpm-"+name))
		vm := boot(t, img, qemu.WithDataDisk(filepath.Join(dir, "data-"+name+".img")), qemu.WithTPM(tpm.Ctrl),
			qemu.WithHostForward("tcp", 0, 443), qemu.WithHostForward("tcp", 0, 5060))
		b := banner(t, vm)
		a := newBoxAdmin(t, "https://127.0.0.1:"+strconv.Itoa(vm.HostPort("tcp", 443)), b["tls sha256"])
		healthzEventually(t, vm.HostPort("tcp", 443))
		a.claim(b["setup code"])
		return vm, b, a
	}

	// Box A: claim and fill.
	vmA, bannerA, a := bootBox("a")
	serialA := bannerA["serial"]
	if serialA == "" {
		t.Fatalf("box A banner without serial: %v", bannerA)
	}
	extPW := map[string]string{}
	for _, u := range []string{"201", "202"} {
		extPW[u] = a.extension(u)
	}
	a.do(http.StatusOK, "PUT", "/api/v1/telephony", telephonyWithTrunk(0, "201"))
	var sip struct {
		Settings map[string]any `json:"settings"`
	}
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &sip); err != nil {
		t.Fatal(err)
	}
	uas, _ := sip.Settings["scanner_user_agents"].([]any)
	sip.Settings["scanner_user_agents"] = append(uas, scannerProbe)
	a.do(http.StatusOK, "PUT", "/api/v1/sip/settings", sip.Settings)
	extsA := a.do(http.StatusOK, "GET", "/api/v1/extensions", nil)
	telA := a.do(http.StatusOK, "GET", "/api/v1/telephony", nil)
	sipA := sipSettings(t, a)
	if !strings.Contains(string(sipA), scannerProbe) {
		t.Fatalf("box A did not keep the SIP setting: %s", sipA)
	}
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
	powerdown(t, vmA)
	t.Logf("%.1fs: box A %s filled and backed up (%d bytes)", time.Since(start).Seconds(), serialA, len(backupFile))

	// Box B: another disk, another TPM, so another identity.
	vmB, bannerB, b := bootBox("b")
	serialB := bannerB["serial"]
	if serialB == "" || serialB == serialA || bannerB["tls sha256"] == bannerA["tls sha256"] {
		t.Fatalf("box B is not another box: serial %q (A %q), certificate %q (A %q)", serialB, serialA, bannerB["tls sha256"], bannerA["tls sha256"])
	}
	var up struct{ Upload string }
	if err := json.Unmarshal(b.raw(http.StatusCreated, "POST", "/api/v1/backups/upload", backupFile), &up); err != nil {
		t.Fatal(err)
	}
	b.do(http.StatusOK, "POST", "/api/v1/backups/restore", map[string]string{"upload": up.Upload, "identity": key.Identity, "current_password": ownerPW})
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	// edgepbxd exits after a restore and PID 1 starts it on the restored store.
	if _, err := vmB.WaitLine(ctx, "edgepbx: edgepbxd ready"); err != nil {
		t.Fatal(err)
	}
	b = newBoxAdmin(t, b.base, bannerB["tls sha256"]) // B's own certificate, pinned
	healthzEventually(t, vmB.HostPort("tcp", 443))
	b.login("owner1", ownerPW)
	t.Logf("%.1fs: box B %s restored A's backup", time.Since(start).Seconds(), serialB)

	for _, c := range []struct {
		what     string
		got, was []byte
	}{
		{"extensions", b.do(http.StatusOK, "GET", "/api/v1/extensions", nil), extsA},
		{"telephony (trunk, routes)", b.do(http.StatusOK, "GET", "/api/v1/telephony", nil), telA},
		{"SIP settings", sipSettings(t, b), sipA},
	} {
		if !jsonEqual(c.got, c.was) {
			t.Errorf("%s on box B:\n%s\non box A:\n%s", c.what, c.got, c.was)
		}
	}

	// B keeps its identity: still served with B's certificate (pinned
	// above), and neither its status nor what it tells a phone names box A.
	for _, path := range []string{"/api/v1/status", "/api/v1/extensions/201/connect"} {
		got := string(b.do(http.StatusOK, "GET", path, nil))
		for _, a := range []string{serialA, bannerA["hostname"]} {
			if a != "" && strings.Contains(got, a) {
				t.Errorf("box B's %s names box A (%s): %.600s", path, a, got)
			}
		}
		if path != "/api/v1/status" && !strings.Contains(got, bannerB["hostname"]) {
			t.Errorf("box B's %s does not name B's host %q: %.600s", path, bannerB["hostname"], got)
		}
	}
	var audit struct {
		Entries []struct {
			Action, Detail, Outcome string
		} `json:"entries"`
	}
	raw := b.do(http.StatusOK, "GET", "/api/v1/audit?limit=200", nil)
	if err := json.Unmarshal(raw, &audit); err != nil {
		t.Fatalf("audit: %v: %.300s", err, raw)
	}
	found := false
	for _, e := range audit.Entries {
		if strings.Contains(e.Detail, "restored backup of box "+serialA) {
			found = true
		}
	}
	if !found {
		t.Errorf("box B's audit log does not record the restore of box %s: %.2000s", serialA, raw)
	}
	if b.do(http.StatusOK, "GET", "/api/v1/audit/verify", nil) == nil {
		t.Error("audit verify answered nothing")
	}

	// Extension 201 registers on B with the password A generated: its
	// sealed digest opened under B's keys. SIP over TCP through the
	// forwarded port (user-mode networking drops the guest's UDP).
	sipPort := vmB.HostPort("tcp", 5060)
	rctx, rcancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer rcancel()
	phone := baresiptest.Start(rctx, t, bin, baresiptest.Config{Name: "201", Accounts: []string{
		fmt.Sprintf("<sip:201@127.0.0.1:%d;transport=tcp>;auth_pass=%s;regint=300", sipPort, extPW["201"])}})
	phone.WaitRegistered(rctx, t, 1)
	if regs := string(b.do(http.StatusOK, "GET", "/api/v1/registrations", nil)); !strings.Contains(regs, "baresip") {
		t.Errorf("registrations on box B after 201 registered: %.600s", regs)
	}
	phone.Stop(t)
	powerdown(t, vmB)
	t.Logf("restore on a second box: 2 boxes, 3 edgepbxd starts in %.1fs", time.Since(start).Seconds())
}

// sipSettings is the stored SIP settings without the running edge's state.
func sipSettings(t *testing.T, a *boxAdmin) []byte {
	t.Helper()
	var v struct {
		Settings json.RawMessage `json:"settings"`
	}
	if err := json.Unmarshal(a.do(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	return v.Settings
}
