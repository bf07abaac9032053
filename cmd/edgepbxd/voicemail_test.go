package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/dtmf"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"github.com/pion/rtp"
)

// vmStep is one thing the sipp caller does once the box answered.
type vmStep struct {
	pause time.Duration // wait
	pcap  string        // play this pcap of /usr/share/sip-tester (async)
}

func pause(ms int) vmStep { return vmStep{pause: time.Duration(ms) * time.Millisecond} }
func speech() []vmStep    { return []vmStep{{pcap: "/usr/share/sip-tester/g711a.pcap"}, pause(7300)} }

// keyPcaps writes RFC 4733 keys as pcap files for sipp's play_pcap_audio.
// sipp's own dtmf_2833_*.pcap all carry fixed RTP timestamps, so a later
// key with an earlier timestamp looks stale to a receiver (and a repeated
// key like a retransmission); real phones number their events onwards,
// as these files do.
type keyPcaps struct {
	t   *testing.T
	dir string
	n   int
	ts  uint32
	seq uint16
}

// keys is one entry typed with 100 ms keys 300 ms apart.
func (k *keyPcaps) keys(s string) []vmStep {
	k.t.Helper()
	const gap = 400 * time.Millisecond
	var recs [][]byte
	var ats []time.Duration
	for i, d := range s {
		ps, err := dtmf.Packets(d, k.ts, 100*time.Millisecond, 10, 8000, 20*time.Millisecond)
		if err != nil {
			k.t.Fatal(err)
		}
		for _, p := range ps {
			h := rtp.Header{Version: 2, Marker: p.Marker, PayloadType: 101, SequenceNumber: k.seq, Timestamp: p.Timestamp, SSRC: 0x5eed1234}
			k.seq++
			b, err := h.Marshal()
			if err != nil {
				k.t.Fatal(err)
			}
			recs = append(recs, append(b, p.Payload...))
			ats = append(ats, time.Duration(i)*gap+p.At)
		}
		k.ts += dtmf.Span(gap, 8000)
	}
	k.n++
	path := filepath.Join(k.dir, fmt.Sprintf("keys%d.pcap", k.n))
	writePcap(k.t, path, recs, ats)
	return []vmStep{{pcap: path}, {pause: time.Duration(len(s))*gap + 200*time.Millisecond}}
}

