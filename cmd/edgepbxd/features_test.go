package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
)

// featureBox is a running edgepbxd with registered sipgo phones (201-204,
// caller 100, 205 created but never registered) and an ITSP on
// 127.0.0.2 behind trunk "itsp".
type featureBox struct {
	t      *testing.T
	p      *proc
	api    *apiClient
	port   int
	phones map[string]*siptest.Phone
	itsp   *siptest.Phone
	cfg    pbxconfig.Telephony
}

func startFeatureBox(t *testing.T, ctx context.Context) *featureBox {
	dir := filepath.Join(t.TempDir(), "dev")
	p := startProc(t, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(t, adminRE)[1]
	sipAddrs := p.waitLine(t, sipRE)
	fp := p.waitLine(t, fpRE)[1]
	code := p.waitLine(t, setupRE)[1]
	fb := &featureBox{t: t, p: p, api: claimBox(t, base, fp, code), phones: map[string]*siptest.Phone{}}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	fb.port = udp.Port
	for _, u := range []string{"100", "201", "202", "203", "204", "205"} {
		var ext struct{ User, Password string }
		if err := json.Unmarshal(fb.api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ext); err != nil || ext.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		if u == "205" {
			continue // never registered: unreachable
		}
		ph := siptest.NewPhone(t, u, ext.Password)
		ph.Register(ctx, "127.0.0.1", fb.port)
		fb.phones[u] = ph
	}
	fb.itsp = siptest.NewPhoneAt(t, "127.0.0.2", "itsp", "")
	if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/telephony", nil), &fb.cfg); err != nil {
		t.Fatal(err)
	}
	fb.cfg.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: fmt.Sprintf("127.0.0.2:%d", fb.itsp.Port), Transport: "udp",
		Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, SRTP: "off"}}
	fb.cfg.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
	// 201 may call extensions only; the others keep the default
	// (internal and national).
	fb.cfg.Extensions = []dialplan.Extension{{Number: "201", Classes: []dialplan.Class{dialplan.Internal}}}
	fb.cfg.Features.Groups = []features.RingGroup{
		{Number: "600", Strategy: features.RingAll, Ring: 5, Fallback: "204",
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
		{Number: "601", Strategy: features.InOrder,
			Members: []features.Member{{Extension: "201", Ring: 5}, {Extension: "202", Ring: 5}}},
		{Number: "602", Strategy: features.RoundRobin,
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
	}
	fb.cfg.Features.PickupGroups = []features.PickupGroup{{Name: "sales", Members: []string{"201", "202"}}}
	fb.saveConfig()
	return fb
}

func (fb *featureBox) saveConfig() {
	fb.t.Helper()
	if err := json.Unmarshal(fb.api.must(200, "PUT", "/api/v1/telephony", fb.cfg), &fb.cfg); err != nil {
		fb.t.Fatal(err)
	}
}

// dial calls number from ext: the SIP status (200 answered) and, when
// answered, hangs up again and waits for the callee's BYE at bye.
func (fb *featureBox) dial(ctx context.Context, from, number string, bye *siptest.Phone) int {
	fb.t.Helper()
	d, _, err := fb.phones[from].Dial(ctx, "127.0.0.1", fb.port, number)
	if err != nil {
		if c := statusOf(err); c != 0 {
			return c
		}
		fb.t.Fatalf("%s dials %s: %v\n%s", from, number, err, fb.p.output())
	}
	if err := d.Bye(ctx); err != nil {
		fb.t.Fatal(err)
	}
	if bye != nil {
		select {
		case <-bye.Byes:
		case <-ctx.Done():
			fb.t.Fatalf("%s: no BYE at the callee", number)
		}
	}
	return 200
}

// code dials a feature code: 200 means confirmed (the box answered and
// hung up itself).
func (fb *featureBox) code(ctx context.Context, from, code string) int {
	fb.t.Helper()
	ph := fb.phones[from]
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d, _, err := ph.Dial(ctx, "127.0.0.1", fb.port, code)
	if err != nil {
		if c := statusOf(err); c != 0 {
			return c
		}
		fb.t.Fatalf("%s dials %s: %v\n%s", from, code, err, fb.p.output())
	}
	select {
	case <-ph.Byes: // the box ends the confirmation call itself
	case <-ctx.Done():
		_ = d.Bye(ctx)
		fb.t.Fatalf("%s %s: the box never hung up", from, code)
	}
	return 200
}

func (fb *featureBox) settings(ext string) features.Settings {
	fb.t.Helper()
	var s features.Settings
	if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/extensions/"+ext+"/features", nil), &s); err != nil {
		fb.t.Fatal(err)
	}
	return s
}

