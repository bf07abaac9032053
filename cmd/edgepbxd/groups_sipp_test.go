package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// sippBox is the real daemon in dev mode with sipp (Debian's) as every
// phone: members register with digest and answer the box's INVITEs with
// an out-of-call scenario, callers authenticate their INVITE.
type sippBox struct {
	t     *testing.T
	p     *proc
	api   *apiClient
	sip   string // the box's UDP SIP address
	pw    map[string]string
	ports map[string]int // a member keeps its port (and so its binding) across restarts
	stops map[string]func()
}

func startSippBox(t *testing.T, exts []string, groups []features.RingGroup, tune ...func(*pbxconfig.Telephony)) *sippBox {
	t.Helper()
	siptest.NeedSipp(t)
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", "127.0.0.1:0"}
	p := startProc(t, procOpts{noFD3: true}, args...)
	base := p.waitLine(t, adminRE)[1]
	fp := p.waitLine(t, fpRE)[1]
	api := claimBox(t, base, fp, p.waitLine(t, setupRE)[1])
	// sipp 3.6 answers MD5 challenges only, and the algorithms take effect
	// at the next start (PITFALLS); every sipp is on 127.0.0.1.
	var v admin.SIPSettingsView
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/sip/settings", nil), &v); err != nil {
		t.Fatal(err)
	}
	next := v.Settings
	next.Algorithms = []string{"MD5"}
	next.Guard.MaxUsersPerSource = max(next.Guard.MaxUsersPerSource, len(exts)+1)
	api.must(http.StatusOK, "PUT", "/api/v1/sip/settings", next)
	sb := &sippBox{t: t, pw: map[string]string{}, ports: map[string]int{}, stops: map[string]func(){}}
	for _, u := range exts {
		var ans struct{ User, Password string }
		if err := json.Unmarshal(api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
			t.Fatalf("create %s: %v", u, err)
		}
		sb.pw[u] = ans.Password
	}
	var cfg pbxconfig.Telephony
	if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/telephony", nil), &cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Features.Groups = groups
	for _, f := range tune {
		f(&cfg)
	}
	api.must(http.StatusOK, "PUT", "/api/v1/telephony", cfg)
	if code := p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, p.output())
	}
	sb.p = startProc(t, procOpts{noFD3: true}, args...)
	base = sb.p.waitLine(t, adminRE)[1]
	sipAddrs := sb.p.waitLine(t, sipRE)
	sb.api = newAPIClient(t, base, fp)
	sb.api.login(sb.api.must(http.StatusOK, "POST", "/api/v1/login", admin.LoginRequest{Username: testAdmin, Password: testAdminPW}))
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(sb.p.output(), `msg="calls: ready"`); {
		if time.Now().After(deadline) {
			t.Fatalf("B2BUA not wired:\n%s", sb.p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	udp, err := net.ResolveUDPAddr("udp", sipAddrs[1])
	if err != nil {
		t.Fatal(err)
	}
	sb.sip = udp.String()
	return sb
}

// member (re)starts ext's phone, answering calls with scenario
// (member_ring.xml or member_answer.xml), and waits for its registration.
// Its events.txt starts empty.
func (sb *sippBox) member(ext, scenario string) *sippEvents {
	t := sb.t
	t.Helper()
	if stop := sb.stops[ext]; stop != nil {
		stop()
	}
	port, ok := sb.ports[ext]
	if !ok {
		port = netnstest.FreePort(t, "udp")
		sb.ports[ext] = port
	}
	dir := t.TempDir()
	sf := func(n string) string { s, _ := filepath.Abs(filepath.Join("testdata", "sipp", n)); return s }
	cmd := exec.Command(siptest.NeedSipp(t), "-sf", sf("member_register.xml"), "-oocsf", sf(scenario),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-mi", "127.0.0.1", "-mp", strconv.Itoa(netnstest.FreeMediaPorts(t, "127.0.0.1")),
		"-s", ext, "-au", ext, "-ap", sb.pw[ext], "-m", "1", "-nostdin", "-trace_err", sb.sip)
	cmd.Dir = dir
	out := &lockedBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() { _ = cmd.Process.Kill(); <-exited }
	sb.stops[ext] = stop
	t.Cleanup(stop)
	ev := &sippEvents{t: t, file: filepath.Join(dir, "events.txt"), out: out, box: sb.p}
	ev.wait(func(lines []string) bool { return slices.Contains(lines, "registered") }, "registered", exited)
	return ev
}

// call has ext call number with caller_group.xml: "answered" or "480".
func (sb *sippBox) call(ext, number string) string {
	t := sb.t
	t.Helper()
	dir := t.TempDir()
	sf, _ := filepath.Abs(filepath.Join("testdata", "sipp", "caller_group.xml"))
	port := netnstest.FreePort(t, "udp")
	cmd := exec.Command(siptest.NeedSipp(t), "-sf", sf, "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"-mi", "127.0.0.1", "-mp", strconv.Itoa(netnstest.FreeMediaPorts(t, "127.0.0.1")), "-s", number, "-key", "caller", ext,
		"-au", ext, "-ap", sb.pw[ext], "-m", "1", "-timeout", "90s", "-timeout_error", "-nostdin", "-trace_err", "-trace_msg", sb.sip)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		el, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
		var errs []byte
		if len(el) > 0 {
			errs, _ = os.ReadFile(el[0])
		}
		if ml, _ := filepath.Glob(filepath.Join(dir, "*_messages.log")); len(ml) > 0 {
			m, _ := os.ReadFile(ml[0])
			errs = append(errs, m...)
		}
		t.Fatalf("sipp %s -> %s: %v\n%s\nerrors:\n%s\nbox:\n%s", ext, number, err, lastBytes(out), lastBytes(errs), boxCallLog(sb.p.output()))
	}
	b, _ := os.ReadFile(filepath.Join(dir, "events.txt"))
	return strings.TrimSpace(string(b))
}

// sippEvents reads what a member's scenario wrote to its events.txt.
type sippEvents struct {
	t    *testing.T
	file string
	out  *lockedBuf
	box  *proc
}

// lockedBuf collects a sipp's output for the failure message.
type lockedBuf struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuf) tail() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return lastBytes(append([]byte(nil), l.b...))
}

