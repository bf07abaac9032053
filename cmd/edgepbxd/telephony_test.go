package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
)

// TestDevModeTelephonyClasses runs the real binary: the dial plan is edited
// through the admin API while edgepbxd runs. A loopback sipgo UA stands in
// for the ITSP behind trunk "itsp". With class "internal" 1001's
// international call is refused with 403 and never reaches the trunk while
// 112 is carried to it; after a second change allows international, the
// same number goes out — no restart in between. The trunk (on 127.0.0.2,
// identified by its source address from the stored configuration) then
// calls a DID, which rings 1001; once the trunk is removed the same INVITE
// is no longer taken as the trunk's.
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
	phone, itsp := siptest.NewPhone(t, "1001", ext.Password), siptest.NewPhoneAt(t, "127.0.0.2", "itsp", "")
	phone.Register(ctx, "127.0.0.1", udp.Port)

	var cfg pbxconfig.Telephony
	if err := json.Unmarshal(api.must(200, "GET", "/api/v1/telephony", nil), &cfg); err != nil || cfg.Version != 0 {
		t.Fatalf("initial telephony %+v %v", cfg, err)
	}
	cfg.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: fmt.Sprintf("127.0.0.2:%d", itsp.Port), Transport: "udp",
		Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, SRTP: "off", AssertIdentity: true}}
	cfg.CallerIDs = map[string]string{"1001": "+4930111"}
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
			// 1001's configured caller ID, asserted to the trusted trunk.
			if u := inv.From().Address.User; u != "+4930111" {
				t.Fatalf("trunk saw caller %q, want +4930111", u)
			}
			if pai := inv.GetHeader("P-Asserted-Identity"); pai == nil || !strings.Contains(pai.Value(), "+4930111") {
				t.Fatalf("no P-Asserted-Identity for the trusted trunk: %v", pai)
			}
			// The trunk's SRTP policy "off": not even a best-effort key.
			if strings.Contains(string(inv.Body()), "a=crypto") {
				t.Fatalf("trunk with srtp off was offered SDES:\n%s", inv.Body())
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
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil {
		t.Fatal(err)
	}
	callVia(intl, "+44201234567")

	// Inbound: the trunk's DID rings 1001 (no digest: the source is the trunk's).
	const did = "493012345"
	cfg.DIDs = []dialplan.DID{{Number: did, Trunk: "itsp", Extension: "1001"}}
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil {
		t.Fatal(err)
	}
	d, _, err := itsp.Dial(ctx, "127.0.0.1", udp.Port, did)
	if err != nil {
		t.Fatalf("inbound DID call: %v\n%s", err, p.output())
	}
	select {
	case inv := <-phone.Answered:
		if inv.Recipient.User != "1001" {
			t.Fatalf("phone got an INVITE for %q", inv.Recipient.User)
		}
	case <-ctx.Done():
		t.Fatal("inbound DID call never rang 1001")
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	<-phone.Byes

	// The trunk removed: 127.0.0.2 is nobody's trunk any more, so the same
	// INVITE is challenged like any unknown caller's and rings nobody.
	cfg.Trunks, cfg.Routes, cfg.DIDs = nil, nil, nil
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := itsp.Dial(ctx, "127.0.0.1", udp.Port, did); err == nil {
		t.Fatal("a removed trunk's call was still taken")
	}
	select {
	case <-phone.Answered:
		t.Fatal("a removed trunk's call rang 1001")
	default:
	}
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

// TestDevModeTrunkRegistration runs the real binary against a registrar:
// a registering trunk saved on the dial plan API registers at once with
// its sealed password and shows "registered" in the trunk status, the
// dashboard and the Calls page; a new password un-registers the old
// binding and registers with the new one; removing the trunk
// un-registers it — all without a restart.
func TestDevModeTrunkRegistration(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	api := claimBox(t, base, fp, code)
	reg := siptest.StartRegistrar(t, "itsp.example", map[string][]string{"box7": {"first-secret-1", "second-secret-2"}})

	var cfg pbxconfig.Telephony
	if err := json.Unmarshal(api.must(200, "GET", "/api/v1/telephony", nil), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: reg.Addr, Transport: "udp", Auth: pbxconfig.TrunkAuthRegister,
		Username: "box7", Domain: "itsp.example", Password: "first-secret-1"}}
	cfg.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil {
		t.Fatal(err)
	}
	first := reg.Next(t, p.output)
	if first.User != "box7" || first.Password != "first-secret-1" || first.Expires != 3600 {
		t.Fatalf("REGISTER %+v", first)
	}
	// The state is set right after the answer: wait for it (ordering).
	var st struct{ Trunks []admin.TrunkState }
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := json.Unmarshal(api.must(200, "GET", "/api/v1/trunks/status", nil), &st); err != nil {
			t.Fatal(err)
		}
		if len(st.Trunks) == 1 && st.Trunks[0].State == "registered" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("trunk status %+v\n%s", st, p.output())
		}
	}
	if tr := st.Trunks[0]; tr.Registrar != reg.Addr || tr.Expires.Sub(tr.LastSuccess) != 300*time.Second || tr.LastError != "" {
		t.Fatalf("trunk state %+v", tr)
	}
	if b := string(api.must(200, "GET", "/api/v1/status", nil)); !strings.Contains(b, "Trunk itsp") || !strings.Contains(b, "registered until") {
		t.Fatalf("dashboard lacks the trunk: %s", b)
	}
	if b := string(api.must(200, "GET", "/calls", nil)); !strings.Contains(b, "registered") || !strings.Contains(b, reg.Addr) {
		t.Fatal("Calls page lacks the trunk state")
	}
	if b := string(api.must(200, "GET", "/api/v1/trunks/status", nil)); strings.Contains(b, "first-secret") {
		t.Fatal("trunk status leaks the password")
	}

	cfg.Trunks[0].Password = "second-secret-2"
	if err := json.Unmarshal(api.must(200, "PUT", "/api/v1/telephony", cfg), &cfg); err != nil {
		t.Fatal(err)
	}
	if un := reg.Next(t, p.output); un.Expires != 0 || un.Password != "first-secret-1" || un.CallID != first.CallID {
		t.Fatalf("un-REGISTER of the old binding %+v", un)
	}
	if re := reg.Next(t, p.output); re.Expires != 3600 || re.Password != "second-secret-2" {
		t.Fatalf("REGISTER with the new password %+v", re)
	}

	cfg.Trunks, cfg.Routes = nil, nil
	api.must(200, "PUT", "/api/v1/telephony", cfg)
	if un := reg.Next(t, p.output); un.Expires != 0 || un.Password != "second-secret-2" {
		t.Fatalf("un-REGISTER of the removed trunk %+v", un)
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	select {
	case s := <-reg.Got:
		t.Fatalf("REGISTER after removal: %+v", s)
	default:
	}
}
