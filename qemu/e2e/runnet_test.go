package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/qemu"
)

// TestX86RunNetPhones boots the appliance on the network `edgepbx run` gives
// it (qemu.WithRunNet, the option run uses) and uses it as a newcomer would:
// claim with the console's setup code, create extensions through the admin
// API, register two host softphones (Debian's baresip) over UDP and call one
// from the other, each side hearing the other's tone; a third softphone
// registers over TCP and over TLS (trusting the box's certificate).
//
// Under user-mode networking with restrict=on this fails at the first UDP
// REGISTER: libslirp drops every UDP datagram the guest sends.
func TestX86RunNetPhones(t *testing.T) {
	require(t, "qemu-system-x86_64", "mkfs.ext4")
	bin := baresiptest.Need(t)
	img := buildImage(t, "qemu-x86_64")
	rn, err := qemu.NewRunNet()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("run network: %v", err)
		}
		t.Fatalf("run network: %v", err)
	}
	t.Cleanup(func() { rn.Close() })

	vm := boot(t, img,
		qemu.WithDataDisk(filepath.Join(t.TempDir(), "data.img")),
		qemu.WithMemory(512),
		qemu.WithRunNet(rn))
	b := banner(t, vm)
	guest := rn.Guest.Addr().String()
	if want := rn.Guest.String(); b["address"] != want {
		t.Errorf("banner address %q, want %q", b["address"], want)
	}
	if b["setup code"] == "" || b["tls sha256"] == "" {
		t.Fatalf("banner without setup code or certificate: %v", b)
	}

	// The admin API on the guest's own address, over the run network.
	api := newBoxAdmin(t, "https://"+guest, b["tls sha256"])
	healthCtx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	for {
		// HTTPS may answer a moment after "ready" on a slow TCG boot.
		c, err := net.DialTimeout("tcp", net.JoinHostPort(guest, "443"), 5*time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-healthCtx.Done():
			t.Fatalf("admin HTTPS on %s unreachable over the run network: %v", guest, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	since := func() float64 { return time.Since(vm.Started()).Seconds() }
	t.Logf("%.1fs: ready, admin HTTPS reachable", since())
	api.claim(b["setup code"])
	t.Logf("%.1fs: claimed", since())
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002", "1003"} {
		pw[u] = api.extension(u)
	}
	t.Logf("%.1fs: extensions created", since())
	ca := filepath.Join(t.TempDir(), "box.pem")
	if err := os.WriteFile(ca, api.certPE, 0o600); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	host := net.IP(rn.Host.AsSlice())
	// No port: the URI's transport gives 5060 (UDP, TCP) or 5061 (TLS).
	account := func(user, transport string) string {
		return fmt.Sprintf("<sip:%s@%s;transport=%s>;auth_pass=%s;mediaenc=srtp;answermode=auto;audio_codecs=PCMU;regint=300",
			user, guest, transport, pw[user])
	}
	const callerTone, calleeTone = 440, 1000
	a := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: "1001", Local: host, Tone: callerTone,
		Accounts: []string{account("1001", "udp")}})
	callee := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: "1002", Local: host, Tone: calleeTone,
		Accounts: []string{account("1002", "udp")}})
	a.WaitRegistered(ctx, t, 1)
	t.Logf("figure: first softphone registered over UDP %.1fs after QEMU start", since())
	callee.WaitRegistered(ctx, t, 1)

	t.Run("UDP call, audio both ways", func(t *testing.T) {
		a.Command(ctx, t, "dial", fmt.Sprintf("sip:1002@%s", guest))
		a.WaitEvent(ctx, t, "CALL_ESTABLISHED")
		callee.WaitEvent(ctx, t, "CALL_ESTABLISHED")
		a.WaitAudio(ctx, t, 2*time.Second)
		callee.WaitAudio(ctx, t, 2*time.Second)
		a.Command(ctx, t, "hangup", "")
		a.WaitEvent(ctx, t, "CALL_CLOSED")
		callee.WaitEvent(ctx, t, "CALL_CLOSED")
		a.Stop(t)
		callee.Stop(t)
		baresiptest.CheckTone(t, "callee hears caller", callee.WAV(t, "dec"), a.WAV(t, "enc"), callerTone)
		baresiptest.CheckTone(t, "caller hears callee", a.WAV(t, "dec"), callee.WAV(t, "enc"), calleeTone)
	})

	t.Run("REGISTER over TCP and TLS", func(t *testing.T) {
		p := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: "1003", Local: host, Tone: callerTone, CAFile: ca,
			Accounts: []string{account("1003", "tcp"), account("1003", "tls")}})
		p.WaitRegistered(ctx, t, 2)
		p.Stop(t)
	})
}