// all returns the events without their timestamps, in order.
func (e *sippEvents) all() []string {
	b, _ := os.ReadFile(e.file)
	var out []string
	for _, ln := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(ln); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// invites returns when each INVITE arrived (written by the member's
// scenario with date +%s%N).
func (e *sippEvents) invites() []time.Time {
	b, _ := os.ReadFile(e.file)
	var out []time.Time
	for _, ln := range strings.Split(string(b), "\n") {
		f := strings.Fields(ln)
		if len(f) == 2 && f[0] == "invite" {
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				e.t.Fatalf("events %q", ln)
			}
			out = append(out, time.Unix(0, ns))
		}
	}
	return out
}

// wait waits until ok holds for the events (the deadline only stops a
// broken test from hanging).
func (e *sippEvents) wait(ok func([]string) bool, what string, exited <-chan struct{}) {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok(e.all()) {
		select {
		case <-exited:
			e.t.Fatalf("sipp exited before %s: %v\n%s", what, e.all(), e.out.tail())
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s in %v\nsipp:\n%s\nbox:\n%s", what, e.all(), e.out.tail(), lastBytes([]byte(e.box.output())))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settle waits until every member's events are exactly want (a CANCEL
// may reach a member just after the caller's answer).
func settle(t *testing.T, want map[string][]string, ev map[string]*sippEvents) {
	t.Helper()
	for ext, w := range want {
		ev[ext].wait(func(got []string) bool { return slices.Equal(got, w) }, fmt.Sprintf("%s events %v", ext, w), nil)
	}
}

// TestSippRingGroups: each ring-group strategy against the real daemon,
// with sipp as the members and the caller.
//   - ring all: 201, 202 and 203 ring together for the group's 5 s, are
//     cancelled, and the fallback 204 rings and answers;
//   - in order: 201 rings its 5 s, then 202 its 5 s, 203 (not a member)
//     never; then the caller gets 480 (no fallback);
//   - in order with 202 answering: 202 rings only after 201's time;
//   - round robin: each call starts one member further (201, 202, 203,
//     201), and only that member rings when it answers.
func TestSippRingGroups(t *testing.T) {
	sb := startSippBox(t, []string{"100", "201", "202", "203", "204"}, []features.RingGroup{
		{Number: "600", Strategy: features.RingAll, Ring: 5, Fallback: "204",
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
		{Number: "601", Strategy: features.InOrder,
			Members: []features.Member{{Extension: "201", Ring: 5}, {Extension: "202", Ring: 5}}},
		{Number: "602", Strategy: features.RoundRobin,
			Members: []features.Member{{Extension: "201"}, {Extension: "202"}, {Extension: "203"}}},
	})
	ev := map[string]*sippEvents{}
	ringing := func(exts ...string) {
		for _, e := range exts {
			ev[e] = sb.member(e, "member_ring.xml")
		}
	}
	answering := func(exts ...string) {
		for _, e := range exts {
			ev[e] = sb.member(e, "member_answer.xml")
		}
	}
	gap := func(a, b string) time.Duration {
		ta, tb := ev[a].invites(), ev[b].invites()
		if len(ta) != 1 || len(tb) != 1 {
			t.Fatalf("invites %s %v, %s %v", a, ta, b, tb)
		}
		return tb[0].Sub(ta[0])
	}

	// Ring all, then the fallback.
	ringing("201", "202", "203")
	answering("204")
	if got := sb.call("100", "600"); got != "answered" {
		t.Fatalf("ring-all with fallback: %q", got)
	}
	settle(t, map[string][]string{
		"201": {"registered", "invite", "cancel"}, "202": {"registered", "invite", "cancel"},
		"203": {"registered", "invite", "cancel"}, "204": {"registered", "invite", "answered", "bye"},
	}, ev)
	for _, e := range []string{"202", "203"} {
		if d := gap("201", e); d < -time.Second || d > time.Second {
			t.Fatalf("ring-all: %s rang %v after 201", e, d)
		}
	}
	if d := gap("201", "204"); d < 5*time.Second-200*time.Millisecond {
		t.Fatalf("fallback rang %v after the members, before their 5 s were over", d)
	}

	// In order, nobody answers.
	ringing("201", "202", "203")
	if got := sb.call("100", "601"); got != "480" {
		t.Fatalf("in order without answer: %q, want 480", got)
	}
	settle(t, map[string][]string{
		"201": {"registered", "invite", "cancel"}, "202": {"registered", "invite", "cancel"}, "203": {"registered"},
	}, ev)
	if d := gap("201", "202"); d < 5*time.Second-200*time.Millisecond {
		t.Fatalf("in order: 202 rang %v after 201, before 201's 5 s were over", d)
	}

	// In order, the second answers.
	ringing("201")
	answering("202")
	if got := sb.call("100", "601"); got != "answered" {
		t.Fatalf("in order, second answers: %q", got)
	}
	settle(t, map[string][]string{"201": {"registered", "invite", "cancel"}, "202": {"registered", "invite", "answered", "bye"}}, ev)
	if d := gap("201", "202"); d < 5*time.Second-200*time.Millisecond {
		t.Fatalf("in order: 202 rang %v after 201", d)
	}

	// Round robin.
	answering("201", "202", "203")
	count := map[string]int{}
	for i, want := range []string{"201", "202", "203", "201"} {
		if got := sb.call("100", "602"); got != "answered" {
			t.Fatalf("round robin call %d: %q", i, got)
		}
		count[want]++
		for _, e := range []string{"201", "202", "203"} {
			w := []string{"registered"}
			for range count[e] {
				w = append(w, "invite", "answered", "bye")
			}
			ev[e].wait(func(got []string) bool { return slices.Equal(got, w) }, fmt.Sprintf("round robin call %d: %s events %v", i, e, w), nil)
		}
	}
	if code := sb.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, sb.p.output())
	}
}

// boxCallLog is the daemon's log without its start-up chatter.
func boxCallLog(out string) string {
	var keep []string
	for _, ln := range strings.Split(out, "\n") {
		if strings.Contains(ln, "call") || strings.Contains(ln, "WARN") || strings.Contains(ln, "ERROR") {
			keep = append(keep, ln)
		}
	}
	return string(lastBytes([]byte(strings.Join(keep, "\n"))))
}

// TestSippForwarding: each forward condition against the real daemon with
// sipp phones, and an external forward refused when set for an
// internal-only extension (201) and allowed for a national one (202),
// whose forwarded call reaches the trunk (sipp) with the national number.
func TestSippForwarding(t *testing.T) {
	const national = "030123456"
	trunkPort := netnstest.FreePort(t, "udp")
	sb := startSippBox(t, []string{"100", "201", "202", "203", "205"}, nil, func(c *pbxconfig.Telephony) {
		c.Trunks = []pbxconfig.TelephonyTrunk{{Name: "itsp", Host: fmt.Sprintf("127.0.0.2:%d", trunkPort), Transport: "udp",
			Auth: pbxconfig.TrunkAuthIP, Peers: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}, SRTP: "off"}}
		c.Routes = []dialplan.Route{{Prefix: "", Trunk: "itsp"}}
		c.Extensions = []dialplan.Extension{{Number: "201", Classes: []dialplan.Class{dialplan.Internal}}}
	})
	set := func(ext string, s features.Settings) {
		sb.api.must(http.StatusOK, "PUT", "/api/v1/extensions/"+ext+"/features", s)
	}
	ev := map[string]*sippEvents{}
	ev["203"] = sb.member("203", "member_answer.xml")
	answered := func(n int) []string {
		w := []string{"registered"}
		for range n {
			w = append(w, "invite", "answered", "bye")
		}
		return w
	}

	// Unconditional: 201 does not ring, 203 answers.
	ev["201"] = sb.member("201", "member_ring.xml")
	set("201", features.Settings{Always: "203"})
	if got := sb.call("100", "201"); got != "answered" {
		t.Fatalf("forward always: %q", got)
	}
	settle(t, map[string][]string{"201": {"registered"}, "203": answered(1)}, ev)

	// Busy: 201 answers 486, 203 answers.
	ev["201"] = sb.member("201", "member_busy.xml")
	set("201", features.Settings{Busy: "203"})
	if got := sb.call("100", "201"); got != "answered" {
		t.Fatalf("forward on busy: %q", got)
	}
	settle(t, map[string][]string{"201": {"registered", "invite"}, "203": answered(2)}, ev)

	// No answer: 201 rings its 5 s, is cancelled, then 203 rings.
	ev["201"] = sb.member("201", "member_ring.xml")
	set("201", features.Settings{NoAnswer: "203", Ring: 5})
	if got := sb.call("100", "201"); got != "answered" {
		t.Fatalf("forward on no answer: %q", got)
	}
	settle(t, map[string][]string{"201": {"registered", "invite", "cancel"}, "203": answered(3)}, ev)
	if i201, i203 := ev["201"].invites(), ev["203"].invites(); len(i201) != 1 || len(i203) != 3 || i203[2].Sub(i201[0]) < 5*time.Second-200*time.Millisecond {
		t.Fatalf("no-answer forward: 201 rang at %v, 203 at %v (want 5 s later)", i201, i203)
	}

	// Unreachable: 205 has no phone registered.
	set("205", features.Settings{Unreachable: "203"})
	if got := sb.call("100", "205"); got != "answered" {
		t.Fatalf("forward when unreachable: %q", got)
	}
	settle(t, map[string][]string{"203": answered(4)}, ev)

	// External: refused for the internal-only 201 when set, nothing stored.
	if st, _, body := sb.api.do("PUT", "/api/v1/extensions/201/features", features.Settings{Always: national}); st != http.StatusForbidden {
		t.Fatalf("forward of internal-only 201 to %s: %d %s", national, st, body)
	}
	var s features.Settings
	if err := json.Unmarshal(sb.api.must(http.StatusOK, "GET", "/api/v1/extensions/201/features", nil), &s); err != nil || s.Always != "" {
		t.Fatalf("refused forward stored: %+v %v", s, err)
	}
	// Allowed for 202 (national class): the call leaves by the trunk.
	dir := t.TempDir()
	trunk := exec.Command(siptest.NeedSipp(t), "-sn", "uas", "-i", "127.0.0.2", "-p", strconv.Itoa(trunkPort),
		"-mi", "127.0.0.2", "-mp", strconv.Itoa(netnstest.FreeMediaPorts(t, "127.0.0.2")), "-m", "1", "-nostdin", "-trace_msg", "-trace_err")
	trunk.Dir = dir
	if err := trunk.Start(); err != nil {
		t.Fatal(err)
	}
	trunkDone := make(chan error, 1)
	go func() { trunkDone <- trunk.Wait() }()
	t.Cleanup(func() { _ = trunk.Process.Kill() })
	set("202", features.Settings{Always: national})
	if got := sb.call("100", "202"); got != "answered" {
		t.Fatalf("forward of 202 to %s: %q", national, got)
	}
	select {
	case err := <-trunkDone:
		if err != nil {
			t.Fatalf("trunk sipp: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("trunk sipp did not finish its call")
	}
	ml, _ := filepath.Glob(filepath.Join(dir, "*_messages.log"))
	var msgs []byte
	if len(ml) > 0 {
		msgs, _ = os.ReadFile(ml[0])
	}
	if !strings.Contains(string(msgs), "INVITE sip:"+national+"@") {
		t.Fatalf("the trunk did not get an INVITE for %s:\n%s", national, lastBytes(msgs))
	}
	if code := sb.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, sb.p.output())
	}
}
