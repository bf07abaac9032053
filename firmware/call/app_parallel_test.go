package call

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// connectResult is what one ConnectAll of connectApp returned.
type connectResult struct {
	i   int
	err error
}

// connectApp rings its rounds one after the other through
// ParallelConnector (the caller staying in the application between
// them) and waits for the caller's end when none was handed over.
type connectApp struct {
	rounds  [][]RingDest
	results chan connectResult
}

func (a *connectApp) Run(ctx context.Context, leg Leg) error {
	pc, ok := leg.(ParallelConnector)
	if !ok {
		return errors.New("the leg is no ParallelConnector")
	}
	for _, ds := range a.rounds {
		i, err := pc.ConnectAll(ctx, ds)
		a.results <- connectResult{i, err}
		if errors.Is(err, ErrHandedOver) {
			return err
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

type connectApps struct{ app *connectApp }

func (c connectApps) Open(string, string, Caller) (App, error) { return c.app, nil }

// callee is how a test phone answers an INVITE of the hand-over.
type callee int

const (
	rings         callee = iota // 180, then waits for a CANCEL
	answers                     // 180, then 200 once every phone has its INVITE
	busy                        // 486
	answersLate                 // no provisional; 200 once another phone answered
	answersSecond               // 200 at once (the second round)
)

func ringDests(ring time.Duration, exts ...string) []RingDest {
	var ds []RingDest
	for _, e := range exts {
		ds = append(ds, RingDest{Dest: Dest{Extension: e}, Ring: ring})
	}
	return ds
}

// TestConnectAll: an application rings three extensions at once through
// ParallelConnector with real sipgo phones: the first to answer is
// bridged (the caller's BYE reaches it, the CDR names it), every ringing
// loser gets a CANCEL, a loser's 2xx after the winner's is ACKed and hung
// up, all busy leaves the caller in the application (which then rings
// another phone), the caller hanging up while all ring CANCELs every
// branch, an extension without a phone is unreachable; no call, dialog
// or pinhole is left at the end.
func TestConnectAll(t *testing.T) {
	const ring = 20 * time.Second
	tests := []struct {
		name    string
		phones  map[string]callee // 102..104 by default
		rounds  [][]RingDest
		want    []connectResult
		cancels []string // phones that must see a CANCEL
		byes    []string // phones that must get a BYE from the box (late 2xx)
		hangup  bool     // the caller hangs up once every phone has its INVITE
		bridged string   // the phone the call ends up with ("": none)
	}{
		{name: "one answers", phones: map[string]callee{"102": rings, "103": answers, "104": rings},
			rounds: [][]RingDest{ringDests(ring, "102", "103", "104")}, want: []connectResult{{1, ErrHandedOver}},
			cancels: []string{"102", "104"}, bridged: "103"},
		{name: "late 2xx of a loser", phones: map[string]callee{"102": answers, "103": answersLate},
			rounds: [][]RingDest{ringDests(ring, "102", "103")}, want: []connectResult{{0, ErrHandedOver}},
			byes: []string{"103"}, bridged: "102"},
		{name: "all busy then another", phones: map[string]callee{"102": busy, "103": busy, "104": busy, "105": answersSecond},
			rounds: [][]RingDest{ringDests(ring, "102", "103", "104"), ringDests(ring, "105")},
			want:   []connectResult{{-1, ErrNotConnected}, {0, ErrHandedOver}}, bridged: "105"},
		{name: "ring time", phones: map[string]callee{"102": rings, "103": rings, "104": answersSecond},
			rounds: [][]RingDest{ringDests(time.Second, "102", "103"), ringDests(ring, "104")},
			want:   []connectResult{{-1, ErrNotConnected}, {0, ErrHandedOver}}, cancels: []string{"102", "103"}, bridged: "104"},
		{name: "caller hangs up", phones: map[string]callee{"102": rings, "103": rings, "104": rings},
			rounds: [][]RingDest{ringDests(ring, "102", "103", "104")}, want: []connectResult{{-1, ErrNotConnected}},
			cancels: []string{"102", "103", "104"}, hangup: true},
		{name: "unreachable", phones: map[string]callee{"105": answersSecond},
			rounds: [][]RingDest{ringDests(ring, "102", "103"), ringDests(ring, "105")},
			want:   []connectResult{{-1, ErrUnreachable}, {0, ErrHandedOver}}, bridged: "105"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			app := &connectApp{rounds: tc.rounds, results: make(chan connectResult, len(tc.rounds))}
			h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = connectApps{app} })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// invited closes once every phone of the first round has its
			// INVITE; answered once the winner sent its 2xx.
			var invitedOnce, answeredOnce sync.Once
			invited, answered, roundOne := make(chan struct{}), make(chan struct{}), make(chan struct{})
			var mu sync.Mutex
			got := map[string]bool{}
			first := 0
			for _, d := range tc.rounds[0] {
				if _, ok := tc.phones[d.Extension]; ok {
					first++
				}
			}
			cancelled := map[string]chan struct{}{}
			phones := map[string]*phone{}
			for ext, how := range tc.phones {
				p := newPhone(t, ext)
				phones[ext] = p
				h.dir.setContacts(ext, p.addr)
				cancelled[ext] = make(chan struct{}, 1)
				cc := cancelled[ext]
				p.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
					tx.OnCancel(func(*sip.Request) { cc <- struct{}{} })
					mu.Lock()
					got[ext] = true
					if len(got) == first {
						invitedOnce.Do(func() { close(invited) })
					}
					mu.Unlock()
					ok200 := func() {
						_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
					}
					switch how {
					case rings:
						_ = d.Respond(180, "Ringing", nil)
						<-tx.Done()
					case answers:
						_ = d.Respond(180, "Ringing", nil)
						select {
						case <-invited:
						case <-ctx.Done():
						}
						ok200()
						answeredOnce.Do(func() { close(answered) })
					case busy:
						_ = d.Respond(486, "Busy Here", nil)
					case answersLate:
						select {
						case <-answered:
						case <-ctx.Done():
						}
						select { // after the box took the winner's answer
						case <-roundOne:
						case <-ctx.Done():
						}
						ok200()
					case answersSecond:
						ok200()
					}
				})
			}
			caller := newPhone(t, "101")
			dlg, err := caller.dial(ctx, h, "*97")
			if err != nil {
				t.Fatal(err)
			}
			if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := dlg.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.hangup {
				select {
				case <-invited:
				case <-ctx.Done():
					t.Fatal("the phones were not all rung")
				}
				if err := dlg.Bye(ctx); err != nil {
					t.Fatal(err)
				}
			}
			for i, w := range tc.want {
				select {
				case r := <-app.results:
					if r.i != w.i || !errors.Is(r.err, w.err) {
						t.Fatalf("round %d: ConnectAll %d, %v; want %d, %v", i, r.i, r.err, w.i, w.err)
					}
				case <-ctx.Done():
					t.Fatalf("round %d: ConnectAll did not return", i)
				}
				if i == 0 {
					close(roundOne)
				}
			}
			for _, ext := range tc.cancels {
				select {
				case <-cancelled[ext]:
				case <-ctx.Done():
					t.Fatalf("%s got no CANCEL", ext)
				}
			}
			for _, ext := range tc.byes {
				select {
				case <-phones[ext].byes:
				case <-ctx.Done():
					t.Fatalf("%s's late answer got no BYE", ext)
				}
			}
			for ext := range tc.phones {
				if ext != tc.bridged && !contains2(tc.cancels, ext) && len(cancelled[ext]) > 0 {
					t.Errorf("%s got a CANCEL it should not", ext)
				}
			}
			if tc.bridged != "" {
				if err := dlg.Bye(ctx); err != nil {
					t.Fatal(err)
				}
				select {
				case <-phones[tc.bridged].byes:
				case <-ctx.Done():
					t.Fatalf("the caller's BYE did not reach %s", tc.bridged)
				}
			}
			e := waitEnded(t, h)
			if tc.bridged != "" && (e.rec.Result != cdr.Answered || e.rec.To != tc.bridged) {
				t.Fatalf("CDR %+v, want answered by %s", e.rec, tc.bridged)
			}
			// The losers end in the background: wait for their dialogs.
			deadline := time.Now().Add(40 * time.Second)
			for h.b.Active()+h.b.dialogCount() != 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			h.noStateLeft(t, true)
		})
	}
}

