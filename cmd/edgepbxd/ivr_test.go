package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// ivrScenario is a sipp trunk calling a DID (PCMU and telephone-event,
// no digest: the ITSP is recognised by its address): ACK, the steps,
// then its own BYE (byBox false) or the box's BYE answered.
func ivrScenario(byBox bool, steps ...[]vmStep) string {
	var b strings.Builder
	hdr := `      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:4930555111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      Contact: <sip:4930555111@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: edgepbx-ivr-test`
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="ivr caller">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
%[1]s
      CSeq: 1 INVITE
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:4930555111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="1500"/>
`, hdr)
	var all []vmStep
	for _, ss := range steps {
		all = append(all, ss...)
	}
	if byBox { // no pause after the last key: the box may hang up at once
		for len(all) > 0 && all[len(all)-1].pcap == "" {
			all = all[:len(all)-1]
		}
	}
	for _, s := range all {
		if s.pcap != "" {
			fmt.Fprintf(&b, "  <nop><action><exec play_pcap_audio=\"%s\"/></action></nop>\n", s.pcap)
		}
		if s.pause > 0 {
			fmt.Fprintf(&b, "  <pause milliseconds=\"%d\"/>\n", s.pause.Milliseconds())
		}
	}
	if byBox {
		b.WriteString(`  <recv request="BYE" timeout="60000"/>
  <send><![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
  ]]></send>