func (fb *featureBox) set(ext string, s features.Settings) {
	fb.t.Helper()
	fb.api.must(200, "PUT", "/api/v1/extensions/"+ext+"/features", s)
}

// invited waits for the next INVITE phone ext receives.
func (fb *featureBox) invited(ctx context.Context, ext string) time.Time {
	fb.t.Helper()
	select {
	case <-fb.phones[ext].Invites:
		return time.Now()
	case <-ctx.Done():
		fb.t.Fatalf("%s never rang\n%s", ext, fb.p.output())
	}
	return time.Time{}
}

// quiet fails if phone ext received an INVITE (drained so far).
func (fb *featureBox) quiet(ext string) {
	fb.t.Helper()
	select {
	case inv := <-fb.phones[ext].Invites:
		fb.t.Fatalf("%s rang (for %s) and should not have", ext, inv.Recipient.User)
	default:
	}
}

func (fb *featureBox) drain() {
	for _, ph := range fb.phones {
		for len(ph.Invites) > 0 {
			<-ph.Invites
		}
		for len(ph.Answered) > 0 {
			<-ph.Answered
		}
	}
}

// TestDevModeForwarding runs the real binary with real sipgo phones:
// forwards set by feature code and API on each condition, refused when the
// extension's class may not call the destination (at set time), loops
// bounded, do-not-disturb.
func TestDevModeForwarding(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	const national = "030123456"

	// The feature-code table is served and printable.
	var rows []features.Row
	if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/features/codes", nil), &rows); err != nil || len(rows) != len(features.DefaultCodes()) {
		t.Fatalf("codes %v %v", rows, err)
	}
	if txt := string(fb.api.must(200, "GET", "/api/v1/features/codes.txt", nil)); !strings.Contains(txt, "*72") || !strings.Contains(txt, "*78") {
		t.Fatalf("printed table:\n%s", txt)
	}

	// Class "internal": an external forward is refused when set, by code
	// (403 to the phone) and by the API (403), and nothing is stored.
	if c := fb.code(ctx, "201", "*72"+national); c != 403 {
		t.Fatalf("201 *72 national: %d, want 403", c)
	}
	if st, _, body := fb.api.do("PUT", "/api/v1/extensions/201/features", features.Settings{Always: national}); st != 403 {
		t.Fatalf("API forward of 201 to a national number: %d %s", st, body)
	}
	if s := fb.settings("201"); s.Always != "" {
		t.Fatalf("refused forward stored: %+v", s)
	}
	// Class national: allowed, but never to a premium or emergency number.
	if c := fb.code(ctx, "202", "*7209001234567"); c != 403 {
		t.Fatalf("202 *72 premium: %d, want 403", c)
	}
	if st, _, _ := fb.api.do("PUT", "/api/v1/extensions/202/features", features.Settings{Busy: "112"}); st != 403 {
		t.Fatalf("forward to 112: %d, want 403", st)
	}
	if c := fb.code(ctx, "202", "*72"+national); c != 200 {
		t.Fatalf("202 *72 national: %d", c)
	}
	if s := fb.settings("202"); s.Always != national {
		t.Fatalf("202 settings %+v", s)
	}
	// The dial plan page shows the codes, the groups and who forwards.
	if page := string(fb.api.must(200, "GET", "/telephony", nil)); !strings.Contains(page, "<code>*72</code>") ||
		!strings.Contains(page, "<td>600</td>") || !strings.Contains(page, "<td>202</td><td>"+national+"</td>") {
		t.Fatal("the dial plan page lacks the feature codes, the ring groups or 202's forward")
	}
	// Unconditional: 100 calls 202, the trunk gets the national number
	// from the box, and 202's phone does not ring.
	if c := fb.dial(ctx, "100", "202", fb.itsp); c != 200 {
		t.Fatalf("forwarded call: %d\n%s", c, fb.p.output())
	}
	select {
	case inv := <-fb.itsp.Answered:
		if inv.Recipient.User != national {
			t.Fatalf("trunk got %q", inv.Recipient.User)
		}
	case <-ctx.Done():
		t.Fatal("the trunk never got the forwarded call")
	}
	fb.quiet("202")
	// The call record names the trunk the forward left by.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var page struct {
			Records []struct{ From, To, Trunk string }
		}
		if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/cdr?trunk=itsp", nil), &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Records) == 1 && page.Records[0].From == "100" && page.Records[0].To == "202" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call record of the forward over itsp: %+v", page)
		}
	}
	if c := fb.code(ctx, "202", "*73"); c != 200 || fb.settings("202").Always != "" {
		t.Fatalf("*73: %d %+v", c, fb.settings("202"))
	}

	// Busy: 202 answers 486, the call goes on to 203.
	fb.set("202", features.Settings{Busy: "203"})
	fb.phones["202"].Reply(486)
	if c := fb.dial(ctx, "100", "202", fb.phones["203"]); c != 200 {
		t.Fatalf("busy forward: %d", c)
	}
	fb.invited(ctx, "202")
	fb.drain()

	// No answer: 202 rings for its ring time (5 s), then 203 answers.
	fb.set("202", features.Settings{NoAnswer: "203", Ring: 5})
	fb.phones["202"].Reply(siptest.Ring)
	start := time.Now()
	if c := fb.dial(ctx, "100", "202", fb.phones["203"]); c != 200 {
		t.Fatalf("no-answer forward: %d", c)
	}
	if took := time.Since(start); took < 5*time.Second {
		t.Fatalf("no-answer forward after %v, before the ring time", took)
	}
	fb.invited(ctx, "202")
	fb.drain()

	// Unreachable: 205 has no phone registered.
	fb.set("205", features.Settings{Unreachable: "203"})
	if c := fb.dial(ctx, "100", "205", fb.phones["203"]); c != 200 {
		t.Fatalf("unreachable forward: %d", c)
	}
	fb.drain()

	// Do not disturb by code: the caller hears busy, nothing rings.
	if c := fb.code(ctx, "203", "*78"); c != 200 {
		t.Fatalf("*78: %d", c)
	}
	if c := fb.dial(ctx, "100", "203", nil); c != 486 {
		t.Fatalf("call to 203 in DND: %d, want 486", c)
	}
	fb.quiet("203")
	if c := fb.code(ctx, "203", "*79"); c != 200 {
		t.Fatalf("*79: %d", c)
	}

	// A loop 201 -> 204 -> 201 ends with 482, nobody rings.
	fb.set("201", features.Settings{Always: "204"})
	fb.set("204", features.Settings{Always: "201"})
	if c := fb.dial(ctx, "100", "201", nil); c != 482 {
		t.Fatalf("forwarding loop: %d, want 482", c)
	}
	fb.quiet("201")
	fb.quiet("204")
	fb.set("201", features.Settings{})
	fb.set("204", features.Settings{})

	// Follow-me in sequence: 202 rings 5 s, then 204 answers.
	fb.set("202", features.Settings{FollowMe: features.FollowMe{On: true, Numbers: []string{"204"}, Ring: 5}, Ring: 5})
	if c := fb.dial(ctx, "100", "202", fb.phones["204"]); c != 200 {
		t.Fatalf("follow-me: %d", c)
	}
	fb.invited(ctx, "202")
	fb.phones["202"].Reply(0)

	// A deleted extension's forwards go with it: the number created
	// again starts clean.
	fb.api.must(200, "DELETE", "/api/v1/extensions/205", nil)
	fb.api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: "205"})
	if s := fb.settings("205"); s.Unreachable != "" {
		t.Fatalf("re-created 205 inherited %+v", s)
	}
	if code := fb.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, fb.p.output())
	}
}

