package admin

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin/browsertest"
	"github.com/edgepbx/edgepbx/firmware/audit"
	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/call"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/recording"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
	"github.com/edgepbx/edgepbx/firmware/voicemail"
)

// withVoicemail gives e a real voicemail service (messages sealed in a
// recording store) whose wrong PINs are charged to the real SIP edge's
// guard, with mailboxes 201 and 202.
func withVoicemail(t *testing.T, e *env) (*voicemail.Service, *sipedge.Server) {
	t.Helper()
	edge := liveEdge(t, e)
	for _, ext := range []string{"201", "202"} {
		if err := edge.Extensions().Set(ext, "Ext-Password-"+ext+"-x"); err != nil {
			t.Fatal(err)
		}
	}
	return newTestVoicemail(t, e, edge.Extensions(), edge), edge
}

// newTestVoicemail is e's voicemail service over exts, wrong PINs charged
// to guard (nil: none).
func newTestVoicemail(t testing.TB, e *env, exts *sipedge.Extensions, guard voicemail.Guard) *voicemail.Service {
	t.Helper()
	keys, err := recording.StaticKey(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := recording.OpenStore(recording.Config{Dir: filepath.Join(t.TempDir(), "vm"), Keys: keys, Quota: 64 << 20, MinFree: 1})
	if err != nil {
		t.Fatal(err)
	}
	cfg := voicemail.Config{DB: e.db, Audio: voicemail.Recordings{Store: rs},
		Hasher: auth.NewHasher(auth.Params{Time: 1, MemoryKiB: 1024, Threads: 1}, 1, 8),
		Exists: func(ext string) bool { return slices.Contains(exts.List(), ext) }, Now: e.clock.Now}
	if guard != nil {
		cfg.Guard = guard
	}
	vm, err := voicemail.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv.vm = vm
	return vm
}

// FuzzOwnerEndpoints sends arbitrary bodies to the mailbox owner's sign-in
// (from changing sources, past the rate limit) and, signed in, to the PIN,
// e-mail and greeting endpoints (greetings as multipart too): no panic, no
// 5xx but 503 (the PIN hasher busy).
func FuzzOwnerEndpoints(f *testing.F) {
	f.Add(uint8(0), uint8(1), []byte(`{"ext":"201","pin":"111111"}`))
	f.Add(uint8(1), uint8(2), []byte(`{"current_pin":"111111","new_pin":"583920"}`))
	f.Add(uint8(2), uint8(3), []byte(`{"email":"a@example.com","attach_audio":true}`))
	f.Add(uint8(3), uint8(4), []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.wav\"\r\n\r\nRIFF\r\n--b--\r\n"))
	f.Add(uint8(4), uint8(5), []byte("RIFF\x24\x00\x00\x00WAVEfmt "))
	e, admin := claimed(f)
	if err := e.exts.Set("201", "Ext-Password-201-x"); err != nil {
		f.Fatal(err)
	}
	newTestVoicemail(f, e, e.exts, nil)
	pin := admin.must(200, "POST", "/api/v1/voicemail/201/pin", nil).str("pin")
	o := e.client("192.0.2.201")
	o.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: pin})
	type target struct{ method, path, ct string }
	targets := []target{{"POST", "/api/v1/mailbox/login", ""}, {"PUT", "/api/v1/mailbox/pin", ""}, {"PUT", "/api/v1/mailbox/email", ""},
		{"PUT", "/api/v1/mailbox/greetings/name", "multipart/form-data; boundary=b"}, {"PUT", "/api/v1/mailbox/greetings/busy", "audio/wav"}}
	f.Fuzz(func(t *testing.T, which, src uint8, body []byte) {
		e.t = t
		tg := targets[int(which)%len(targets)]
		c := o
		if tg.path == "/api/v1/mailbox/login" {
			c = e.client(netip.AddrFrom4([4]byte{198, 51, 100, src}).String())
		}
		c.header = map[string]string{}
		if tg.ct != "" {
			c.header["Content-Type"] = tg.ct
		}
		r := c.do(tg.method, tg.path, string(body))
		if r.code >= 500 && r.code != 503 {
			t.Fatalf("%s %q: %d %s", tg.path, body, r.code, r.body)
		}
	})
}

