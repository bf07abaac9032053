package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
)

// TestDevModeRemoteSyslog: settings saved through the API reach the
// running daemon at once; a SIP auth failure (security log) and the
// settings change itself (audit chain) arrive at the collector.
func TestDevModeRemoteSyslog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 1000)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					ls, err := br.ReadString(' ')
					if err != nil {
						return
					}
					n, err := strconv.Atoi(strings.TrimSuffix(ls, " "))
					if err != nil || n <= 0 || n > 8192 {
						msgs <- "BAD FRAME " + ls
						return
					}
					b := make([]byte, n)
					if _, err := io.ReadFull(br, b); err != nil {
						return
					}
					msgs <- string(b)
				}
			}()
		}
	}()

	dir := filepath.Join(t.TempDir(), "dev")
	seedExtension(t, dir)
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	c := claimBox(t, base, fp, code)
	c.must(http.StatusOK, "PUT", "/api/v1/security/syslog", logs.SyslogSettings{Enabled: true, Address: ln.Addr().String(),
		Transport: logs.TransportTCP, Facility: logs.FacilityAuto})
	sipRegister(t, sipAddrs[1], "wrong-password")

	var gotAuth, gotAudit bool
	deadline := time.After(30 * time.Second)
	for !gotAuth || !gotAudit {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, "BAD FRAME") {
				t.Fatal(m)
			}
			if strings.Contains(m, " edgepbx - sip.auth_failure [event@32473 ") && strings.Contains(m, `user="101"`) {
				gotAuth = true
			}
			if strings.Contains(m, " edgepbx - audit [audit@32473 ") && strings.Contains(m, `action="logs.syslog.set"`) &&
				strings.Contains(m, `outcome="warning"`) {
				gotAudit = true
			}
			if strings.Contains(m, "wrong-password") || strings.Contains(m, testAdminPW) {
				t.Fatalf("a password left the box: %q", m)
			}
		case <-deadline:
			t.Fatalf("collector: auth failure %v, audit entry %v within 30 s", gotAuth, gotAudit)
		}
	}
}
