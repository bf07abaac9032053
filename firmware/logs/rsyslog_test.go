package logs

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
input(type="imtcp" port="0" listenPortFileName="` + dir + `/port")
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
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("rsyslogd output:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(dir, "port"))
		if p, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil && p > 0 {
			return p, filepath.Join(dir, "out.log")
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
