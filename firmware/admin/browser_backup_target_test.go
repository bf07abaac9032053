package admin

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/backup"
	"github.com/edgepbx/edgepbx/firmware/backup/sftptest"
	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestBrowserBackupTarget drives the System page's remote-target controls
// in Chromium under the real CSP: set the SFTP target (re-authenticated),
// upload to it now, then restore a backup fetched from it by name.
func TestBrowserBackupTarget(t *testing.T) {
	e, p, base := browserBox(t)
	peer := sftptest.Start(t)
	bk := e.srv.backups.(*backup.Service)
	identity, _, err := bk.GenerateKey(backup.Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.exts.Set("1003", "Ext-Password-1003-x"); err != nil {
		t.Fatal(err)
	}
	f, err := bk.Create(backup.Manual, backup.Encryption{}, backup.Actor{Name: "root1"})
	if err != nil {
		t.Fatal(err)
	}

	p.Open(base+"/system", "/system")
	p.Eval(`document.querySelector("#sftp-target [name=enabled]").checked = true`, nil)
	p.Fill(map[string]string{"#sftp-host": "127.0.0.1", "#sftp-port": strconv.Itoa(peer.Port), "#sftp-path": peer.Dir,
		"#sftp-user": peer.User, "#sftp-password": peer.Password, "#sftp-host-key": peer.HostKey, "#reauth-password": adminPW})
	p.SubmitNav(`#sftp-target`)
	if v, err := bk.Targets(); err != nil || len(v) != 1 || !v[0].Enabled || v[0].Port != peer.Port || !v[0].PasswordSet {
		t.Fatalf("target after the form: %+v %v", v, err)
	}

	p.Eval(`window.__oldPage = true`, nil)
	p.Click(`#targets-push`)
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete" && document.getElementById("sftp-status") !== null`)
	if got := p.Str(`document.getElementById("sftp-status").textContent`); !strings.Contains(got, "1 backup(s) uploaded") {
		t.Fatalf("status on the page: %q", got)
	}
	if _, err := os.Stat(filepath.Join(peer.Dir, f.Name)); err != nil {
		t.Fatalf("not on the target: %v", err)
	}

	if err := e.exts.Delete("1003"); err != nil {
		t.Fatal(err)
	}
	if err := bk.Delete(f.Name, backup.Actor{Name: "root1"}); err != nil {
		t.Fatal(err)
	}
	p.Eval(`document.getElementById("bk-remote-kind").value = "sftp"`, nil)
	p.Fill(map[string]string{"#bk-remote-name": f.Name, "#bk-id": identity, "#reauth-password": adminPW})
	p.Submit(`form[data-restore]`, `form[data-restore] [data-result]`)
	p.WaitFor(`/restored|refused|failed|error|no such/.test(document.querySelector("form[data-restore] [data-result]").textContent)`)
	if got := p.Result(`form[data-restore] [data-result]`); !strings.Contains(got, "restored") {
		t.Fatalf("restore from the target: %q", got)
	}
	var found bool
	if err := e.db.View(func(tx *store.Tx) error {
		var v map[string]any
		var err error
		found, err = tx.Get("sip.extensions", "1003", &v)
		return err
	}); err != nil || !found {
		t.Fatalf("extension 1003 not restored: %v", err)
	}
}