</scenario>
`)
		return b.String()
	}
	b.WriteString(`  <send retrans="500"><![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:4930555111@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
`)
	return b.String()
}

// sippTrunkCall runs one sipp call from the ITSP's address 127.0.0.2 to
// the DID called.
func sippTrunkCall(t *testing.T, sipAddr, called, scenario string) {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "call.xml")
	if err := os.WriteFile(sf, []byte(scenario), 0o600); err != nil {
		t.Fatal(err)
	}
	port := netnstest.FreePort(t, "udp")
	cmd := exec.Command(siptest.NeedSipp(t), "-sf", sf, "-i", "127.0.0.2", "-p", fmt.Sprint(port),
		"-mi", "127.0.0.2", "-mp", fmt.Sprint(netnstest.FreeMediaPorts(t, "127.0.0.2")), "-s", called,
		"-m", "1", "-timeout", "90s", "-timeout_error", "-nostdin", "-trace_err", sipAddr)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		el, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var errs []byte
		if len(el) > 0 {
			errs, _ = os.ReadFile(el[0])
		}
		t.Fatalf("sipp -> %s: %v\n%s\nerrors:\n%s", called, err, lastBytes(out), lastBytes(errs))
	}
}

// TestDevModeIVR runs the real binary with sipp as the ITSP (RFC 4733
// keys from pcaps) and sipgo phones as the extensions:
//   - a DID routed to a time condition that is open now reaches menu 800;
//     key 1 rings 202, which answers: the caller is bridged to it (the
//     caller's BYE reaches 202);
//   - 202 busy: the caller is back in the menu and reaches 204 by key 3;
//   - an invalid key, then silence: the menu repeats, then its fallback
//     203 rings and answers;
//   - the same DID once today is a holiday goes to the closed
//     destination 204 without any menu;
//   - the admin cannot name an external destination the paying extension
//     may not call (field error), and a caller typing a number in menu 801
//     gets nothing dialled: goodbye, and the trunk never sees an INVITE.
func TestDevModeIVR(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	sip := fmt.Sprintf("127.0.0.1:%d", fb.port)
	kp := &keyPcaps{t: t, dir: t.TempDir(), ts: 1 << 20}
	allWeek := []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	fb.cfg.IVR = ivr.Config{
		Zone: "UTC",
		TimeConditions: []ivr.TimeCondition{{Number: "700", Name: "office",
			Hours: []ivr.Hours{{Days: allWeek, From: "00:00", To: "24:00"}}, Open: "800", Closed: "204"}},
		Menus: []ivr.Menu{
			{Number: "800", Name: "main", Options: []ivr.Option{{Key: "1", Dest: "202"}, {Key: "2", Dest: "801"}, {Key: "3", Dest: "204"}},
				Timeout: 2, Repeats: 2, Fallback: "203"},
			{Number: "801", Name: "no way out", Options: []ivr.Option{{Key: "1", Dest: "202"}}, Timeout: 2, Repeats: 2},
		},
	}
	fb.cfg.DIDs = []dialplan.DID{{Number: "4930999000", Extension: "700"}, {Number: "4930999001", Extension: "801"}}
	// 201 may call extensions only: an external destination charged to it
	// is refused when saved, naming the field.
	bad := fb.cfg
	bad.IVR = fb.cfg.IVR.Clone()
	bad.IVR.Menus[1].Options = append(bad.IVR.Menus[1].Options, ivr.Option{Key: "0", Dest: "external/201/030123456"})
	code, _, body := fb.api.do("PUT", "/api/v1/telephony", bad)
	var prob struct{ Field, Detail string }
	if err := json.Unmarshal(body, &prob); err != nil || code != 422 || prob.Field != "/ivr/menus/1/options/1/dest" {
		t.Fatalf("external destination for an internal-only extension: %d %s", code, body)
	}
	fb.saveConfig()
	fb.drain()

	answered := func(ext string) {
		t.Helper()
		select {
		case <-fb.phones[ext].Answered:
		case <-time.After(45 * time.Second):
			_, _, cdrs := fb.api.do("GET", "/api/v1/cdr?limit=5", nil)
			t.Fatalf("%s never answered\nCDRs: %s\n%s", ext, cdrs, grepLines(fb.p.output(), "ivr", "call", "WARN"))
		}
	}
	byeAt := func(ext string) {
		t.Helper()
		select {
		case <-fb.phones[ext].Byes:
		case <-time.After(45 * time.Second):
			t.Fatalf("the caller's BYE never reached %s", ext)
		}
	}

	// Key 1 in menu 800 (reached through the open time condition).
	sippTrunkCall(t, sip, "4930999000", ivrScenario(false, kp.keys("1"), []vmStep{pause(6000)}))
	answered("202")
	byeAt("202")
	fb.quiet("201")
	fb.quiet("203")
	fb.drain()

	// 202 is busy: the caller is back in the menu and chooses 3 (204).
	fb.phones["202"].Reply(486)
	sippTrunkCall(t, sip, "4930999000", ivrScenario(false, kp.keys("1"), []vmStep{pause(3000)}, kp.keys("3"), []vmStep{pause(6000)}))
	fb.invited(ctx, "202")
	answered("204")
	byeAt("204")
	fb.phones["202"].Reply(0)
	fb.drain()

	// An invalid key, then nothing: two rounds, then the fallback.
	sippTrunkCall(t, sip, "4930999000", ivrScenario(false, kp.keys("5"), []vmStep{pause(12000)}))
	answered("203")
	byeAt("203")
	fb.quiet("202")
	fb.drain()

	// Today is a holiday: the condition is closed, 204 rings directly.
	today := time.Now().UTC()
	fb.cfg.IVR.TimeConditions[0].Holidays = []ivr.Holiday{{Name: "test",
		From: today.AddDate(0, 0, -1).Format(time.DateOnly), To: today.AddDate(0, 0, 1).Format(time.DateOnly)}}
	fb.saveConfig()
	sippTrunkCall(t, sip, "4930999000", ivrScenario(false, []vmStep{pause(3000)}))
	answered("204")
	byeAt("204")
	fb.drain()

	// Toll fraud: a number typed in a menu is only keys; nothing is dialled.
	sippTrunkCall(t, sip, "4930999001", ivrScenario(true, kp.keys("0301234567#")))
	select {
	case inv := <-fb.itsp.Invites:
		t.Fatalf("the trunk got an INVITE for %s", inv.Recipient.User)
	default:
	}
	for _, ext := range []string{"201", "202", "203", "204"} {
		fb.quiet(ext)
	}
	if out := fb.p.output(); strings.Contains(out, "panic") {
		t.Fatalf("daemon output:\n%s", out)
	}
}