func contains2(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// ringAllApp hands every caller over to its destinations at once.
type ringAllApp struct{ ds []RingDest }

func (a ringAllApp) Run(ctx context.Context, leg Leg) error {
	_, err := leg.(ParallelConnector).ConnectAll(ctx, a.ds)
	return err
}

type ringAllApps struct{ app ringAllApp }

func (r ringAllApps) Open(string, string, Caller) (App, error) { return r.app, nil }

// BenchmarkConnectAll10 measures complete calls per second through an
// application that hands each caller over to 10 phones at once (a
// ring-all queue offer of 10 agents from the waiting application): the
// caller's INVITE answered by the application, 10 INVITEs, the first
// phone's 200 bridged, 9 CANCELs, the caller's BYE. Three sipgo callers
// dial in parallel; the 10 callees are sipgo phones (one answers at once,
// the others ring until CANCELled), all in the benchmark's process.
func BenchmarkConnectAll10(b *testing.B) {
	var exts []string
	for i := 201; i <= 210; i++ {
		exts = append(exts, fmt.Sprint(i))
	}
	h := startHarness(b, func(c *Config, _ *dialplan.Plan) {
		c.Apps = ringAllApps{ringAllApp{ringDests(30*time.Second, exts...)}}
	})
	// bridged tells each caller (by its extension, the From of the box's
	// INVITEs) that its call reached 201.
	callers := []string{"101", "102", "103"}
	bridged := map[string]chan struct{}{}
	for _, c := range callers {
		bridged[c] = make(chan struct{}, 1)
	}
	for i, ext := range exts {
		p := newPhone(b, ext)
		h.dir.setContacts(ext, p.addr)
		answer := i == 0
		p.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
			if answer {
				_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
				if ch, ok := bridged[req.From().Address.User]; ok {
					ch <- struct{}{}
				}
				return
			}
			cancelled := make(chan struct{})
			var once sync.Once
			tx.OnCancel(func(*sip.Request) { once.Do(func() { close(cancelled) }) })
			_ = d.Respond(180, "Ringing", nil)
			select {
			case <-cancelled:
			case <-tx.Done():
			}
		})
		go func() { // the box's BYEs
			for range p.byes {
			}
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	b.ResetTimer()
	start := time.Now()
	errs := make(chan error, len(callers))
	for k, user := range callers {
		c := newPhone(b, user)
		go func() {
			for i := k; i < b.N; i += len(callers) {
				d, err := c.dialAs(ctx, h, user, "*97", 6000)
				if err == nil {
					err = d.WaitAnswer(ctx, sipgo.AnswerOptions{})
				}
				if err == nil {
					err = d.Ack(ctx)
				}
				if err == nil {
					select {
					case <-bridged[user]:
					case <-ctx.Done():
						err = ctx.Err()
					}
				}
				// 201's 200 is out: the switch follows within moments.
				for err == nil && !h.b.handedOver(user) {
					time.Sleep(100 * time.Microsecond)
				}
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
	for range len(callers) {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
	for len(h.ended) < b.N && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	answered, last := 0, cdr.Record{}
	for range b.N {
		e := <-h.ended
		last = e.rec
		if e.rec.Result == cdr.Answered && e.rec.To == "201" {
			answered++
		}
	}
	if answered != b.N {
		b.Fatalf("%d of %d calls bridged to 201 (last %+v)", answered, b.N, last)
	}
}

// handedOver reports whether extension from has a call that left its
// application for a callee.
func (b *B2BUA) handedOver(from string) bool {
	b.mu.Lock()
	var cs []*call
	for c := range b.calls {
		cs = append(cs, c)
	}
	b.mu.Unlock()
	for _, c := range cs {
		c.mu.Lock()
		ok := c.rec.From == from && c.callee.Extension != "" && c.app == nil && c.state == stConfirmed
		c.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// routeApp routes number as extension from (class of service, limits:
// the dial plan's lease) and rings the trunk it chose together with
// extension 102.
type routeApp struct {
	plan    *dialplan.Engine
	from    string
	number  string
	results chan connectResult
}

func (a *routeApp) Run(ctx context.Context, leg Leg) error {
	d, lease, err := a.plan.RouteOutbound(a.from, a.number)
	if err != nil || d.Kind != dialplan.KindOutbound {
		a.results <- connectResult{-1, fmt.Errorf("route: %v %v", d.Kind, err)}
		return err
	}
	i, err := leg.(ParallelConnector).ConnectAll(ctx, []RingDest{
		{Dest: Dest{Extension: "102"}, Ring: 20 * time.Second},
		{Dest: Dest{Trunk: d.Trunk, Number: d.Target, Lease: lease}, Ring: 20 * time.Second}})
	a.results <- connectResult{i, err}
	return err
}

type routeApps struct{ app *routeApp }

func (r routeApps) Open(string, string, Caller) (App, error) { return r.app, nil }

// TestConnectAllTrunkLease: a trunk destination of a parallel hand-over
// carries the lease its routing gave (the caller's class of service and
// the trunk's limits applied): the trunk answers, extension 102 ringing
// beside it is CANCELled, the trunk's slot is taken while the call lasts
// and given back at its end.
func TestConnectAllTrunkLease(t *testing.T) {
	app := &routeApp{from: "101", number: "030123456", results: make(chan connectResult, 1)}
	h := startHarness(t, func(c *Config, _ *dialplan.Plan) { c.Apps = routeApps{app} })
	app.plan = h.b.cfg.Plan.(appCodes).Engine
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ext, trunk := newPhone(t, "102"), newPhone(t, "itsp")
	h.dir.setContacts("102", ext.addr)
	h.dir.setTrunk("itsp", trunk.addr)
	ringing, cancelled := make(chan struct{}), make(chan struct{}, 1)
	ext.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		tx.OnCancel(func(*sip.Request) { cancelled <- struct{}{} })
		_ = d.Respond(180, "Ringing", nil)
		close(ringing)
		<-tx.Done()
	})
	trunk.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		if req.Recipient.User != "030123456" && req.Recipient.User != "+4930123456" {
			_ = d.Respond(404, "Not Found", nil)
			return
		}
		select { // answers once 102 rings beside it
		case <-ringing:
		case <-ctx.Done():
		}
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	caller := newPhone(t, "101")
	dlg, err := caller.dial(ctx, h, "*97")
	if err != nil {
		t.Fatal(err)
	}
	if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dlg.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-app.results:
		if r.i != 1 || !errors.Is(r.err, ErrHandedOver) {
			t.Fatalf("ConnectAll %d, %v", r.i, r.err)
		}
	case <-ctx.Done():
		t.Fatal("ConnectAll did not return")
	}
	select {
	case <-cancelled:
	case <-ctx.Done():
		t.Fatal("102 got no CANCEL")
	}
	if _, n := app.plan.Active("", "itsp"); n != 1 {
		t.Fatalf("%d calls on the trunk while bridged, want its lease held", n)
	}
	if err := dlg.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	if e := waitEnded(t, h); e.rec.Result != cdr.Answered {
		t.Fatalf("CDR %+v", e.rec)
	}
	if _, n := app.plan.Active("", "itsp"); n != 0 {
		t.Fatalf("%d calls on the trunk after the end: lease not given back", n)
	}
	deadline := time.Now().Add(40 * time.Second)
	for h.b.Active()+h.b.dialogCount() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	h.noStateLeft(t, true)
}

// groupHunt is a ring group as the features' hunt gives it: a ring-all
// stage of 102 and 103 for ring, then 104 alone (an in-order member with
// its own ring time). It records the outcomes it was told.
type groupHunt struct {
	ring     time.Duration
	n        int
	outcomes chan Outcome
}

func (g *groupHunt) Next(o Outcome) (Stage, bool) {
	g.n++
	g.outcomes <- o
	switch g.n {
	case 1:
		return Stage{Dests: []Dest{{Extension: "102"}, {Extension: "103"}}, Ring: g.ring}, true
	case 2:
		return Stage{Dests: []Dest{{Extension: "104"}}, Ring: 20 * time.Second}, true
	}
	return Stage{}, false
}

type groupHunter struct{ h *groupHunt }

func (g groupHunter) Hunt(string, dialplan.Decision) Hunt { return g.h }

// connectGroupApp hands the caller over to group 600 through Connector.
type connectGroupApp struct{ results chan connectResult }

func (a connectGroupApp) Run(ctx context.Context, leg Leg) error {
	err := leg.(Connector).Connect(ctx, dialplan.Decision{Kind: dialplan.KindInternal, Class: dialplan.Internal, Target: "600", Dialled: "600"},
		nil, 30*time.Second)
	a.results <- connectResult{-1, err}
	return err
}

type connectGroupApps struct{ app connectGroupApp }

func (c connectGroupApps) Open(string, string, Caller) (App, error) { return c.app, nil }

// TestConnectGroupStages: an application's Connect to a ring group rings
// a ring-all stage's members at once (both CANCELled at the stage's ring
// time, or both busy), then the next stage's member, which answers; the
// hunt hears how the first stage ended (no answer, or busy).
func TestConnectGroupStages(t *testing.T) {
	tests := []struct {
		name string
		busy bool
		want Outcome
	}{
		{"no answer", false, Outcome{TimedOut: true, Code: 408}},
		{"busy", true, Outcome{Code: 486}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gh := &groupHunt{ring: time.Second, outcomes: make(chan Outcome, 4)}
			app := connectGroupApp{results: make(chan connectResult, 1)}
			h := startHarness(t, func(c *Config, _ *dialplan.Plan) {
				c.Apps = connectGroupApps{app}
				c.Hunter = groupHunter{gh}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cancels := make(chan string, 4)
			var mu sync.Mutex
			invited := map[string]bool{}
			both := make(chan struct{})
			for _, ext := range []string{"102", "103", "104"} {
				p := newPhone(t, ext)
				h.dir.setContacts(ext, p.addr)
				p.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
					if ext == "104" {
						_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
						return
					}
					mu.Lock()
					invited[ext] = true
					if len(invited) == 2 {
						close(both)
					}
					mu.Unlock()
					if tc.busy {
						select { // busy only once both were invited
						case <-both:
						case <-ctx.Done():
						}
						_ = d.Respond(486, "Busy Here", nil)
						return
					}
					tx.OnCancel(func(*sip.Request) { cancels <- ext })
					_ = d.Respond(180, "Ringing", nil)
					<-tx.Done()
				})
			}
			caller := newPhone(t, "101")
			dlg, err := caller.dial(ctx, h, "*97")
			if err != nil {
				t.Fatal(err)
			}
			if err := dlg.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
				t.Fatal(err)
			}
			if err := dlg.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case r := <-app.results:
				if !errors.Is(r.err, ErrHandedOver) {
					t.Fatalf("Connect: %v", r.err)
				}
			case <-ctx.Done():
				t.Fatal("Connect did not return")
			}
			if !tc.busy {
				got := map[string]bool{}
				for len(got) < 2 {
					select {
					case ext := <-cancels:
						got[ext] = true
					case <-ctx.Done():
						t.Fatalf("CANCELs: %v, want 102 and 103", got)
					}
				}
			}
			if o := <-gh.outcomes; !o.First {
				t.Fatalf("first outcome %+v", o)
			}
			if o := <-gh.outcomes; o != tc.want {
				t.Fatalf("the ring-all stage ended %+v, want %+v", o, tc.want)
			}
			if err := dlg.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			if e := waitEnded(t, h); e.rec.Result != cdr.Answered || e.rec.To != "104" {
				t.Fatalf("CDR %+v", e.rec)
			}
			deadline := time.Now().Add(40 * time.Second)
			for h.b.Active()+h.b.dialogCount() != 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			h.noStateLeft(t, true)
		})
	}
}