// TestDevModeRingGroups: a member in DND is skipped (real binary, sipgo
// phones). Who rings, in what order and what happens at the timeout for
// each strategy is TestSippRingGroups, with sipp phones.
func TestDevModeRingGroups(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	for _, e := range []string{"201", "202", "203"} {
		fb.phones[e].Reply(0)
	}
	// Round robin starts at 201; in DND it is skipped and 202 answers.
	fb.set("201", features.Settings{DND: true})
	if c := fb.dial(ctx, "100", "602", fb.phones["202"]); c != 200 {
		t.Fatalf("round robin with 201 in DND: %d", c)
	}
	select {
	case <-fb.phones["202"].Answered:
	case <-ctx.Done():
		t.Fatal("202 did not answer")
	}
	fb.quiet("201")
	fb.quiet("203")
	if code := fb.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, fb.p.output())
	}
}

// BenchmarkRingAllGroup10 measures complete calls per second through a
// 10-member ring-all group in the real binary: each call is the caller's
// INVITE (digest-challenged), 10 INVITEs from the box, 9 phones ringing
// and CANCELled once the tenth answers, ACK and BYE. Four callers dial in
// parallel; the phones are sipgo UAs in the benchmark's process (they
// share the 2 cores with the daemon). Each op is one call.
func BenchmarkRingAllGroup10(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir := filepath.Join(b.TempDir(), "dev")
	p := startProc(b, procOpts{noFD3: true}, "--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0")
	base := p.waitLine(b, adminRE)[1]
	sipAddrs := p.waitLine(b, sipRE)
	fp := p.waitLine(b, fpRE)[1]
	api := claimBox(b, base, fp, p.waitLine(b, setupRE)[1])
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		b.Fatal(err)
	}
	phone := func(u string) *siptest.Phone {
		var ext struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ext); err != nil {
			b.Fatal(err)
		}
		ph := siptest.NewPhone(b, u, ext.Password)
		ph.Register(ctx, "127.0.0.1", udp.Port)
		return ph
	}
	var members []features.Member
	var answering *siptest.Phone
	for i := 301; i <= 310; i++ {
		ph := phone(fmt.Sprint(i))
		members = append(members, features.Member{Extension: fmt.Sprint(i)})
		if i < 310 {
			ph.Reply(siptest.Ring)
			continue
		}
		answering = ph
	}
	go func() {
		for {
			select {
			case <-answering.Answered:
			case <-answering.Byes:
			case <-ctx.Done():
				return
			}
		}
	}()
	var callers []*siptest.Phone
	for i := 101; i <= 104; i++ {
		callers = append(callers, phone(fmt.Sprint(i)))
	}
	var cfg pbxconfig.Telephony
	if err := json.Unmarshal(api.must(200, "GET", "/api/v1/telephony", nil), &cfg); err != nil {
		b.Fatal(err)
	}
	cfg.Features.Groups = []features.RingGroup{{Number: "700", Strategy: features.RingAll, Members: members}}
	api.must(200, "PUT", "/api/v1/telephony", cfg)

	b.ResetTimer()
	start := time.Now()
	errs := make(chan error, len(callers))
	for k, c := range callers {
		go func() {
			for i := k; i < b.N; i += len(callers) {
				d, _, err := c.Dial(ctx, "127.0.0.1", udp.Port, "700")
				if err == nil {
					err = d.Bye(ctx)
				}
				if err != nil {
					errs <- fmt.Errorf("call %d: %w", i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range callers {
		if err := <-errs; err != nil {
			b.Fatalf("%v\n%s", err, p.output())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
}
