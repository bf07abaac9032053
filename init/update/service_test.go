package update

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/init/bundle"
	"github.com/edgepbx/edgepbx/init/control"
)

type nopSystem struct{}

func (nopSystem) Health(control.Health) {}
func (nopSystem) Reboot() error         { return nil }
func (nopSystem) Poweroff() error       { return nil }

// serve runs a real control socket with the rig's installer behind it.
func (r *rig) serve(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "init.sock")
	srv, err := control.Listen(control.Config{Path: path, UID: uint32(os.Getuid()), GID: uint32(os.Getgid()),
		System: nopSystem{}, Updater: &Service{In: r.in}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

func TestControlInstallUpdate(t *testing.T) {
	r := newRig(t)
	path := r.serve(t)
	img := image(200<<10, 8)
	b := makeBundle(t, r.rel, img, nil)
	res, err := control.InstallUpdate(context.Background(), path, bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if res.Slot != "b" || res.VersionNumber != 120 || res.BytesWritten != int64(len(img)) {
		t.Fatalf("result %+v", res)
	}
	if !r.slots.State().Trial {
		t.Fatal("slot not marked for trial")
	}
}

// TestControlInstallRefusals: over the real socket, each refusal reaches
// edgepbxd with its reason, and a stream that stops halfway leaves the
// slot invalid.
func TestControlInstallRefusals(t *testing.T) {
	r := newRig(t)
	path := r.serve(t)
	stranger, _ := bundle.GenerateKey(bundle.RoleRelease)
	img := image(200<<10, 8)
	good := makeBundle(t, r.rel, img, nil)
	tampered := bytes.Clone(good)
	tampered[len(tampered)-100] ^= 1
	for _, tc := range []struct {
		name   string
		r      io.Reader
		size   int64
		reason bundle.Reason
	}{
		{"unknown key", bytes.NewReader(makeBundle(t, stranger, img, nil)), int64(len(good)), bundle.ReasonKey},
		{"older version", bytes.NewReader(makeBundle(t, r.rel, img, func(m *bundle.Manifest) { m.VersionNumber, m.Floor = 99, 99 })), int64(len(good)), bundle.ReasonFloor},
		{"tampered image", bytes.NewReader(tampered), int64(len(good)), bundle.ReasonHash},
		// The sender stops after half the bundle and closes: PID 1 sees EOF.
		{"stopped halfway", bytes.NewReader(good[:len(good)/2]), int64(len(good)), bundle.ReasonSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := control.InstallUpdate(context.Background(), path, tc.r, tc.size)
			var re *control.RemoteError
			if !errors.As(err, &re) || re.Reason != string(tc.reason) {
				t.Fatalf("err = %v, want refusal %q", err, tc.reason)
			}
			if r.slots.bootable("b") || r.slots.State().Trial {
				t.Fatal("refused bundle left slot b bootable")
			}
		})
	}
	// The socket still serves a good bundle afterwards.
	if _, err := control.InstallUpdate(context.Background(), path, bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatal(err)
	}
	c, err := control.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.UpdateStatus(context.Background())
	if err != nil || st.Installing || st.Floor != 100 || st.Board != "pc-x86_64" {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestControlInstallSizeBound(t *testing.T) {
	r := newRig(t)
	path := r.serve(t)
	_, err := control.InstallUpdate(context.Background(), path, bytes.NewReader(nil), control.MaxUpdateSize+1)
	var re *control.RemoteError
	if !errors.As(err, &re) || re.Field != "size" {
		t.Fatalf("oversized announce: %v", err)
	}
}

// BenchmarkInstall20MB is the install figure: a 20 MB bundle streamed over
// the control socket, verified, written to a slot file, synced and read
// back (bytes written and read reported per install).
func BenchmarkInstall20MB(b *testing.B) {
	const n = 20 << 20
	r := newRigSize(b, n+(1<<20))
	path := r.serve(b)
	bun := makeBundle(b, r.rel, image(n, 5), nil)
	b.SetBytes(int64(len(bun)))
	b.ResetTimer()
	var res control.UpdateResult
	for b.Loop() {
		var err error
		res, err = control.InstallUpdate(context.Background(), path, bytes.NewReader(bun), int64(len(bun)))
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(res.BytesWritten), "bytes-written/op")
	b.ReportMetric(float64(res.BytesRead), "bytes-read-back/op")
}