// depositLeg is a caller leaving a message through the voicemail
// application: it hears the greeting and the tone, then speaks (a 440 Hz
// tone) for the given frames and presses '#'.
type depositLeg struct {
	caller    call.Caller
	frames    chan []int16
	dtmf      chan call.Digit
	n         int
	mu        sync.Mutex
	plays     int
	recording bool
}

func (l *depositLeg) Caller() call.Caller    { return l.caller }
func (l *depositLeg) Rate() int              { return 8000 }
func (l *depositLeg) Frames() <-chan []int16 { return l.frames }
func (l *depositLeg) Play(context.Context, []int16) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.plays++
	return nil
}

// DTMF: the first call after the tone is the recorder's loop; the caller
// starts speaking then (frames before the tone are not recorded).
func (l *depositLeg) DTMF() <-chan call.Digit {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.plays >= 2 && !l.recording {
		l.recording = true
		go func() {
			for i := range l.n {
				f := make([]int16, 160)
				for j := range f {
					f[j] = int16(8000 * math.Sin(2*math.Pi*440*float64(i*160+j)/8000))
				}
				l.frames <- f
			}
			l.dtmf <- call.Digit{Key: '#', Via: "rfc4733"}
		}()
	}
	return l.dtmf
}

// deposit leaves a message of n 20 ms frames from caller in ext's mailbox
// and returns its id.
func deposit(t *testing.T, vm *voicemail.Service, ext, caller string, n int) string {
	t.Helper()
	before, _ := vm.Messages(ext)
	app, err := vm.Open(dialplan.AppVoicemail, ext, call.Caller{Number: caller})
	if err != nil {
		t.Fatal(err)
	}
	leg := &depositLeg{frames: make(chan []int16), dtmf: make(chan call.Digit, 1), n: n, caller: call.Caller{Number: caller}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Run(ctx, leg); err != nil {
		t.Fatal(err)
	}
	after, _ := vm.Messages(ext)
	for _, m := range after {
		if !slices.ContainsFunc(before, func(b voicemail.Message) bool { return b.ID == m.ID }) {
			return m.ID
		}
	}
	t.Fatalf("no message deposited in %s: %v", ext, after)
	return ""
}

// ownerPIN has the admin set a new PIN for ext and returns it.
func ownerPIN(t *testing.T, admin *client, ext string) string {
	t.Helper()
	pin := admin.must(200, "POST", "/api/v1/voicemail/"+ext+"/pin", nil).str("pin")
	if pin == "" {
		t.Fatal("no PIN")
	}
	return pin
}

func (e *env) auditBy(actor, action string) []audit.Entry {
	l, err := e.srv.audit.Query(audit.Filter{Actor: actor, Action: action, Limit: 100})
	if err != nil {
		e.t.Fatal(err)
	}
	return l
}

// TestOwnerMailbox: the owner of 201 signs in with the PIN, lists, listens
// to, downloads and deletes their own messages, sets voicemail to e-mail
// and changes the PIN, all audited as mailbox:201; 202's messages answer
// 404 whatever the owner of 201 tries.
func TestOwnerMailbox(t *testing.T) {
	e, admin := claimed(t)
	vm, _ := withVoicemail(t, e)
	mine := deposit(t, vm, "201", "1001", 100)
	theirs := deposit(t, vm, "202", "1001", 100)
	if err := vm.SetOptions("201", voicemail.Options{SkipPINOwnPhone: true}); err != nil {
		t.Fatal(err)
	}
	pin := ownerPIN(t, admin, "201")

	o := e.client("192.0.2.77")
	o.must(401, "GET", "/api/v1/mailbox", nil)
	o.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: pin})
	if o.owner == "" || o.cookie != "" || o.csrf == "" {
		t.Fatalf("owner cookie %q admin cookie %q csrf %q", o.owner, o.cookie, o.csrf)
	}
	var mb MailboxView
	if err := json.Unmarshal(o.must(200, "GET", "/api/v1/mailbox", nil).body, &mb); err != nil {
		t.Fatal(err)
	}
	if mb.Ext != "201" || len(mb.Messages) != 1 || mb.Messages[0].ID != mine || mb.New != 1 {
		t.Fatalf("mailbox %+v", mb)
	}
	r := o.must(200, "GET", "/api/v1/mailbox/messages/"+mine+"/audio", nil)
	if string(r.body[:4]) != "RIFF" || len(r.body) < 44+2*8000 || r.hdr.Get("Content-Type") != "audio/wav" {
		t.Fatalf("audio: %d bytes %q", len(r.body), r.body[:min(12, len(r.body))])
	}
	if m, _ := vm.Message("201", mine); m.New {
		t.Error("a message listened to is still new")
	}
	r = o.must(200, "GET", "/api/v1/mailbox/messages/"+mine+"/audio?download=1", nil)
	if !strings.Contains(r.hdr.Get("Content-Disposition"), "attachment") {
		t.Errorf("download: %v", r.hdr)
	}
	// 202's message: not found, whichever way.
	o.must(404, "GET", "/api/v1/mailbox/messages/"+theirs+"/audio", nil)
	o.must(404, "DELETE", "/api/v1/mailbox/messages/"+theirs, nil)
	o.must(404, "GET", "/api/v1/mailbox/messages/..%2f202%2f"+theirs+"/audio", nil)
	if ms, _ := vm.Messages("202"); len(ms) != 1 {
		t.Fatalf("202's messages %v", ms)
	}
	// Voicemail to e-mail: the owner's address; the PIN skip stays the admin's.
	r = o.do("PUT", "/api/v1/mailbox/email", OwnerEmailRequest{Email: "not an address"})
	if r.code != 400 || r.str("field") != "/email" {
		t.Errorf("bad address: %d %s", r.code, r.body)
	}
	o.must(400, "PUT", "/api/v1/mailbox/email", map[string]any{"email": "owner@example.com", "skip_pin_own_phone": false})
	o.must(200, "PUT", "/api/v1/mailbox/email", OwnerEmailRequest{Email: "owner@example.com", AttachAudio: true})
	if b, _ := vm.Mailbox("201"); b.Email != "owner@example.com" || !b.AttachAudio || !b.SkipPINOwnPhone {
		t.Errorf("options %+v", b)
	}
	// The PIN: policy first, then the current PIN.
	other := e.client("192.0.2.78")
	other.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: pin})
	for _, c := range []struct {
		req   OwnerPINRequest
		field string
	}{{OwnerPINRequest{CurrentPIN: pin, NewPIN: "123456"}, "/new_pin"}, {OwnerPINRequest{CurrentPIN: pin, NewPIN: "920120"}, "/new_pin"},
		{OwnerPINRequest{CurrentPIN: "000000", NewPIN: "583920"}, "/current_pin"}} {
		if r := o.do("PUT", "/api/v1/mailbox/pin", c.req); r.code != 400 || r.str("field") != c.field {
			t.Errorf("%+v: %d %s", c.req, r.code, r.body)
		}
	}
	o.must(200, "PUT", "/api/v1/mailbox/pin", OwnerPINRequest{CurrentPIN: pin, NewPIN: "583920"})
	other.must(401, "GET", "/api/v1/mailbox", nil) // the other session ended with the PIN change
	if err := vm.Login(context.Background(), "201", "583920", netip.Addr{}, false); err != nil {
		t.Errorf("new PIN: %v", err)
	}
	o.must(200, "DELETE", "/api/v1/mailbox/messages/"+mine, nil)
	if ms, _ := vm.Messages("201"); len(ms) != 0 {
		t.Errorf("deleted message still listed: %v", ms)
	}
	for _, a := range []string{"mailbox.login", "voicemail.message.listen", "voicemail.message.download", "voicemail.options", "voicemail.pin.change", "voicemail.message.delete"} {
		if len(e.auditBy("mailbox:201", a)) == 0 {
			t.Errorf("%s not audited as mailbox:201", a)
		}
	}
	// The admin's new PIN signs the owner out; so does signing out.
	o.must(200, "GET", "/api/v1/mailbox", nil)
	ownerPIN(t, admin, "201")
	o.must(401, "GET", "/api/v1/mailbox", nil)
	o2 := e.client("192.0.2.79")
	o2.must(401, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: "583920"})
}

