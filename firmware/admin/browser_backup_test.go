package admin

import (
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestBrowserBackupRestore drives the system page's backup section in
// Chromium under the real CSP: generate the key (shown once, offered as a
// file), back up now, then restore that file through the upload form.
func TestBrowserBackupRestore(t *testing.T) {
	e, p, base := browserBox(t)
	if err := e.exts.Set("1002", "Ext-Password-1002-x"); err != nil {
		t.Fatal(err)
	}
	p.Open(base+"/system", "/system")
	p.Fill(map[string]string{"#reauth-password": adminPW})
	p.Submit(`form[data-api="/api/v1/backups/key"]`, `form[data-api="/api/v1/backups/key"] [data-result]`)
	res := p.Result(`form[data-api="/api/v1/backups/key"] [data-result]`)
	i := strings.Index(res, "AGE-SECRET-KEY-1")
	if i < 0 || p.Str(`String(document.getElementById("backup-key-file").hidden)`) != "false" {
		t.Fatalf("key not shown or not offered as a file: %q", res)
	}
	identity := strings.Fields(res[i:])[0]

	p.Open(base+"/system", "/system")
	p.Eval(`window.__oldPage = true`, nil)
	p.Click(`button[data-api="/api/v1/backups"]`)
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete" && document.querySelector("#backups a[download]") !== null`)

	if err := e.exts.Delete("1002"); err != nil {
		t.Fatal(err)
	}
	// Put the downloaded backup into the file field, as choosing it would.
	p.Eval(`fetch(document.querySelector("#backups a[download]").href).then(r => r.blob()).then(b => {
		const dt = new DataTransfer(); dt.items.add(new File([b], "b.age"));
		document.getElementById("bk-file").files = dt.files; window.__file = true; })`, nil)
	p.WaitFor(`window.__file === true`)
	p.Fill(map[string]string{"#bk-id": identity, "#reauth-password": adminPW})
	p.Submit(`form[data-restore]`, `form[data-restore] [data-result]`)
	p.WaitFor(`/restored|refused|failed|error/.test(document.querySelector("form[data-restore] [data-result]").textContent)`)
	if got := p.Result(`form[data-restore] [data-result]`); !strings.Contains(got, "restored") {
		t.Fatalf("restore: %q", got)
	}
	var found bool
	if err := e.db.View(func(tx *store.Tx) error {
		var v map[string]any
		var err error
		found, err = tx.Get("sip.extensions", "1002", &v)
		return err
	}); err != nil || !found {
		t.Fatalf("extension 1002 not restored: %v", err)
	}
}
