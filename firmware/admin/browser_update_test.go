package admin

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
	pid1update "github.com/edgepbx/edgepbx/init/update"
)

// fwSlots is the two slot files and marks of init/slots (UEFI variables,
// which a test process cannot drive).
type fwSlots struct {
	mu    sync.Mutex
	dir   string
	trial string
}

func (s *fwSlots) State() pid1update.BootState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return pid1update.BootState{Booted: "a", Trial: s.trial != "", TrialSlot: s.trial}
}
func (s *fwSlots) Inactive() (pid1update.Slot, error) {
	return pid1update.Slot{Name: "b", Path: filepath.Join(s.dir, "b.img"), Size: 4 << 20}, nil
}
func (s *fwSlots) MarkInvalid(string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trial = ""
	return nil
}
func (s *fwSlots) MarkTrial(n string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trial = n
	return nil
}
func (s *fwSlots) Commit() error         { return errors.New("not a trial boot") }
func (s *fwSlots) Rollback(string) error { return nil }

// TestBrowserFirmwareUpload installs a bundle from the System page in
// Chromium under the real CSP: the upload streams to a real PID-1
// installer over the control socket, the page shows progress and the
// verdict; a bundle for another board is refused with its reason.
func TestBrowserFirmwareUpload(t *testing.T) {
	e, p, base := browserBox(t)
	dir := t.TempDir()
	slots := &fwSlots{dir: dir}
	os.WriteFile(filepath.Join(dir, "b.img"), make([]byte, 4<<20), 0o600)
	rel, _ := bundle.GenerateKey(bundle.RoleRelease)
	kb, _ := bundle.MarshalKeyring([]bundle.KeyringKey{rel.Public()})
	keys, err := bundle.ParseKeyring(kb)
	if err != nil {
		t.Fatal(err)
	}
	in := pid1update.NewInstaller(pid1update.Config{Slots: slots, Keys: keys,
		Running: pid1update.Release{Board: "pc-x86_64", Version: "1.1.0", VersionNumber: 110, Floor: 110}})
	sock := filepath.Join(dir, "init.sock")
	srv, err := control.Listen(control.Config{Path: sock, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		System: nopSystem{}, Updater: &pid1update.Service{In: in}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	defer func() { cancel(); <-done }()
	cc, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	e.srv.updates = cc

	img := bytes.Repeat([]byte("slot image "), 200000) // 2.2 MB
	mk := func(board string) string {
		s256, s512, n, _ := bundle.HashImage(bytes.NewReader(img))
		m := bundle.Manifest{Format: bundle.Format, Board: board, Version: "1.2.0", VersionNumber: 120, Floor: 120,
			ImageSize: n, ImageSHA256: s256, ImageSHA512: s512, KeyID: rel.ID, Created: time.Unix(1800000000, 0).UTC()}
		var b bytes.Buffer
		if err := bundle.WriteHeader(&b, m, rel); err != nil {
			t.Fatal(err)
		}
		b.Write(img)
		return base64.StdEncoding.EncodeToString(b.Bytes())
	}
	choose := func(b64 string) {
		p.Eval(`(() => { const b = Uint8Array.from(atob("`+b64+`"), c => c.charCodeAt(0));
			const dt = new DataTransfer(); dt.items.add(new File([b], "u.bundle"));
			document.getElementById("fw-file").files = dt.files; })()`, nil)
	}
	result := `#fw-upload [data-result]`
	p.Open(base+"/system", "/system")
	if !strings.Contains(p.Str(`document.getElementById("firmware").textContent`), "version number 110") {
		t.Fatalf("firmware section: %q", p.Str(`document.getElementById("firmware").textContent`))
	}
	choose(mk("apu2"))
	p.Submit(`#fw-upload`, "")
	p.WaitFor(`/refused|installed/.test(document.querySelector("` + result + `").textContent)`)
	if got := p.Result(result); !strings.Contains(got, "(board)") || slots.State().Trial {
		t.Fatalf("other board: %q, trial %v", got, slots.State().Trial)
	}
	choose(mk("pc-x86_64"))
	p.Eval(`document.querySelector("`+result+`").textContent = ""`, nil)
	p.Submit(`#fw-upload`, "")
	p.WaitFor(`/installed|refused/.test(document.querySelector("` + result + `").textContent)`)
	if got := p.Result(result); !strings.Contains(got, "installed 1.2.0 in slot b") || slots.State().TrialSlot != "b" {
		t.Fatalf("install: %q, state %+v", got, slots.State())
	}
	if v := p.Str(`String(document.getElementById("fw-progress").value)`); v != "100" {
		t.Fatalf("progress bar at %s", v)
	}
}
