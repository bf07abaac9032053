package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/provision"
)

// TestLinphoneRemoteProvisioning: a real Debian softphone (linphonec) is
// given only the one-time URL; it fetches its configuration over HTTPS,
// trusting the box's CA, and registers over TLS with the SIP password the
// box generated for it.
func TestLinphoneRemoteProvisioning(t *testing.T) {
	bin, err := exec.LookPath("linphonec")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("linphonec missing (Debian linphone-cli, .ci/deps)")
		}
		t.Skip("linphonec not installed")
	}
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0", sipTLSAddr: "127.0.0.1:0",
		provHTTPSAddr: "127.0.0.1:0", provHTTPAddr: "127.0.0.1:0",
		// linphonec's TLS library matches DNS names only: the certificate's "localhost".
		provHost: "localhost"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- d.serveProvisioning(ctx) }()
	go func() { done <- d.serveSIP(ctx) }()
	defer func() {
		cancel()
		<-done
		<-done
	}()
	if err := d.sip.Extensions().Set("301", "initial-password-1"); err != nil {
		t.Fatal(err)
	}
	dev, err := d.prov.Add(provision.AddRequest{Vendor: provision.Linphone, Extensions: []string{"301"}, Approve: true}, "test", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	e, err := d.prov.Enrolment(dev.MAC)
	if err != nil || e.URL == "" {
		t.Fatal(err, e)
	}
	start := time.Now()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, d.boxCAPEM(), 0o600)
	rc := filepath.Join(dir, "linphonerc")
	os.WriteFile(rc, []byte(fmt.Sprintf("[misc]\nconfig-uri=%s\n[sip]\nroot_ca=%s\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port=-1\n[sound]\nplayback_dev_id=\ncapture_dev_id=\n", e.URL, ca)), 0o600)
	cmd := exec.CommandContext(ctx, bin, "-c", rc, "-d", "6", "-l", filepath.Join(dir, "linphone.log"))
	os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o700)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for len(d.sip.Location().Lookup(time.Now(), "301")) == 0 {
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "linphone.log"))
			if len(log) > 6000 {
				log = log[len(log)-6000:]
			}
			t.Fatalf("linphonec did not register; fetches %+v\nlog tail:\n%s", d.prov.Fetches(), log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("approval to registered softphone: %v", time.Since(start))
	if got, _ := d.prov.Get(dev.MAC); !got.Enrolled || !got.TokenUsed {
		t.Fatalf("record after enrolment: %+v", got)
	}

}
