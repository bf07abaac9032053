package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgepbx/edgepbx/firmware/sip/siptest"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/emiago/sipgo"

	"github.com/edgepbx/edgepbx/firmware/admin"
	sipconfig "github.com/edgepbx/edgepbx/firmware/config"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
)

// TestDevModeTelephonyClasses runs the real binary: the dial plan is edited
// through the admin API while edgepbxd runs. A loopback sipgo UA stands in
// for the ITSP behind trunk "itsp". With class "internal" 1001's
// international call is refused with 403 and never reaches the trunk while
// 112 is carried to it; after a second change allows international, the
// same number goes out — no restart in between.
func TestDevModeTelephonyClasses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	api := claimBox(t, base, fp, code)
	var ext struct{ User, Password string }
	if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: "1001"}), &ext); err != nil || ext.Password == "" {
		t.Fatalf("create 1001: %v", err)
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	phone, itsp := siptest.NewPhone(t, "1001", ext.Password), siptest.NewPhone(t, "itsp", "")
	phone.Register(ctx, "127.0.0.1", udp.Port)

	var cfg sipconfig.Telephony
	if err := json.Unmarshal(api.must(200, "GET", "/api/v1/telephony", nil), &cfg); err != nil || cfg.Version != 0 {
		t.Fatalf("initial telephony %+v %v", cfg, err)
	}
	cfg.Trunks = []sipconfig.TelephonyTrunk{{Name: "itsp", Host: fmt.Sprintf("127.0.0.1:%d", itsp.Port), Transport: "udp",
		Auth: sipconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}
	cfg.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
	cfg.Extensions = []dialplan.Extension{{Number: "1001", Classes: []dialplan.Class{dialplan.Internal}}}
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil || cfg.Version != 1 {
		t.Fatalf("save: %+v %v", cfg, err)
	}

	const intl = "0044201234567"
	if _, _, err := phone.Dial(ctx, "127.0.0.1", udp.Port, intl); statusOf(err) != 403 {
		t.Fatalf("international from class internal: %v, want 403\n%s", err, p.output())
	}
	select {
	case inv := <-itsp.Answered:
		t.Fatalf("refused call reached the trunk: %s", inv.Recipient.User)
	default:
	}
	// want is the Request-URI user the trunk must see (international
	// numbers leave in E.164).
	callVia := func(number, want string) {
		t.Helper()
		d, _, err := phone.Dial(ctx, "127.0.0.1", udp.Port, number)
		if err != nil {
			t.Fatalf("call %s: %v\n%s", number, err, p.output())
		}
		select {
		case inv := <-itsp.Answered:
			if inv.Recipient.User != want {
				t.Fatalf("trunk got %q, want %s", inv.Recipient.User, want)
			}
		case <-ctx.Done():
			t.Fatalf("%s never reached the trunk", number)
		}
		if err := d.Bye(ctx); err != nil {
			t.Fatal(err)
		}
		<-itsp.Byes
	}
	callVia("112", "112")

	// Allow international: the next call goes out, same process.
	cfg.Extensions[0].Classes = append(cfg.Extensions[0].Classes, dialplan.National, dialplan.International)
	api.must(200, "PUT", "/api/v1/telephony", cfg)
	callVia(intl, "+44201234567")
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
}

// statusOf is the SIP status of a failed dial, 0 for other errors.
func statusOf(err error) int {
	var re *sipgo.ErrDialogResponse
	if errors.As(err, &re) {
		return re.Res.StatusCode
	}
	return 0
}