// TestOwnerWrongPINs: wrong PINs on the web count like wrong PINs on the
// phone: the SIP guard throttles the source for voicemail/201 (then even
// the right PIN is refused), the mailbox locks after five, and a source is
// limited to ten sign-ins per ten minutes whatever it types. Unknown
// mailboxes, mailboxes without a PIN and wrong PINs read the same.
func TestOwnerWrongPINs(t *testing.T) {
	e, admin := claimed(t)
	_, edge := withVoicemail(t, e)
	pin := ownerPIN(t, admin, "201")
	src := netip.MustParseAddr("192.0.2.81")
	a := e.client(src.String())
	var bodies []string
	for _, p := range []OwnerLoginRequest{{"201", "111111"}, {"201", "222222"}, {"201", "333333"}} {
		r := a.must(401, "POST", "/api/v1/mailbox/login", p)
		bodies = append(bodies, string(r.body))
	}
	if !edge.PINThrottled(src, "voicemail/201") {
		t.Fatal("three wrong PINs from one source: the SIP guard does not throttle it for voicemail/201")
	}
	a.must(429, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", pin})
	// Another mailbox, or none: same answer as a wrong PIN.
	b := e.client("192.0.2.82")
	for _, p := range []OwnerLoginRequest{{"202", "111111"}, {"9999", "111111"}, {"201", "111111"}} {
		if r := b.must(401, "POST", "/api/v1/mailbox/login", p); string(r.body) != bodies[0] {
			t.Errorf("%+v answers %s, a wrong PIN %s", p, r.body, bodies[0])
		}
	}
	// The mailbox locks after five wrong PINs in all (three + one above, one more).
	c := e.client("192.0.2.83")
	c.must(429, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", "444444"})
	c.must(429, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", pin})
	if b, _ := e.srv.vm.Mailbox("201"); !b.LockedUntil.After(e.clock.Now()) {
		t.Fatalf("mailbox not locked: %+v", b)
	}
	admin.must(200, "POST", "/api/v1/voicemail/201/unlock", nil)
	c.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", pin})
	// Ten tries per source in ten minutes, whatever is typed.
	d := e.client("192.0.2.84")
	for range ownerSourceTries {
		d.must(401, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"9999", "111111"})
	}
	d.must(429, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", pin})
	d.must(429, "POST", "/api/v1/mailbox/login", `{"ext":`)
	e.clock.Advance(ownerSourceWindow)
	d.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{"201", pin})
	if len(e.auditBy("mailbox:201", "mailbox.login")) < 5 {
		t.Error("sign-ins and refusals not audited")
	}
}

// TestOwnerSessionReachesNothingElse sends every route of the admin
// server's table with an owner session (its cookie and CSRF token), and
// with the owner's secret forged into the admin cookie: every admin route
// refuses (401, or the login page), every owner route refuses an admin
// session, and the owner principal holds no permission at all.
func TestOwnerSessionReachesNothingElse(t *testing.T) {
	e, admin := claimed(t)
	withVoicemail(t, e)
	pin := ownerPIN(t, admin, "201")
	o := e.client("192.0.2.90")
	o.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: pin})
	forged := e.client("192.0.2.90")
	forged.cookie, forged.csrf = o.owner, o.csrf
	path := strings.NewReplacer("{id}", "00000000", "{name}", "nobody", "{mac}", "001122334455", "{ext}", "201", "{$}", "").Replace
	refused := func(rt route, r resp, login string) bool {
		if strings.HasPrefix(rt.path, "/api/") {
			return r.code == http.StatusUnauthorized
		}
		return r.code == http.StatusSeeOther && r.hdr.Get("Location") == login
	}
	adminRoutes, ownerRoutes := 0, 0
	for _, rt := range e.srv.routes {
		if rt.public {
			continue
		}
		var body any
		if isStateChange(rt.method) && rt.method != "DELETE" {
			body = `{}`
		}
		p := path(rt.path)
		if rt.owner {
			ownerRoutes++
			if r := admin.do(rt.method, p, body); !refused(rt, r, "/mailbox/login") {
				t.Errorf("%s %s with an admin session: %d %s", rt.method, rt.path, r.code, r.body)
			}
			continue
		}
		adminRoutes++
		for name, c := range map[string]*client{"owner session": o, "owner secret as admin cookie": forged} {
			if r := c.do(rt.method, p, body); !refused(rt, r, "/login") {
				t.Errorf("%s %s with the %s: %d %s", rt.method, rt.path, name, r.code, r.body)
			}
		}
	}
	if adminRoutes < 100 || ownerRoutes < 8 {
		t.Fatalf("only %d admin and %d owner routes checked", adminRoutes, ownerRoutes)
	}
	// The owner session still works (nothing above ended it) and reaches
	// only its own mailbox.
	if r := o.must(200, "GET", "/api/v1/mailbox", nil); r.str("ext") != "201" {
		t.Errorf("mailbox %s", r.body)
	}
	sess, ok := e.srv.owners.lookup(o.owner, e.clock.Now())
	if !ok {
		t.Fatal("owner session gone")
	}
	p := ownerPrincipal(sess)
	for _, perm := range auth.Permissions {
		if p.Can(perm) {
			t.Errorf("owner principal can %s", perm)
		}
	}
	if _, err := e.srv.auth.SessionPrincipal(o.owner); err == nil {
		t.Error("the owner's secret resolves as an admin session")
	}
	// Without its CSRF token, or from another site, a change is refused.
	noCSRF := &client{e: e, addr: "192.0.2.90", owner: o.owner}
	noCSRF.must(403, "POST", "/api/v1/mailbox/logout", nil)
	foreign := &client{e: e, addr: "192.0.2.90", owner: o.owner, csrf: o.csrf, origin: "https://evil.example"}
	foreign.must(403, "POST", "/api/v1/mailbox/logout", nil)
	secret := o.owner
	o.must(200, "POST", "/api/v1/mailbox/logout", nil)
	if o.owner != "" {
		t.Error("sign-out kept the cookie")
	}
	again := &client{e: e, addr: "192.0.2.90", owner: secret}
	again.must(401, "GET", "/api/v1/mailbox", nil)
}

