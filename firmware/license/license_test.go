package license_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/cmd/licensed/phonehome"
	"github.com/edgepbx/edgepbx/firmware/license"
)

const day = 24 * time.Hour

func hasReason(s license.State, code string) bool {
	return slices.ContainsFunc(s.Reasons, func(r license.Reason) bool { return r.Code == code })
}

// gates checks the feature limits of a mode.
func checkGates(t *testing.T, m *license.Manager, degraded bool) {
	t.Helper()
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"international call", m.AllowOutboundCall("+44 20 7946 0958"), !degraded},
		{"national call", m.AllowOutboundCall("030 1234567"), !degraded},
		{"emergency 112", m.AllowOutboundCall("112"), true},
		{"emergency 911", m.AllowOutboundCall("911"), true},
		{"emergency 1-1-2", m.AllowOutboundCall("1-1-2"), true},
		{"provisioning", m.AllowProvisioning(), !degraded},
		{"new extension", m.AllowNewExtension(), !degraded},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s allowed = %v, want %v (degraded=%v)", tt.name, tt.got, tt.want, degraded)
		}
	}
}

// TestDailyCycle runs the scheduler with a fake clock: a good day-0
// check-in, 15 days with the server unreachable, then the server returns.
func TestDailyCycle(t *testing.T) {
	e := newEnv(t)
	b := e.newBox()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// nextAttempt waits for Run to finish the check-in it started.
	nextAttempt := func() license.State {
		t.Helper()
		for {
			select {
			case st := <-b.events:
				if !st.LastAttempt.IsZero() && st.LastAttempt.Equal(b.clock.Now()) {
					return st
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no check-in from Run at %s; state %+v", b.clock.Now(), b.m.State())
			}
		}
	}
	st := nextAttempt() // overdue at first start: checks at once
	if st.Mode != license.ModeFull || st.LastError != "" {
		t.Fatalf("day 0: mode %s err %q reasons %+v", st.Mode, st.LastError, st.Reasons)
	}
	checkGates(t, b.m, false)
	if got := len(mustCheckins(t, e)); got != 1 {
		t.Fatalf("server recorded %d check-ins, want 1", got)
	}

	e.offline.Store(true)
	for d := 1; d <= 15; d++ {
		<-b.clock.armed // Run is waiting on its timer
		e.advance(b, day)
		st := nextAttempt()
		if st.LastError == "" {
			t.Fatalf("day %d: check-in succeeded while the server is down", d)
		}
		want := license.ModeFull
		switch {
		case d > 14:
			want = license.ModeDegraded
		case d >= 7:
			want = license.ModeWarning
		}
		if st.Mode != want || st.DaysOffline != d {
			t.Fatalf("day %d: mode %s days %d, want %s %d; reasons %+v", d, st.Mode, st.DaysOffline, want, d, st.Reasons)
		}
		if d >= 7 && (!hasReason(st, license.ReasonOffline) || st.Banner == "") {
			t.Fatalf("day %d: no offline warning/banner: %+v", d, st)
		}
		checkGates(t, b.m, d > 14)
	}

	e.offline.Store(false)
	<-b.clock.armed
	e.advance(b, 4*time.Hour) // well past the longest retry backoff
	st = nextAttempt()
	if st.Mode != license.ModeFull || st.DaysOffline != 0 || st.Banner != "" {
		t.Fatalf("after good check-in: mode %s days %d banner %q", st.Mode, st.DaysOffline, st.Banner)
	}
	checkGates(t, b.m, false)
}

func mustCheckins(t *testing.T, e *env) []phonehome.Checkin {
	t.Helper()
	c, err := e.srv.Checkins("LIC-1")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestClockSetBack: setting the clock back neither shortens the offline time
// nor extends the grace period, in one run or across a restart.
func TestClockSetBack(t *testing.T) {
	e := newEnv(t)
	b := e.newBox()
	e.mustCheck(b)
	e.offline.Store(true)
	e.advance(b, 10*day)
	if st := b.m.State(); st.DaysOffline != 10 || st.Mode != license.ModeWarning {
		t.Fatalf("day 10: %s %d", st.Mode, st.DaysOffline)
	}
	b.clock.Set(b.clock.Now().Add(-11 * day)) // owner sets the clock back
	st := b.m.State()
	if st.DaysOffline != 10 {
		t.Fatalf("clock set back changed offline days to %d", st.DaysOffline)
	}
	if !hasReason(st, license.ReasonClock) {
		t.Errorf("no clock warning although the clock is a day behind signed server time")
	}
	b.restart(e) // reboot with the wrong clock
	e.advance(b, 4*day+time.Hour)
	st = b.m.State()
	if st.Mode != license.ModeDegraded || st.DaysOffline != 14 || st.Offline <= license.Grace {
		t.Fatalf("after 14 days 1 hour of real time: mode %s offline %s", st.Mode, st.Offline)
	}
	if _, err := b.m.CheckNow(context.Background()); err == nil {
		t.Fatal("check-in succeeded while offline")
	}
	b.clock.Set(b.clock.Now().Add(-30 * day))
	b.restart(e)
	if st := b.m.State(); st.Mode != license.ModeDegraded {
		t.Fatalf("setting the clock back 30 more days restored service: %s", st.Mode)
	}
	e.offline.Store(false)
	if st := e.mustCheck(b); st.Mode != license.ModeWarning || !hasReason(st, license.ReasonClock) {
		t.Fatalf("good check-in with a wrong clock: mode %s reasons %+v", st.Mode, st.Reasons)
	}
}

// TestPowerOffCounts: time spent powered off counts as offline time (the
// signed server time of the last good check-in is a lower bound).
func TestPowerOffCounts(t *testing.T) {
	e := newEnv(t)
	b := e.newBox()
	e.mustCheck(b)
	e.offline.Store(true)
	e.advance(b, 16*day)
	b.restart(e)
	if st := b.m.State(); st.Mode != license.ModeDegraded {
		t.Fatalf("16 days powered off and offline: %s", st.Mode)
	}
}

// TestBadResponses: every bad answer is a failure and changes nothing.
func TestBadResponses(t *testing.T) {
	var replay []byte
	tests := []struct {
		name    string
		rewrite func(e *env, body []byte) []byte
		want    error
	}{
		{"tampered payload", func(e *env, body []byte) []byte {
			var env license.Envelope
			json.Unmarshal(body, &env)
			p := []byte(env.P)
			if !bytes.Contains(p, []byte(`"max_ext":50`)) {
				e.t.Fatalf("payload %s has no max_ext to tamper with", p)
			}
			env.P = bytes.Replace(p, []byte(`"max_ext":50`), []byte(`"max_ext":99`), 1)
			out, _ := json.Marshal(env)
			return out
		}, license.ErrBadSignature},
		{"tampered signature", func(_ *env, body []byte) []byte {
			var env license.Envelope
			json.Unmarshal(body, &env)
			s, _ := base64.StdEncoding.DecodeString(env.Sig)
			s[7] ^= 1
			env.Sig = base64.StdEncoding.EncodeToString(s)
			out, _ := json.Marshal(env)
			return out
		}, license.ErrBadSignature},
		{"unsigned", func(_ *env, body []byte) []byte {
			var env license.Envelope
			json.Unmarshal(body, &env)
			env.Sig = ""
			out, _ := json.Marshal(env)
			return out
		}, license.ErrBadSignature},
		{"signed by another key", func(e *env, body []byte) []byte {
			var env license.Envelope
			json.Unmarshal(body, &env)
			var r license.Response
			json.Unmarshal(env.P, &r)
			_, other := newKey(e.t)
			out, _ := license.SignResponse(other, &r)
			return out
		}, license.ErrBadSignature},
		{"replayed old response", func(_ *env, body []byte) []byte { return replay }, license.ErrReplay},
		{"oversize", func(_ *env, body []byte) []byte {
			return append(body, bytes.Repeat([]byte(" "), license.MaxResponseBytes)...)
		}, license.ErrOversize},
		{"malformed", func(_ *env, body []byte) []byte { return body[:len(body)/2] }, license.ErrMalformed},
		{"another box's answer", func(e *env, body []byte) []byte {
			var env license.Envelope
			json.Unmarshal(body, &env)
			var r license.Response
			json.Unmarshal(env.P, &r)
			r.Serial = "EPX-9999"
			out, _ := license.SignResponse(e.priv, &r)
			return out
		}, license.ErrWrongBox},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			b := e.newBox()
			// Capture a genuine answer to replay later.
			e.setRewrite(func(body []byte) []byte { replay = bytes.Clone(body); return body })
			e.mustCheck(b)
			e.setRewrite(nil)
			e.advance(b, 10*day)
			before := b.m.State()
			e.setRewrite(func(body []byte) []byte { return tt.rewrite(e, body) })
			_, err := b.m.CheckNow(context.Background())
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			after := b.m.State()
			if after.DaysOffline != before.DaysOffline || !after.LastGood.Equal(before.LastGood) ||
				after.Mode != before.Mode || len(after.Reasons) != len(before.Reasons) {
				t.Fatalf("bad answer changed state: before %+v after %+v", before, after)
			}
			b.restart(e) // and nothing bad was persisted
			if st := b.m.State(); st.DaysOffline != 10 || hasReason(st, license.ReasonClone) {
				t.Fatalf("after restart: %+v", st)
			}
		})
	}
}

