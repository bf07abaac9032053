package logs

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// startRsyslog runs Debian's rsyslogd (packages rsyslog, rsyslog-gnutls) as
// the collector: imtcp with the gtls driver, every message written back in
// RFC 5424 form to out.log. It returns the port and the file.
func startRsyslog(t *testing.T, ca testCA) (int, string) {
	t.Helper()
	r := startRsyslogOn(t, ca, 0)
	return r.port, r.out
}

// rsyslogd is a running collector; stop ends it gracefully (SIGTERM: it
// writes out what it received).
type rsyslogd struct {
	port int
	out  string
	stop func()
}

// startRsyslogOn starts rsyslogd listening on port (0: any).
func startRsyslogOn(t *testing.T, ca testCA, port int) rsyslogd {
	t.Helper()
	bin, err := exec.LookPath("rsyslogd")
	if err == nil {
		_, err = os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
		if err != nil {
			matches, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so")
			if len(matches) > 0 {
				err = nil
			}
		}
	}
	if err != nil {
		netnstest.Unavailable(t, "needs rsyslogd with the gtls driver (Debian packages rsyslog, rsyslog-gnutls): %v", err)
	}
	dir := t.TempDir()
	for name, body := range map[string]string{"ca.pem": ca.caPEM, "cert.pem": ca.certPEM, "key.pem": ca.keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf := `global(workDirectory="` + dir + `" maxMessageSize="16k"
  DefaultNetstreamDriver="gtls"
  DefaultNetstreamDriverCAFile="` + dir + `/ca.pem"
  DefaultNetstreamDriverCertFile="` + dir + `/cert.pem"
  DefaultNetstreamDriverKeyFile="` + dir + `/key.pem")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="` + strconv.Itoa(port) + `" listenPortFileName="` + dir + `/port")
action(type="omfile" file="` + dir + `/out.log" template="RSYSLOG_SyslogProtocol23Format")
`
	cf := filepath.Join(dir, "rsyslog.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-n", "-f", cf, "-i", filepath.Join(dir, "pid"))
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			cancel()
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "port"))
		if port != 0 && listening(port) { // rsyslog writes the port file only for port 0
			return rsyslogd{port: port, out: filepath.Join(dir, "out.log"), stop: stop}
		}
		if p, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && p > 0 {
			return rsyslogd{port: p, out: filepath.Join(dir, "out.log"), stop: stop}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslogd did not listen within 20 s:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLines waits until path holds n lines and returns them parsed.
func waitLines(t *testing.T, path string, n int) []msg5424 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(b) > 0 && len(lines) >= n {
			var out []msg5424
			for _, l := range lines {
				m, err := parse5424(l)
				if err != nil {
					t.Fatalf("rsyslog wrote %q: %v", l, err)
				}
				out = append(out, m)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("rsyslog wrote %d of %d lines within 30 s:\n%s", len(lines), n, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type clock struct{}

func (clock) Now() time.Time { return time.Now() }

// TestRsyslogTLS delivers security events and audit entries to a real
// rsyslog over verified TLS and reads them back as rsyslog understood them.
func TestRsyslogTLS(t *testing.T) {
	ca := newTestCA(t)
	port, out := startRsyslog(t, ca)
	db, err := store.Open(filepath.Join(t.TempDir(), "db"), make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	al := audit.New(db, clock{})
	// History before the follower starts is not sent again.
	if err := al.Record(audit.Event{Actor: "old", Action: "auth.login"}); err != nil {
		t.Fatal(err)
	}
	s := runSender(t, SenderConfig{Hostname: "EPX-1234"}, SyslogSettings{Enabled: true,
		Address: "localhost:" + strconv.Itoa(port), Transport: TransportTLS, Facility: FacilityAuto, CAPEM: ca.caPEM})
	ctx, cancel := context.WithCancel(context.Background())
	followed := make(chan error, 1)
	head, err := al.Head()
	if err != nil {
		t.Fatal(err)
	}
	go func() { followed <- s.FollowAudit(ctx, al, head.Seq, 10*time.Millisecond) }()
	defer func() {
		cancel()
		if err := <-followed; err != nil {
			t.Error(err)
		}
	}()

	log, _ := New(db, 16)
	log.Forward(s.Event)
	log.Record(Event{Kind: KindRegister, Source: "192.0.2.7:5060", Transport: "TLS", User: "100", Display: "Älice \"A\"", UserAgent: hostileUA})
	log.Record(Event{Kind: "dialplan.suspended", User: "101", Reason: "burst"})
	if err := al.Record(audit.Event{Actor: "admin", Source: "192.0.2.9", Action: "account.create", Target: "bob",
		Detail: "role operator", After: map[string]string{"password": "hunter2-secret"}}); err != nil {
		t.Fatal(err)
	}
	msgs := waitLines(t, out, 3)
	if len(msgs) != 3 {
		t.Fatalf("rsyslog got %d messages, want 3: %+v", len(msgs), msgs)
	}
	var kinds []string
	for _, m := range msgs {
		if m.host != "EPX-1234" || m.app != AppName {
			t.Errorf("header %+v", m)
		}
		kinds = append(kinds, m.msgid)
		if m.msgid == "audit" {
			if m.params["actor"] != "admin" || m.params["action"] != "account.create" || m.params["outcome"] != "ok" ||
				m.params["detail"] != "role operator" || m.params["seq"] != "2" || len(m.params["hash"]) != 64 || m.pri != 13*8+sevNotice {
				t.Errorf("audit entry as rsyslog saw it: %+v", m)
			}
		}
		if m.msgid == string(KindRegister) {
			if m.params["display"] != "Älice \"A\"" || m.params["user_agent"] != "friendly\"] [evil@1 x=\"y\"]\\\ufffd<13>1 forged line\ufffd\ufffd" {
				t.Errorf("escaped fields as rsyslog saw them: %q", m.params)
			}
		}
		if m.msgid == "dialplan.suspended" && m.pri != facAuthpriv*8+sevCrit {
			t.Errorf("suspension priority %d", m.pri)
		}
	}
	if strings.Join(kinds, ",") != "sip.register,dialplan.suspended,audit" {
		t.Errorf("messages in order %v", kinds)
	}
	raw, _ := os.ReadFile(out)
	if strings.Contains(string(raw), "hunter2") || strings.Contains(string(raw), "old") {
		t.Errorf("secret or old history left the box:\n%s", raw)
	}
	b, _ := json.Marshal(s.Status())
	t.Logf("status %s", b)
}

// listening reports whether something listens on the loopback port (a
// second listener cannot bind it).
func listening(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return errors.Is(err, syscall.EADDRINUSE)
	}
	ln.Close()
	return false
}

// TestRsyslogDownSenderRestarted: rsyslog stops right after receiving a
// batch the sender had not yet confirmed; events keep coming while it is
// down; the sender is restarted over the same queue directory meanwhile;
// rsyslog comes back on the same port. Every event arrives; the only
// duplicates are the batch that was unconfirmed when rsyslog stopped.
func TestRsyslogDownSenderRestarted(t *testing.T) {
	ca := newTestCA(t)
	r1 := startRsyslogOn(t, ca, 0)
	qdir := filepath.Join(t.TempDir(), "syslog-queue")
	set := SyslogSettings{Enabled: true, Address: "localhost:" + strconv.Itoa(r1.port), Transport: TransportTLS,
		Facility: FacilityAuto, CAPEM: ca.caPEM}
	cfg := SenderConfig{Hostname: "EPX-1", QueueDir: qdir, CommitEvery: 5 * time.Millisecond,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		ConfirmAfter: time.Hour} // nothing is confirmed: the stop below catches a whole batch in flight
	s1, stop1 := runDiskSender(t, cfg, set)
	for i := 1; i <= 100; i++ {
		s1.Event(Event{Kind: KindScanner, Seq: uint64(i), Source: "203.0.113.5:5060"})
	}
	waitLines(t, r1.out, 100)
	r1.stop() // collector down with 100 events unconfirmed
	for s1.Status().Connected {
		time.Sleep(5 * time.Millisecond)
	}
	for i := 101; i <= 250; i++ {
		s1.Event(Event{Kind: KindScanner, Seq: uint64(i), Source: "203.0.113.5:5060"})
	}
	for deadline := time.Now().Add(10 * time.Second); s1.Status().Queued != 250; {
		if time.Now().After(deadline) {
			t.Fatalf("queued while rsyslog is down: %+v", s1.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop1() // the sender restarts (edgepbxd restart) while rsyslog is down
	cfg.ConfirmAfter = 50 * time.Millisecond
	s2, _ := runDiskSender(t, cfg, set)
	if st := s2.Status(); st.Queued != 250 || !st.Durable {
		t.Fatalf("after the restart: %+v", st)
	}
	for i := 251; i <= 300; i++ {
		s2.Event(Event{Kind: KindScanner, Seq: uint64(i), Source: "203.0.113.5:5060"})
	}
	r2 := startRsyslogOn(t, ca, r1.port)
	msgs := waitLines(t, r2.out, 300)
	for s2.Status().Queued != 0 {
		time.Sleep(5 * time.Millisecond)
	}
	first := waitLines(t, r1.out, 100)
	count := map[int]int{}
	for _, m := range append(first, msgs...) {
		n, err := strconv.Atoi(m.params["seq"])
		if err != nil {
			t.Fatalf("message %+v", m)
		}
		count[n]++
	}
	dups := 0
	for i := 1; i <= 300; i++ {
		switch {
		case count[i] == 0:
			t.Errorf("event %d lost", i)
		case count[i] > 1 && i > 100:
			t.Errorf("event %d arrived %d times but was never sent before the outage", i, count[i])
		case count[i] > 1:
			dups++
		}
	}
	if len(count) != 300 {
		t.Errorf("%d distinct events, want 300", len(count))
	}
	t.Logf("300 events, %d duplicates (the batch unconfirmed when rsyslog stopped); status %+v", dups, s2.Status())
}

// runDiskSender runs a sender with a disk queue; stop ends Run and closes
// the queue (as edgepbxd does on shutdown).
func runDiskSender(t *testing.T, cfg SenderConfig, set SyslogSettings) (*Sender, func()) {
	t.Helper()
	s, err := OpenSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(set); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop
}
