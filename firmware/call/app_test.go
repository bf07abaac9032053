package call

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
)

// listenApp is an application that hears the caller until '#': it keeps
// the keys and the audio's energy, and plays a tone meanwhile.
type listenApp struct {
	mu      sync.Mutex
	keys    []string // key/via
	frames  int
	loud    int // frames with speech-like energy
	rate    int
	caller  Caller
	started chan struct{}
	extra   time.Duration // more tone after the first second
}

func (a *listenApp) Run(ctx context.Context, leg Leg) error {
	a.mu.Lock()
	a.rate, a.caller = leg.Rate(), leg.Caller()
	a.mu.Unlock()
	close(a.started)
	tone := make([]int16, leg.Rate()) // 1 s of 440 Hz back to the caller
	for i := range tone {
		tone[i] = int16(6000 * math.Sin(2*math.Pi*440*float64(i)/float64(leg.Rate())))
	}
	go func() {
		_ = leg.Play(ctx, tone)
		for d := a.extra; d > 0 && ctx.Err() == nil; d -= time.Second {
			_ = leg.Play(ctx, tone)
		}
	}()
	for {
		select {
		case f := <-leg.Frames():
			var e float64
			for _, v := range f {
				e += float64(v) * float64(v)
			}
			a.mu.Lock()
			a.frames++
			if math.Sqrt(e/float64(len(f))) > 300 {
				a.loud++
			}
			a.mu.Unlock()
		case d := <-leg.DTMF():
			a.mu.Lock()
			a.keys = append(a.keys, string(d.Key)+"/"+d.Via)
			a.mu.Unlock()
			if d.Key == '#' {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

type testApps struct {
	mu     sync.Mutex
	opened []string
	app    *listenApp
}

func (t *testApps) Open(app, arg string, c Caller) (App, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.opened = append(t.opened, app+"/"+arg+"/"+c.Reason)
	if app == dialplan.AppVoicemail && arg != "102" {
		return nil, fmt.Errorf("%w: %s", ErrNoApp, arg)
	}
	return t.app, nil
}

// TestSippApplication: sipp calls *97; the box answers itself, the
// application hears the caller's G.711 speech decoded, a SIP INFO key and
// RFC 4733 keys (sipp's pcaps), and hangs up on '#': BYE from the box, CDR
// of an application call, every pinhole closed.
func TestSippApplication(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{})}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = apps })
	sippUAC(t, "uac_app.xml", "*97", h.addr, 1, 1, 1)
	e := waitEnded(t, h)
	if e.rec.Result != cdr.Answered || e.rec.Direction != string(dialplan.KindApp) || e.rec.To != "voicemail-access/101" ||
		e.rec.Cause != "application ended" || !strings.HasPrefix(e.rec.Codec, "PCMA") {
		t.Fatalf("CDR %+v", e.rec)
	}
	a := apps.app
	a.mu.Lock()
	defer a.mu.Unlock()
	if got := strings.Join(a.keys, " "); got != "5/info 1/rfc4733 #/rfc4733" {
		t.Errorf("keys %q, want 5/info 1/rfc4733 #/rfc4733", got)
	}
	if a.rate != 8000 || a.caller.Extension != "101" || !a.caller.Source.IsLoopback() {
		t.Errorf("leg rate %d caller %+v", a.rate, a.caller)
	}
	// g711a.pcap is 7 s of speech: most of its 350 frames must come
	// through decoded, and many must carry speech energy.
	if a.frames < 250 || a.loud < 100 {
		t.Errorf("%d frames heard, %d with speech energy", a.frames, a.loud)
	}
	if st := e.st.Legs[media.A]; st.Sent < 40 {
		t.Errorf("the application's tone did not reach the caller: %+v", st)
	}
	h.noStateLeft(t, true)
}

// TestSippUnregisteredToVoicemail: a callee without a phone but with a
// mailbox gets the caller in its voicemail.
func TestSippUnregisteredToVoicemail(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{})}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = apps })
	sippUAC(t, "uac_app.xml", "102", h.addr, 1, 1, 1)
	e := waitEnded(t, h)
	if e.rec.Direction != string(dialplan.KindApp) || e.rec.To != "voicemail/102" || e.rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", e.rec)
	}
	apps.mu.Lock()
	opened := strings.Join(apps.opened, " ")
	apps.mu.Unlock()
	if !strings.Contains(opened, "voicemail/102/unavailable") {
		t.Fatalf("opened %q", opened)
	}
	h.noStateLeft(t, true)
}

// TestSippApplicationNoWayOut: toll fraud through the box's own
// applications. A caller inside an application asks to be transferred to
// an external number (REFER: 403) and types the number (the keys reach the
// application only): nothing is ever sent to the trunk, the only call is
// the application's.
func TestSippApplicationNoWayOut(t *testing.T) {
	apps := &testApps{app: &listenApp{started: make(chan struct{})}}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = apps })
	trunk, trunkDone := sippUASRun(t, "", "-m", "1")
	h.dir.setTrunk("itsp", trunk)
	sippUAC(t, "uac_app_escape.xml", "*97", h.addr, 1, 1, 1)
	e := waitEnded(t, h)
	if e.rec.Direction != string(dialplan.KindApp) || e.rec.Trunk != "" {
		t.Fatalf("CDR %+v", e.rec)
	}
	a := apps.app
	a.mu.Lock()
	got := strings.Join(a.keys, "")
	a.mu.Unlock()
	if got != "0/info0/info4/info9/info3/info0/info1/info2/info3/info4/info5/info6/info#/info" {
		t.Errorf("keys %q", got)
	}
	select {
	case err := <-trunkDone:
		t.Fatalf("the trunk got a call: %v", err)
	default:
	}
	recs, err := h.cdrs.Range(e.rec.Start.Add(-1), e.rec.End.Add(1), 0)
	if err != nil || len(recs) != 1 {
		t.Fatalf("CDRs %+v %v: want only the application call", recs, err)
	}
	if n := h.b.Counters().Transfers; n != 0 {
		t.Fatalf("%d transfers", n)
	}
	h.noStateLeft(t, true)
}