// TestClone: the same licence from a second hardware fingerprint is flagged;
// both boxes degrade with the reason; unflagging restores the bound box.
func TestClone(t *testing.T) {
	e := newEnv(t)
	a := e.newBox()
	if st := e.mustCheck(a); st.Mode != license.ModeFull {
		t.Fatalf("box a: %s", st.Mode)
	}
	c := e.newBox(withFingerprint(license.Fingerprint("dmi-uuid-2", "board-sn-2")), withSerial("EPX-0002"))
	st := e.mustCheck(c)
	if st.Mode != license.ModeDegraded || !hasReason(st, license.ReasonClone) || !strings.Contains(st.Banner, "clone") {
		t.Fatalf("clone not flagged: %+v", st)
	}
	checkGates(t, c.m, true)
	if st := e.mustCheck(a); !hasReason(st, license.ReasonClone) {
		t.Fatalf("original box not told about the clone: %+v", st)
	}
	// The vendor clears the flag through the admin API; the next box to
	// check in is bound again.
	req, _ := http.NewRequest(http.MethodPost, e.ts.URL+"/admin/licences/LIC-1/unflag", nil)
	req.Header.Set("Authorization", "Bearer "+e.token)
	resp, err := e.ts.Client().Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("unflag: %v %v", err, resp)
	}
	resp.Body.Close()
	if st := e.mustCheck(a); st.Mode != license.ModeFull {
		t.Fatalf("after unflag: %+v", st)
	}
	req, _ = http.NewRequest(http.MethodPost, e.ts.URL+"/admin/licences/LIC-1/unflag", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err = e.ts.Client().Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin API with a wrong token: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestAdvisory: an advisory for this firmware disables the named feature
// until the box runs a fixed version.
func TestAdvisory(t *testing.T) {
	e := newEnv(t)
	err := e.srv.PutAdvisory(phonehome.Advisory{Firmware: []string{"1.0.0"}, Advisory: license.Advisory{
		ID: "EPX-2026-01", Severity: "high", Message: "WebRTC gateway crash", Disable: []string{"webrtc"}, FixedIn: "1.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	b := e.newBox()
	st := e.mustCheck(b)
	if b.m.FeatureEnabled("webrtc") || !b.m.FeatureEnabled("sip-tls") {
		t.Fatalf("webrtc=%v sip-tls=%v", b.m.FeatureEnabled("webrtc"), b.m.FeatureEnabled("sip-tls"))
	}
	if st.Mode != license.ModeWarning || !hasReason(st, license.ReasonAdvisory) {
		t.Fatalf("advisory: %+v", st)
	}
	checkGates(t, b.m, false)
	b.cfg.Identity.Firmware = "1.0.1" // updated
	b.restart(e)
	if st := e.mustCheck(b); st.Mode != license.ModeFull || !b.m.FeatureEnabled("webrtc") {
		t.Fatalf("after update: %+v", st)
	}
}

// TestProxy: the check-in goes through an HTTP CONNECT proxy with credentials.
func TestProxy(t *testing.T) {
	e := newEnv(t)
	p := newConnectProxy(t, "box", "s3cret")
	tests := []struct {
		name    string
		user    *url.Userinfo
		wantErr bool
	}{
		{"right credentials", url.UserPassword("box", "s3cret"), false},
		{"wrong credentials", url.UserPassword("box", "nope"), true},
		{"no credentials", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := e.newBox(func(c *license.Config) {
				c.Proxy = &url.URL{Scheme: "http", Host: p.ln.Addr().String(), User: tt.user}
			})
			c0, r0 := p.connects.Load(), p.refused.Load()
			st, err := b.m.CheckNow(context.Background())
			if tt.wantErr {
				if err == nil || p.refused.Load() != r0+1 {
					t.Fatalf("err %v refused %d", err, p.refused.Load()-r0)
				}
				return
			}
			if err != nil || st.Mode != license.ModeFull || p.connects.Load() != c0+1 {
				t.Fatalf("err %v mode %s connects %d", err, st.Mode, p.connects.Load()-c0)
			}
		})
	}
}

// TestLicenceStatus: unknown, revoked and expired licences degrade.
func TestLicenceStatus(t *testing.T) {
	e := newEnv(t)
	b := e.newBox(func(c *license.Config) { c.Identity.LicenceID = "LIC-NONE" })
	if st := e.mustCheck(b); st.Mode != license.ModeDegraded || !hasReason(st, license.ReasonLicence) {
		t.Fatalf("unknown licence: %+v", st)
	}
	ok := e.newBox()
	e.mustCheck(ok)
	e.advance(ok, 366*day)
	if st := e.mustCheck(ok); st.Mode != license.ModeDegraded || st.LicenceStatus != license.StatusExpired {
		t.Fatalf("expired licence: %+v", st)
	}
}

// TestCertificateWarning: the daily check warns before the certificate in
// use expires, without limiting service.
func TestCertificateWarning(t *testing.T) {
	e := newEnv(t)
	notAfter := start.Add(60 * day)
	b := e.newBox(func(c *license.Config) { c.CertNotAfter = func() time.Time { return notAfter } })
	if st := e.mustCheck(b); st.Mode != license.ModeFull {
		t.Fatalf("60 days left: %+v", st)
	}
	e.advance(b, 40*day)
	st := e.mustCheck(b)
	if st.Mode != license.ModeWarning || !hasReason(st, license.ReasonCertificate) {
		t.Fatalf("20 days left: %+v", st)
	}
	checkGates(t, b.m, false)
	if got := mustCheckins(t, e); len(got) != 2 {
		t.Fatalf("%d check-ins", len(got))
	}
}

// TestSchedule: a fixed hour/weekday, and a random time that survives restarts.
func TestSchedule(t *testing.T) {
	e := newEnv(t)
	fixed := e.newBox(func(c *license.Config) {
		c.Schedule = license.Schedule{Fixed: true, Hour: 3, Minute: 30, Weekday: int(time.Saturday)}
	})
	st := e.mustCheck(fixed) // start is Monday 2026-03-02 09:00 UTC
	if want := time.Date(2026, 3, 7, 3, 30, 0, 0, time.UTC); !st.NextCheck.Equal(want) {
		t.Fatalf("fixed schedule: next %s, want %s", st.NextCheck, want)
	}
	r := e.newBox()
	st = e.mustCheck(r)
	if d := st.NextCheck.Sub(r.clock.Now()); d <= 0 || d > day {
		t.Fatalf("random schedule: next check in %s", d)
	}
	r.restart(e)
	e.advance(r, day)
	st2 := e.mustCheck(r)
	if !st2.NextCheck.Equal(st.NextCheck.Add(day)) && !st2.NextCheck.Equal(st.NextCheck.Add(2*day)) {
		t.Fatalf("random time of day not kept across restart: %s then %s", st.NextCheck, st2.NextCheck)
	}
	if _, err := license.New(license.Config{ServerURL: "http://plain.example", DB: r.db}); err == nil {
		t.Fatal("plain http server URL accepted")
	}
}

// TestRequestSize prints the bytes per daily check-in: the JSON body the
// server received and everything on the wire (TCP payload incl. TLS).
func TestRequestSize(t *testing.T) {
	e := newEnv(t)
	var d countingDial
	var head atomic.Uint64
	head.Store(math.MaxUint64 - 1)
	b := e.newBox(func(c *license.Config) {
		c.DialContext = d.dial
		c.RestoredFrom = func() string { return strings.Repeat("S", 64) } // the longest serial
		// The longest anchors there are: 20-digit sequence numbers; the
		// head moves between the two check-ins, so the second re-sends the
		// first one's (AuditPrev).
		c.AuditHead = func() (license.Anchor, error) {
			return license.Anchor{Seq: head.Load(), Hash: [license.AnchorHashBytes]byte{0: 0xff, 15: 0xff}}, nil
		}
		c.AuditAt = func(seq uint64) (license.Anchor, bool, error) {
			return license.Anchor{Seq: seq, Hash: [license.AnchorHashBytes]byte{0: 0xff, 15: 0xff}}, true, nil
		}
		c.Health = func() (license.Load, license.Counts) {
			return license.Load{CPUPercent: 100, MemPercent: 100, CPUs: 128, MemMB: 1 << 20},
				license.Counts{Extensions: 1 << 30, Trunks: 1 << 30, CallsDay: 1 << 30, PeakCalls: 1 << 30}
		}
	})
	e.mustCheck(b)
	c := mustCheckins(t, e)
	body := c[len(c)-1].Bytes
	if body > license.MaxRequestBytes || body == 0 {
		t.Fatalf("request body %d bytes, limit %d", body, license.MaxRequestBytes)
	}
	t.Logf("first check-in: request body %d bytes; on the wire: %d bytes sent, %d received (TLS handshake included)",
		body, d.out.Load(), d.in.Load())

	head.Store(math.MaxUint64)
	out, in := d.out.Load(), d.in.Load()
	e.advance(b, day)
	e.mustCheck(b)
	c = mustCheckins(t, e)
	body = c[len(c)-1].Bytes
	if body > license.MaxRequestBytes || body == 0 {
		t.Fatalf("request body %d bytes, limit %d", body, license.MaxRequestBytes)
	}
	t.Logf("next day (resumed, with audit_prev): request body %d bytes; on the wire: %d bytes sent, %d received",
		body, d.out.Load()-out, d.in.Load()-in)
}

// BenchmarkCheckIn measures a check-in's bytes on the wire (TLS records,
// both ways) and CPU time, against a real licensed on loopback with its
// development certificate. daily: the next day in the same process, TLS
// resumed; after-restart: the first check-in after edgepbxd restarts
// (session from the store); new-box: a box's very first check-in, a full
// handshake with the server's certificate.
func BenchmarkCheckIn(b *testing.B) {
	for _, bc := range []struct {
		name  string
		setup func(e *env, bx *box) // before each timed check-in
	}{
		{"daily", func(e *env, bx *box) {}},
		{"after-restart", func(e *env, bx *box) { bx.restart(e) }},
		{"new-box", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newEnv(b)
			var d countingDial
			bx := e.newBox(func(c *license.Config) { c.DialContext = d.dial })
			ctx := context.Background()
			if bc.setup != nil {
				e.mustCheck(bx) // yesterday's check-in
			}
			var cpu time.Duration
			var wire int64
			for b.Loop() {
				b.StopTimer()
				if bc.setup != nil {
					bc.setup(e, bx)
				} else {
					bx = e.newBox(func(c *license.Config) { c.DialContext = d.dial })
				}
				in0, out0 := d.in.Load(), d.out.Load()
				var r0, r1 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
				b.StartTimer()
				if _, err := bx.m.CheckNow(ctx); err != nil {
					b.Fatal(err)
				}
				syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
				cpu += time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
				wire += d.in.Load() - in0 + d.out.Load() - out0
			}
			// Box and server run in this process: this is CPU for both ends.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
			b.ReportMetric(float64(wire)/float64(b.N), "wire-bytes/op")
		})
	}
}

// TestCheckinRestoredFrom: a box whose data came from another box's backup
// says so in its check-in, and the vendor's server records it with the
// check-in; a box that restored nothing (or its own backup) sends nothing.
func TestCheckinRestoredFrom(t *testing.T) {
	e := newEnv(t)
	var from atomic.Value
	from.Store("")
	b := e.newBox(func(c *license.Config) { c.RestoredFrom = func() string { return from.Load().(string) } })
	e.mustCheck(b)
	from.Store("OLDBOX1")
	e.advance(b, day)
	e.mustCheck(b)
	c := mustCheckins(t, e)
	if len(c) != 2 || c[0].RestoredFrom != "" || c[1].RestoredFrom != "OLDBOX1" {
		t.Fatalf("recorded check-ins: %+v", c)
	}
}

// TestRequestRestoredFrom: the check-in names the box a backup was
// restored from; the field is bounded like the other identifiers.
func TestRequestRestoredFrom(t *testing.T) {
	for _, tc := range []struct {
		from string
		ok   bool
	}{{"", true}, {"DEV1A2B3C4D", true}, {strings.Repeat("S", 64), true}, {strings.Repeat("S", 65), false},
		{"box 2", false}, {"box\n2", false}} {
		r := license.Request{V: license.ProtocolVersion, Nonce: strings.Repeat("ab", license.NonceBytes), Serial: "S1",
			InstallID: "i1", Fingerprint: strings.Repeat("cd", 32), Firmware: "1.0", LicenceID: "L1", RestoredFrom: tc.from}
		if err := r.Validate(); (err == nil) != tc.ok {
			t.Errorf("restored_from %q: %v", tc.from, err)
		}
	}
}
