package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
	"github.com/edgepbx/edgepbx/firmware/provision"
)

// TestLinphoneRemoteProvisioning: a real Debian softphone (linphonec) is
// given only the one-time URL; it fetches its configuration over HTTPS,
// trusting the box's CA, and registers over TLS with the SIP password the
// box generated for it. It then calls a baresip extension through the box
// (SIP over TLS and SRTP on its leg, UDP and SDES-SRTP on baresip's):
// linphonec in file mode ("soundcard use files") sends a 440 Hz tone from
// a WAV file and records what it decodes, baresip sends 1000 Hz, and each
// side's decoded audio must be the other's tone.
func TestLinphoneRemoteProvisioning(t *testing.T) {
	bin, err := exec.LookPath("linphonec")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("linphonec missing (Debian linphone-cli, .ci/deps)")
		}
		t.Skip("linphonec not installed")
	}
	bsip := baresiptest.Need(t)
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0", sipTLSAddr: "127.0.0.1:0",
		provHTTPSAddr: "127.0.0.1:0", provHTTPAddr: "127.0.0.1:0",
		// linphonec's TLS library matches DNS names only: the certificate's "localhost".
		provHost: "localhost"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	if d.calls == nil {
		t.Fatal("calls disabled in the dev daemon")
	}
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
	const calleePass = "callee-password-302"
	if err := d.sip.Extensions().Set("302", calleePass); err != nil {
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
	// No sound card: file mode is switched on below. The echo canceller
	// would treat the looped tone as echo, so it is off.
	os.WriteFile(rc, []byte(fmt.Sprintf("[misc]\nconfig-uri=%s\n[sip]\nroot_ca=%s\nsip_port=-1\nsip_tcp_port=-1\nsip_tls_port=-1\n"+
		"[sound]\nplayback_dev_id=\ncapture_dev_id=\nechocancellation=0\n", e.URL, ca)), 0o600)
	cmd := exec.Command(bin, "-c", rc, "-d", "6", "-l", filepath.Join(dir, "linphone.log"))
	os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o700)
	cmd.Env = append(os.Environ(), "HOME="+dir)
	out, err := os.Create(filepath.Join(dir, "linphonec.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	}()
	tail := func() string {
		var b strings.Builder
		for _, f := range []string{"linphonec.out", "linphone.log"} {
			log, _ := os.ReadFile(filepath.Join(dir, f))
			if len(log) > 6000 {
				log = log[len(log)-6000:]
			}
			fmt.Fprintf(&b, "--- %s tail:\n%s\n", f, log)
		}
		return b.String()
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(d.sip.Location().Lookup(time.Now(), "301")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("linphonec did not register; fetches %+v\n%s", d.prov.Fetches(), tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("approval to registered softphone: %v", time.Since(start))
	if got, _ := d.prov.Get(dev.MAC); !got.Enrolled || !got.TokenUsed {
		t.Fatalf("record after enrolment: %+v", got)
	}

	// The call: linphonec (provisioned, TLS, SRTP mandatory) → 302 (baresip).
	cctx, ccancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer ccancel()
	udp := d.sip.Addr("udp").(*net.UDPAddr)
	const callerTone, calleeTone = 440, 1000
	b := baresiptest.Start(cctx, t, bsip, baresiptest.Config{Name: "302", Tone: calleeTone,
		Accounts: []string{fmt.Sprintf("<sip:302@127.0.0.1:%d;transport=udp>;auth_pass=%s;mediaenc=srtp;answermode=auto;audio_codecs=PCMU;regint=300",
			udp.Port, calleePass)}})
	b.WaitRegistered(cctx, t, 1)

	// 8 kHz like the PCMU the call uses, so neither side resamples; long
	// enough to outlast the call (the file player does not loop).
	sent := baresiptest.Sine(callerTone, 8000, 30, 8000)
	play, rec := filepath.Join(dir, "play.wav"), filepath.Join(dir, "rec.wav")
	if err := baresiptest.WriteWAV(play, sent); err != nil {
		t.Fatal(err)
	}
	say := func(line string) {
		if _, err := io.WriteString(stdin, line+"\n"); err != nil {
			t.Fatalf("linphonec stdin %q: %v\n%s", line, err, tail())
		}
	}
	say("soundcard use files")
	say("play " + play)
	say("record " + rec)
	say("call sip:302@localhost")
	b.WaitEvent(cctx, t, "CALL_ESTABLISHED")
	b.WaitAudio(cctx, t, 2*time.Second)
	// linphonec's recorder writes as it decodes: wait for 2 s of it too.
	for {
		fi, err := os.Stat(rec)
		if err == nil && fi.Size() >= 44+2*8000*2 {
			break
		}
		select {
		case <-cctx.Done():
			t.Fatalf("linphonec recorded %v (%v)\n%s", fi, err, tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
	say("terminate")
	b.WaitEvent(cctx, t, "CALL_CLOSED")
	b.Stop(t)
	say("quit")
	select {
	case <-exited:
	case <-cctx.Done():
		t.Fatalf("linphonec did not quit\n%s", tail())
	}
	got, err := baresiptest.ReadWAV(rec)
	if err != nil {
		t.Fatalf("linphonec recording: %v\n%s", err, tail())
	}
	baresiptest.CheckTone(t, "baresip hears linphonec", b.WAV(t, "dec"), sent, callerTone)
	baresiptest.CheckTone(t, "linphonec hears baresip", got, b.WAV(t, "enc"), calleeTone)
	// Each leg encrypted: each phone says so, and so does the CDR.
	if !strings.Contains(b.Log(), "SRTP is Enabled") {
		t.Errorf("baresip's leg was not encrypted:\n%s", b.Log())
	}
	llog, _ := os.ReadFile(filepath.Join(dir, "linphone.log"))
	for _, want := range []string{"media_stream_set_srtp_send_key", "media_stream_set_srtp_recv_key"} {
		if !strings.Contains(string(llog), want) {
			t.Errorf("linphonec's leg: no %q in its log\n%s", want, tail())
		}
	}
	for {
		recs, err := cdr.New(d.db).Range(start.Add(-time.Minute), time.Now().Add(time.Minute), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 {
			if r := recs[0]; len(recs) != 1 || r.From != "301" || r.To != "302" || r.Result != cdr.Answered || !r.SRTPCaller || !r.SRTPCallee {
				t.Fatalf("CDRs %+v: want one answered 301→302 with SRTP on both legs", recs)
			}
			break
		}
		select {
		case <-cctx.Done():
			t.Fatal("no CDR for the call")
		case <-time.After(100 * time.Millisecond):
		}
	}
}