// writePcap writes UDP datagrams (Ethernet, IPv4) with their send times.
func writePcap(t *testing.T, path string, payloads [][]byte, at []time.Duration) {
	var b []byte
	le := binary.LittleEndian
	b = le.AppendUint32(b, 0xa1b2c3d4)
	b = le.AppendUint16(b, 2)
	b = le.AppendUint16(b, 4)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, 65535)
	b = le.AppendUint32(b, 1) // Ethernet
	base := time.Unix(1_700_000_000, 0)
	for i, p := range payloads {
		frame := make([]byte, 14, 14+20+8+len(p))
		frame[12], frame[13] = 0x08, 0x00
		ip := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2}
		binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(p)))
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		sum = (sum >> 16) + (sum & 0xffff)
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum+(sum>>16)))
		udp := make([]byte, 8)
		binary.BigEndian.PutUint16(udp[0:], 6000)
		binary.BigEndian.PutUint16(udp[2:], 6002)
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(p)))
		frame = append(append(append(frame, ip...), udp...), p...)
		ts := base.Add(at[i])
		b = le.AppendUint32(b, uint32(ts.Unix()))
		b = le.AppendUint32(b, uint32(ts.Nanosecond()/1000))
		b = le.AppendUint32(b, uint32(len(frame)))
		b = le.AppendUint32(b, uint32(len(frame)))
		b = append(b, frame...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// vmScenario is a sipp caller: INVITE (PCMA and telephone-event) answered
// with a digest challenge, the INVITE again with credentials, ACK, the
// steps, then the box's BYE answered.
func vmScenario(steps ...[]vmStep) string {
	var b strings.Builder
	hdr := `      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[caller]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      Call-ID: [call_id]
      Contact: <sip:[caller]@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: edgepbx-vm-test`
	sdp := `      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15`
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="voicemail caller">
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
%[1]s
      To: <sip:[service]@[remote_ip]:[remote_port]>
      CSeq: 1 INVITE
%[2]s
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:[caller]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <send retrans="500"><![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
%[1]s
      To: <sip:[service]@[remote_ip]:[remote_port]>
      CSeq: 2 INVITE
      [authentication]
%[2]s
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[caller]@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0
  ]]></send>
  <pause milliseconds="1200"/>
`, hdr, sdp)
	var all []vmStep
	for _, ss := range steps {
		all = append(all, ss...)
	}
	// The box may hang up as soon as the last key is in: no pause after
	// it (a BYE during a pause fails the sipp call).
	for len(all) > 0 && all[len(all)-1].pcap == "" {
		all = all[:len(all)-1]
	}
	{
		for _, s := range all {
			if s.pcap != "" {
				fmt.Fprintf(&b, "  <nop><action><exec play_pcap_audio=\"%s\"/></action></nop>\n", s.pcap)
			}
			if s.pause > 0 {
				fmt.Fprintf(&b, "  <pause milliseconds=\"%d\"/>\n", s.pause.Milliseconds())
			}
		}
	}
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

// sippCall runs one sipp call of ext (digest password pw) to dialled.
func sippCall(t *testing.T, sipAddr, ext, pw, dialled, scenario string) {
	t.Helper()
	dir := t.TempDir()
	sf := filepath.Join(dir, "call.xml")
	if err := os.WriteFile(sf, []byte(scenario), 0o600); err != nil {
		t.Fatal(err)
	}
	port := netnstest.FreePort(t, "udp")
	cmd := exec.Command(siptest.NeedSipp(t), "-sf", sf, "-i", "127.0.0.1", "-p", fmt.Sprint(port),
		"-mi", "127.0.0.1", "-mp", fmt.Sprint(netnstest.FreeMediaPorts(t, "127.0.0.1")), "-s", dialled, "-key", "caller", ext,
		"-au", ext, "-ap", pw, "-m", "1", "-timeout", "90s", "-timeout_error", "-nostdin", "-trace_err", sipAddr)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		el, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var errs []byte
		if len(el) > 0 {
			errs, _ = os.ReadFile(el[0])
		}
		t.Fatalf("sipp %s -> %s: %v\n%s\nerrors:\n%s", ext, dialled, err, lastBytes(out), lastBytes(errs))
	}
}

func lastBytes(b []byte) []byte {
	if len(b) > 3000 {
		return b[len(b)-3000:]
	}
	return b
}

// TestDevModeVoicemail runs the real binary with sipp as the phones:
//   - 1001 calls 1002, which has no phone registered: the box answers
//     with 1002's voicemail; sipp speaks (G.711 pcap) and ends with '#'
//     (RFC 4733): the message is stored;
//   - 1002 dials *97 from its own phone: there is no PIN yet, so it
//     chooses one (typed twice), hears the message (marked heard) and
//     leaves with '*';
//   - from 1001, *98 then 1002's mailbox with three wrong PINs: the box
//     hangs up, the source is throttled for that mailbox (the right PIN
//     is refused after that), security events are logged; a fourth
//     wrong PIN on another mailbox bans the source like a digest scan;
//   - after the stop, the stored message file is not audio, and opens with
//     the media key to the speech sipp sent.
func TestDevModeVoicemail(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	// sipp 3.6 answers MD5 challenges only (PITFALLS: the algorithms take
	// effect at the next start); a scan needs two mailboxes here instead of
	// five.
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	next := v.Settings
	next.Algorithms = []string{"MD5"}
	next.Guard.MaxUsersPerSource = 2
	api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next)
	pw := map[string]string{}
	for _, u := range []string{"1001", "1002"} {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		pw[u] = ans.Password
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	p = startProc(t, procOpts{noFD3: true}, args...)
	base = p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	api = newAPIClient(t, base, fp)
	api.login(api.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) {
			t.Fatalf("B2BUA not wired:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	sip := udp.String()
	kp := &keyPcaps{t: t, dir: t.TempDir(), ts: 1 << 20}
	keys := kp.keys

	// Deposit: greeting (skipped by nothing), tone, 7 s of speech, '#'.
	sippCall(t, sip, "1001", pw["1001"], "1002", vmScenario([]vmStep{pause(1500)}, speech(), keys("#")))
	// Retrieval with the first PIN chosen on the own phone.
	const pin = "493817"
	sippCall(t, sip, "1002", pw["1002"], "*97", vmScenario(keys(pin+"#"), []vmStep{pause(600)}, keys(pin+"#"),
		[]vmStep{pause(9500)}, keys("*")))
	// 1001 sets its own PIN too (no messages: it hears so, and leaves).
	sippCall(t, sip, "1001", pw["1001"], "*97", vmScenario(keys("720394#"), []vmStep{pause(600)}, keys("720394#")))
	// The admin sees the mailbox (never the PIN), listens to the message
	// (audited), and may reset the PIN (shown once).
	var mb admin.MailboxView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1002", nil), &mb); err != nil ||
		!mb.PINSet || len(mb.Messages) != 1 || mb.Old != 1 || mb.New != 0 || mb.Messages[0].Caller != "1001" {
		t.Fatalf("mailbox %+v %v", mb, err)
	}
	if raw := string(api.must(http.StatusOK, "GET", "/api/v1/voicemail/1002", nil)); strings.Contains(raw, "argon2") || strings.Contains(raw, pin) {
		t.Fatalf("mailbox view leaks the PIN: %s", raw)
	}
	wav := api.must(http.StatusOK, "GET", "/api/v1/voicemail/1002/messages/"+mb.Messages[0].ID+"/audio?download=1", nil)
	if len(wav) < 44+2*8000*5 || string(wav[:4]) != "RIFF" || string(wav[8:12]) != "WAVE" {
		t.Fatalf("downloaded message: %d bytes %q", len(wav), wav[:min(12, len(wav))])
	}
	api.must(http.StatusNotFound, "GET", "/api/v1/voicemail/1002/messages/..%2f..%2fedgepbx.db/audio", nil)
	api.must(http.StatusNotFound, "GET", "/api/v1/voicemail/9999", nil)
	if audit := string(api.must(http.StatusOK, "GET", "/api/v1/audit?limit=50", nil)); !strings.Contains(audit, "voicemail.message.download") {
		t.Errorf("download not audited: %s", audit)
	}
	// Three wrong PINs for 1002's mailbox from 1001's phone.
	sippCall(t, sip, "1001", pw["1001"], "*98", vmScenario(keys("1002#"), []vmStep{pause(600)},
		keys("111111#"), []vmStep{pause(1500)}, keys("222222#"), []vmStep{pause(1500)}, keys("333333#")))
	// Throttled now: even the right PIN is refused (the box says locked and hangs up).
	sippCall(t, sip, "1001", pw["1001"], "*98", vmScenario(keys("1002#"), []vmStep{pause(600)}, keys(pin+"#")))

	if !hasBlock(t, api, "voicemail/1002", "failed authentications") {
		t.Errorf("no throttle of the source for voicemail/1002:\n%s", grepLines(p.output(), "voicemail", "call:"))
	}
	// A wrong PIN for a second mailbox: the source fails for two accounts
	// (the scan threshold set above) and is banned; the box stops answering it.
	sippCall(t, sip, "1002", pw["1002"], "*98", vmScenario(keys("1001#"), []vmStep{pause(600)}, keys("999999#")))
	if !hasBlock(t, api, "", "sip-scan") {
		t.Errorf("source not banned after wrong PINs on two mailboxes:\n%s", grepLines(p.output(), "voicemail", "ban"))
	}
	// Banned: the box no longer answers the source at all.
	c, err := net.Dial("udp", sip)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(scannerRegister(c, sip, "edgepbx-vm-test", "vm-banned"))); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 2048)); err == nil {
		t.Errorf("banned source answered (%d bytes)", n)
	}

	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	checkStoredMessage(t, dir)
}

// checkStoredMessage opens the store and the voicemail files as the
// stopped daemon left them.
func checkStoredMessage(t *testing.T, dir string) {
	id, err := devIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	keys, _, err := mediaKeys(id)
	if err != nil {
		t.Fatal(err)
	}
	db := storetest.OpenAt(t, filepath.Join(dir, "edgepbx.db"), id.DeviceKey)
	sec, err := logs.New(db, secLogMax)
	if err != nil {
		t.Fatal(err)
	}
	fails := 0
	stored, err := sec.Stored()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range stored {
		if e.Kind == voicemail.KindPINFailure && e.User == "1002" {
			fails++
		}
	}
	if fails != 3 {
		t.Errorf("%d voicemail PIN failures logged for 1002, want 3", fails)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(dir, "recordings"), Keys: keys, Quota: 1 << 30, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	vm, err := voicemail.New(voicemail.Config{DB: db, Audio: voicemail.Recordings{Store: rs},
		Hasher: auth.NewHasher(auth.DefaultParams, 1, 1), Exists: func(string) bool { return true }})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := vm.Messages("1002")
	if err != nil || len(ms) != 1 {
		t.Fatalf("1002's messages: %+v %v", ms, err)
	}
	m := ms[0]
	if m.New || m.Caller != "1001" || m.Duration < 5*time.Second || m.Duration > 9*time.Second || m.Rate != 8000 {
		t.Fatalf("message %+v (want heard, from 1001, about 7 s)", m)
	}
	file, _ := vm.File("1002", m.ID)
	path := filepath.Join(dir, "recordings", filepath.FromSlash(file))
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Raw bytes are not audio: as 16-bit PCM or as A-law they are noise
	// with no structure (no two equal neighbouring bytes beyond chance),
	// and they do not open with another key.
	if n := len(raw); n < 8000*5 {
		t.Fatalf("file of %d bytes for %v", n, m.Duration)
	}
	same := 0
	for i := 1; i < len(raw); i++ {
		if raw[i] == raw[i-1] {
			same++
		}
	}
	if float64(same)/float64(len(raw)) > 0.01 {
		t.Errorf("%d of %d neighbouring bytes equal: looks like audio, not ciphertext", same, len(raw))
	}
	other, _ := recording.StaticKey(make([]byte, 32))
	if _, err := recording.NewReader(bytes.NewReader(raw), other); err == nil {
		t.Error("the message opens with another key")
	}
	rate, pcm, err := vm.Audio("1002", m.ID)
	if err != nil || rate != 8000 {
		t.Fatalf("decrypt with the media key: %d %v", rate, err)
	}
	var e float64
	for _, v := range pcm {
		e += float64(v) * float64(v)
	}
	if rms := math.Sqrt(e / float64(len(pcm))); rms < 300 {
		t.Errorf("decrypted message RMS %.0f: not the speech sipp sent", rms)
	}
}

func grepLines(out string, subs ...string) string {
	var b strings.Builder
	for _, l := range strings.Split(out, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				b.WriteString(l + "\n")
				break
			}
		}
	}
	return b.String()
}

// hasBlock reports whether the SIP edge lists a ban (user "") or a
// throttle of 127.0.0.1 with reason.
func hasBlock(t *testing.T, api *apiClient, user, reason string) bool {
	t.Helper()
	var v struct {
		Blocks []struct {
			Source, User, Reason string
		}
	}
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/blocks", nil), &v); err != nil {
		t.Fatal(err)
	}
	for _, b := range v.Blocks {
		if b.Source == "127.0.0.1/32" && b.User == user && b.Reason == reason {
			return true
		}
	}
	return false
}
