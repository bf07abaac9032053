package main

import (
	"context"
	"encoding/json"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestDevModeCall runs the real binary: two extensions are created through
// the admin API, two sipgo phones register with digest, 1001 calls 1002,
// RTP flows both ways through the box's relay, BYE ends the call, and after
// the stop the CDR is in the store.
func TestDevModeCall(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	// The log line (stderr) and the banner (stdout) are read by separate
	// goroutines, so the line may land after the banner: wait for it.
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) { // a hang, not a performance limit
			t.Fatalf("B2BUA not wired:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	api := claimBox(t, base, fp, code)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := siptest.NewPhone(t, "1001", pw["1001"]), siptest.NewPhone(t, "1002", pw["1002"])
	a.Register(ctx, "127.0.0.1", udp.Port)
	b.Register(ctx, "127.0.0.1", udp.Port)

	d, boxA, err := a.Dial(ctx, "127.0.0.1", udp.Port, "1002")
	if err != nil {
		t.Fatalf("call 1001 -> 1002: %v\n%s", err, p.output())
	}
	var inv *sip.Request
	select {
	case inv = <-b.Answered:
	case <-ctx.Done():
		t.Fatal("1002 never rang")
	}
	// The INVITE to 1002, which had only registered (the stateless
	// REGISTER path), leaves over its flow: from the port it registered
	// to, with a Via naming that address (not a new socket on 0.0.0.0).
	if src := inv.Source(); src != udp.String() {
		t.Errorf("INVITE to 1002 from %s, want %s (where it registered)", src, udp)
	}
	if v := inv.Via(); v == nil || net.JoinHostPort(v.Host, strconv.Itoa(v.Port)) != udp.String() {
		t.Errorf("INVITE to 1002: Via %v, want sent-by %s", v, udp)
	}
	boxB, err := siptest.MediaAddr(inv.Body())
	if err != nil {
		t.Fatal(err)
	}
	if boxA.Port == boxB.Port {
		t.Fatalf("both legs on one relay port %d", boxA.Port)
	}
	siptest.SendRTPUntil(ctx, t, a, b, boxA, 25)
	siptest.SendRTPUntil(ctx, t, b, a, boxB, 25)
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-b.Byes:
	case <-ctx.Done():
		t.Fatal("1002 got no BYE")
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}

	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.OpenAt(t, filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	recs, err := cdr.New(db).Range(time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].From != "1001" || recs[0].To != "1002" || recs[0].Result != cdr.Answered || recs[0].Answer.IsZero() {
		t.Fatalf("CDRs %+v", recs)
	}
}