// TestOwnerSessionLifetime: 10 minutes idle or 30 in all end a session; a
// fifth sign-in to one mailbox ends its oldest session.
func TestOwnerSessionLifetime(t *testing.T) {
	e, admin := claimed(t)
	withVoicemail(t, e)
	pin := ownerPIN(t, admin, "201")
	login := func(addr string) *client {
		c := e.client(addr)
		c.must(200, "POST", "/api/v1/mailbox/login", OwnerLoginRequest{Ext: "201", PIN: pin})
		return c
	}
	a := login("192.0.2.91")
	e.clock.Advance(ownerIdle - time.Second)
	a.must(200, "GET", "/api/v1/mailbox", nil)
	e.clock.Advance(ownerIdle)
	a.must(401, "GET", "/api/v1/mailbox", nil)
	a.must(303, "GET", "/mailbox", nil)

	b := login("192.0.2.92")
	for range 3 {
		e.clock.Advance(ownerIdle - time.Minute)
		b.must(200, "GET", "/api/v1/mailbox", nil)
	}
	e.clock.Advance(ownerMaxAge - 3*(ownerIdle-time.Minute))
	b.must(401, "GET", "/api/v1/mailbox", nil)

	var cs []*client
	for i := range ownerPerMailbox + 1 {
		cs = append(cs, login("192.0.2."+string(rune('1'+i))+"0"))
		e.clock.Advance(time.Second)
	}
	cs[0].must(401, "GET", "/api/v1/mailbox", nil)
	for _, c := range cs[1:] {
		c.must(200, "GET", "/api/v1/mailbox", nil)
	}
}

