package e2e

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
	"github.com/edgepbx/edgepbx/qemu"
)

// seqLog is the part of licensed's per-install sequence record the test reads.
type seqLog struct {
	InstallID string `json:"install"`
	Last      uint64 `json:"last"`
	Flag      *struct {
		Sent, Last uint64
		Reason     string
	} `json:"flag"`
}

// TestX86RestoredDataKeepsFloors: the /data disk image of a box with a TPM
// is copied before its first check-in; the box checks in (sequence 1, the
// TPM floor raised before the request left); then the old copy is put
// back, as an owner who restores an old /data to win back licence state
// (a fresh grace period, an unused sequence) would. Booted on the old
// /data, the box continues from the TPM's floors: its next check-in carries
// a higher sequence than the last one the vendor saw, no rollback flag is
// raised, and the NV floors read from the host never went down. With the
// floors in /data the box would send sequence 1 again.
func TestX86RestoredDataKeepsFloors(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	swtpmtest.Require(t)
	dir := t.TempDir()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
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
	img := buildLicenseImage(t, repo, ca.pem, vendorPub, fmt.Sprintf("https://%s", licenseGuestAddr.Addr()))
	disk := seededDataDisk(t, dir, licenseSerial)
	chip := filepath.Join(dir, "tpm")
	t.Logf("%.1fs: vendor server and image ready", time.Since(start).Seconds())

	// bootCheckin boots, waits until the vendor holds want check-ins and
	// powers off; it returns the sequence records.
	bootCheckin := func(want int) []seqLog {
		t.Helper()
		relay := newRelay(t, srvAddr) // QEMU holds one idle connection per start
		vm := boot(t, img, qemu.WithDataDisk(disk), qemu.WithHostForward("tcp", 0, 443),
			qemu.WithGuestForward(licenseGuestAddr, relay.addr()), qemu.WithTPM(swtpmtest.StartForQEMU(t, chip).Ctrl))
		ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
		defer cancel()
		for {
			cis, err := admin.checkins(ctx, licenseSerial)
			if err == nil && len(cis) >= want {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("check-in %d never recorded (last error %v)\n%s", want, err, vm.Tail(40))
			}
			time.Sleep(time.Second)
		}
		var seqs []seqLog
		if err := admin.get(ctx, "/admin/licences/"+licenseSerial+"/seqs", &seqs); err != nil {
			t.Fatal(err)
		}
		powerdown(t, vm)
		return seqs
	}
	floors := func() map[string]uint64 {
		t.Helper()
		tpm := swtpmtest.Start(t, chip)
		defer tpm.Stop()
		fl, err := keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock))
		if err != nil {
			t.Fatal(err)
		}
		return fl.All()
	}

	old := filepath.Join(dir, "data-old.img")
	if out, err := exec.Command("cp", "--sparse=always", disk, old).CombinedOutput(); err != nil {
		t.Fatalf("copy /data: %v %s", err, out)
	}
	first := bootCheckin(1)
	floorsBefore := floors()
	if len(first) != 1 || first[0].Last == 0 || floorsBefore[license.FloorSeq] < first[0].Last {
		t.Fatalf("after the first check-in: vendor %+v, TPM floors %v", first, floorsBefore)
	}
	// Put the old /data back.
	if err := os.Rename(old, disk); err != nil {
		t.Fatal(err)
	}
	second := bootCheckin(2)
	floorsAfter := floors()
	var last uint64
	for _, l := range second {
		last = max(last, l.Last)
		if l.Flag != nil {
			t.Errorf("vendor flagged a rollback from the restored /data: %+v", l)
		}
	}
	t.Logf("vendor's sequence records: %+v before the restore, %+v after; TPM floors %v -> %v", first, second, floorsBefore, floorsAfter)
	if last <= first[0].Last {
		t.Errorf("on the restored /data the box checked in with sequence %d, not past %d: the floor went back", last, first[0].Last)
	}
	for name, v := range floorsBefore {
		if floorsAfter[name] < v {
			t.Errorf("TPM floor %s went back from %d to %d", name, v, floorsAfter[name])
		}
	}
	t.Logf("TestX86RestoredDataKeepsFloors: 2 boots in %.1fs", time.Since(start).Seconds())
}