// TestBrowserMailboxOwner: in Chromium, the owner of 201 opens /mailbox,
// is sent to the sign-in page, signs in, plays a message to its end and
// deletes it; both pages pass axe-core, the keyboard walk and fit a
// phone's width.
func TestBrowserMailboxOwner(t *testing.T) {
	axe := browsertest.Axe(t)
	e, p, base := browserBox(t)
	vm, _ := withVoicemail(t, e)
	deposit(t, vm, "201", "1001", 100)
	pin, err := vm.ResetPIN(context.Background(), "201")
	if err != nil {
		t.Fatal(err)
	}
	p.Click(`button[data-api="/api/v1/logout"]`)
	p.WaitFor(`location.pathname === "/login" && document.readyState === "complete"`)
	p.Open(base+"/mailbox", "/mailbox/login")
	p.Call("Emulation.setFocusEmulationEnabled", map[string]any{"enabled": true}, nil)
	// The every-page tests walk the admin's pages; these two are the
	// owner's: axe-core, the keyboard walk, a phone's width.
	p.Viewport(390, 844)
	checkPage := func(path string) {
		t.Helper()
		if o := p.Overflow(390); o != "" {
			t.Errorf("%s at 390 px: wider than the screen: %s", path, o)
		}
		if h := p.Str(shownHidden); h != "" {
			t.Errorf("%s: hidden elements shown: %s", path, h)
		}
		for _, v := range p.AxeRun(axe) {
			t.Errorf("%s: %s", path, v)
		}
		problems, _ := tabWalk(t, p)
		for _, pr := range problems {
			t.Errorf("%s: %s", path, pr)
		}
	}
	checkPage("/mailbox/login")
	p.Fill(map[string]string{"#mb-ext": "201", "#mb-pin": "000000"})
	p.Submit("#mailbox-login", "#mailbox-login [data-result]")
	if r := p.Result("#mailbox-login [data-result]"); !strings.Contains(r, "Wrong extension or PIN") {
		t.Errorf("wrong PIN says %q", r)
	}
	p.Fill(map[string]string{"#mb-ext": "201", "#mb-pin": pin})
	p.SubmitNav("#mailbox-login")
	p.WaitFor(`location.pathname === "/mailbox" && document.querySelector("h1").textContent === "Mailbox 201"`)
	checkPage("/mailbox")
	// A click on the player's play button is a user gesture: so is this.
	var played struct {
		Result struct{ Value string } `json:"result"`
	}
	p.Call("Runtime.evaluate", map[string]any{"expression": `document.querySelector("#messages audio").play().then(() => "playing", e => e.name)`,
		"userGesture": true, "awaitPromise": true, "returnByValue": true}, &played)
	if played.Result.Value != "playing" {
		t.Fatalf("play: %q", played.Result.Value)
	}
	p.WaitFor(`document.querySelector("#messages audio").ended`)
	if d := p.Str(`String(document.querySelector("#messages audio").duration)`); d != "2" {
		t.Errorf("played %s s, want the 2 s message", d)
	}
	if len(e.auditBy("mailbox:201", "voicemail.message.listen")) == 0 {
		t.Error("listening not audited")
	}
	p.Eval(`window.confirm = () => true`, nil)
	p.Eval(`window.__oldPage = true`, nil)
	p.Click(`#messages button[data-method="DELETE"]`)
	p.WaitFor(`window.__oldPage === undefined && document.readyState === "complete" && document.querySelector("#messages td").textContent === "No messages."`)
	p.Click(`#mailbox-logout`)
	p.WaitFor(`location.pathname === "/mailbox/login" && document.readyState === "complete"`)
	p.Open(base+"/mailbox", "/mailbox/login")
}
