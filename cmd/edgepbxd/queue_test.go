package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/queue"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
)

func (fb *featureBox) queues() map[string]queue.Stats {
	fb.t.Helper()
	var qs []queue.Stats
	if err := json.Unmarshal(fb.api.must(200, "GET", "/api/v1/queues", nil), &qs); err != nil {
		fb.t.Fatal(err)
	}
	out := map[string]queue.Stats{}
	for _, q := range qs {
		out[q.Number] = q
	}
	return out
}

func agentOf(q queue.Stats, ext string) queue.AgentStats {
	for _, a := range q.Agents {
		if a.Extension == ext {
			return a
		}
	}
	return queue.AgentStats{}
}

// waitQueue polls the queue statistics until ok holds (the box records
// a call's end just after its BYE is answered).
func (fb *featureBox) waitQueue(ctx context.Context, number string, ok func(queue.Stats) bool) queue.Stats {
	fb.t.Helper()
	for {
		q := fb.queues()[number]
		if ok(q) {
			return q
		}
		select {
		case <-ctx.Done():
			fb.t.Fatalf("queue %s: %+v", number, q)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// answeredBy waits for the INVITE at the phone that answers and says
// whose it was.
func (fb *featureBox) answeredBy(ctx context.Context) string {
	fb.t.Helper()
	for {
		for ext, ph := range fb.phones {
			select {
			case <-ph.Answered:
				return ext
			default:
			}
		}
		select {
		case <-ctx.Done():
			fb.t.Fatal("nobody answered")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestDevModeQueues runs the real binary with real sipgo phones against
// call queues: who rings for each strategy and in what order, the
// agent's ring time, the longest wait then the fallback, agents skipped
// in do-not-disturb, login and logout by feature code and API, wrap-up,
// a caller who hangs up while waiting, and the statistics.
func TestDevModeQueues(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx)
	// These queues keep their callers ringing (Ringback); the music on
	// hold of a waiting caller is TestDevModeQueueMusic's.
	fb.cfg.Features.Queues = []queue.Queue{
		{Number: "800", Strategy: queue.RingAll, Ring: 5, Ringback: true, Agents: []queue.Agent{{Extension: "201", Static: true}, {Extension: "202", Static: true}}},
		{Number: "802", Strategy: queue.LeastRecent, WrapUp: 8, Ringback: true, Agents: []queue.Agent{{Extension: "203", Static: true}}},
		{Number: "803", Strategy: queue.LeastRecent, MaxWait: 8, Fallback: "204", Ringback: true,
			Agents: []queue.Agent{{Extension: "201", Static: true, Ring: 5}, {Extension: "202", Static: true, Ring: 5}}},
		{Number: "804", Strategy: queue.FewestCalls, Ringback: true, Agents: []queue.Agent{{Extension: "202"}, {Extension: "203"}}},
	}
	fb.saveConfig()
	// A queue's number must not be an extension (field error, 422).
	bad := fb.cfg
	bad.Features.Queues = append([]queue.Queue{{Number: "201", Strategy: queue.RingAll, Agents: []queue.Agent{{Extension: "202"}}}}, fb.cfg.Features.Queues...)
	if body := fb.api.must(422, "PUT", "/api/v1/telephony", bad); !strings.Contains(string(body), "queue number 201") {
		t.Fatalf("queue on an extension's number: %s", body)
	}

	// Ring all: 201 (ringing) and 202 ring together, 202 answers.
	fb.phones["201"].Reply(siptest.Ring)
	if c := fb.dial(ctx, "100", "800", fb.phones["202"]); c != 200 {
		t.Fatalf("ring-all queue: %d", c)
	}
	fb.invited(ctx, "201")
	fb.invited(ctx, "202")
	fb.quiet("203")
	fb.drain()
	// 202 in do-not-disturb is skipped: only 201 rings; the caller gives
	// up after it rang (abandoned).
	fb.set("202", features.Settings{DND: true})
	ctx2, give := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { _, _, err := fb.phones["100"].Dial(ctx2, "127.0.0.1", fb.port, "800"); done <- err }()
	fb.invited(ctx, "201")
	give()
	<-done
	fb.quiet("202")
	fb.set("202", features.Settings{DND: false})
	q := fb.waitQueue(ctx, "800", func(q queue.Stats) bool { return q.Abandoned == 1 })
	if q.Offered != 2 || q.Answered != 1 || agentOf(q, "202").Answered != 1 || agentOf(q, "201").Missed != 1 || agentOf(q, "201").Offered != 2 {
		t.Fatalf("queue 800: %+v", q)
	}
	fb.drain()

	// Wrap-up: 203 is not offered the next call before 8 s after its
	// last one ended.
	fb.phones["201"].Reply(0)
	d, _, err := fb.phones["100"].Dial(ctx, "127.0.0.1", fb.port, "802")
	if err != nil {
		t.Fatal(err)
	}
	if fb.answeredBy(ctx) != "203" {
		t.Fatal("802: not 203")
	}
	if q := fb.queues()["802"]; agentOf(q, "203").State != queue.StateTalking {
		t.Fatalf("203 while talking: %+v", q.Agents)
	}
	hungUp := time.Now()
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	<-fb.phones["203"].Byes
	if c := fb.dial(ctx, "100", "802", fb.phones["203"]); c != 200 {
		t.Fatalf("802 after wrap-up: %d", c)
	}
	if waited := time.Since(hungUp); waited < 8*time.Second {
		t.Fatalf("203 answered %v after its last call ended, within its 8 s wrap-up", waited)
	}
	fb.drain()

	// Least recent with agent ring times and the longest wait: 201 rings
	// for 5 s, then 202 for the 3 s left, then the fallback 204 answers.
	fb.phones["201"].Reply(siptest.Ring)
	fb.phones["202"].Reply(siptest.Ring)
	start := time.Now()
	type answer struct {
		code int
		took time.Duration
	}
	res := make(chan answer, 1)
	go func() {
		d, _, err := fb.phones["100"].Dial(ctx, "127.0.0.1", fb.port, "803")
		took := time.Since(start)
		if err != nil {
			res <- answer{statusOf(err), took}
			return
		}
		_ = d.Bye(ctx)
		res <- answer{200, took}
	}()
	at201, at202 := fb.invited(ctx, "201"), fb.invited(ctx, "202")
	if a := <-res; a.code != 200 || a.took < 8*time.Second {
		t.Fatalf("803 to its fallback: %d after %v (want 200 after the longest wait, 8 s)", a.code, a.took)
	}
	<-fb.phones["204"].Byes
	if gap := at202.Sub(at201); gap < 4*time.Second {
		t.Fatalf("202 rang %v after 201: before 201's 5 s were over", gap)
	}
	q = fb.waitQueue(ctx, "803", func(q queue.Stats) bool { return q.TimedOut == 1 })
	if q.Answered != 0 || q.Abandoned != 0 {
		t.Fatalf("queue 803: %+v", q)
	}
	fb.drain()

	// Fewest calls with dynamic agents: nobody is logged in; 203 logs in
	// by code, 201 (not an agent) is refused, 202 logs in by the API.
	for _, e := range []string{"201", "202", "203"} {
		fb.phones[e].Reply(0)
	}
	// Nobody logged in: the caller waits (nobody rings) until it gives
	// up, answered 487.
	ctx3, give3 := context.WithCancel(ctx)
	final := make(chan int, 1)
	go func() {
		d, _, err := fb.phones["100"].Dial(ctx3, "127.0.0.1", fb.port, "804")
		if err == nil || d == nil || d.InviteResponse == nil {
			final <- 0
			return
		}
		final <- d.InviteResponse.StatusCode // sipgo returns ctx's error after its CANCEL
	}()
	fb.waitQueue(ctx, "804", func(q queue.Stats) bool { return len(q.Waiting) == 1 })
	give3()
	if c := <-final; c != 487 {
		t.Fatalf("caller leaving an empty queue: %d, want 487", c)
	}
	fb.waitQueue(ctx, "804", func(q queue.Stats) bool { return q.Abandoned == 1 && len(q.Waiting) == 0 })
	for _, e := range []string{"202", "203"} {
		fb.quiet(e)
	}
	if c := fb.code(ctx, "203", "*45804"); c != 200 {
		t.Fatalf("*45804 by 203: %d", c)
	}
	if c := fb.code(ctx, "201", "*45804"); c != 403 {
		t.Fatalf("*45804 by 201 (no agent): %d, want 403", c)
	}
	if c := fb.code(ctx, "201", "*45899"); c != 404 {
		t.Fatalf("*45899 (no queue): %d, want 404", c)
	}
	if c := fb.dial(ctx, "100", "804", fb.phones["203"]); c != 200 {
		t.Fatalf("804: %d", c)
	}
	fb.quiet("202")
	fb.drain()
	fb.api.must(200, "PUT", "/api/v1/queues/804/agents/202", map[string]bool{"logged_in": true})
	fb.api.must(409, "PUT", "/api/v1/queues/800/agents/201", map[string]bool{"logged_in": false})
	fb.api.must(404, "PUT", "/api/v1/queues/804/agents/201", map[string]bool{"logged_in": true})
	fb.api.must(400, "PUT", "/api/v1/queues/804/agents/202", map[string]string{})
	// 202 has answered no call of 804, 203 one: 202; then both one, and
	// 203's ended longer ago: 203.
	for _, want := range []string{"202", "203"} {
		fb.waitQueue(ctx, "804", func(q queue.Stats) bool { return agentOf(q, "203").State == queue.StateAvailable })
		if c := fb.dial(ctx, "100", "804", fb.phones[want]); c != 200 {
			t.Fatalf("804: %d", c)
		}
		if got := fb.answeredBy(ctx); got != want {
			t.Fatalf("804 answered by %s, want %s", got, want)
		}
		fb.drain()
	}
	// 203 logs out by code: 202 takes the call.
	if c := fb.code(ctx, "203", "*46804"); c != 200 {
		t.Fatalf("*46804: %d", c)
	}
	fb.waitQueue(ctx, "804", func(q queue.Stats) bool { return agentOf(q, "202").State == queue.StateAvailable })
	if c := fb.dial(ctx, "100", "804", fb.phones["202"]); c != 200 {
		t.Fatalf("804 after logout: %d", c)
	}
	fb.quiet("203")
	q = fb.waitQueue(ctx, "804", func(q queue.Stats) bool { return q.Answered == 4 && agentOf(q, "202").TalkTime >= 0 })
	if a := agentOf(q, "203"); a.LoggedIn || a.Answered != 2 || a.LastCall == nil {
		t.Fatalf("203 in 804: %+v", a)
	}
	if a := agentOf(q, "202"); !a.LoggedIn || a.Answered != 2 {
		t.Fatalf("202 in 804: %+v", a)
	}
	// The Calls page shows the queues.
	if page := string(fb.api.must(200, "GET", "/calls", nil)); !strings.Contains(page, `id="queue-agents"`) {
		t.Fatal("no queues on the Calls page")
	}
	if code := fb.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d:\n%s", code, fb.p.output())
	}
}

// BenchmarkQueueLeastRecent10 measures complete calls per second through
// a least-recent queue with 10 agents in the real binary: each call is
// the caller's INVITE (digest-challenged), the queue's pick, one INVITE to
// the agent, its answer, ACK and BYE. Four callers dial in parallel, so
// agents on a call are skipped; the phones are sipgo UAs in the
// benchmark's process (they share the 2 cores with the daemon). Each op
// is one call.
func BenchmarkQueueLeastRecent10(b *testing.B) {
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
	var agents []queue.Agent
	for i := 301; i <= 310; i++ {
		ph := phone(fmt.Sprint(i))
		agents = append(agents, queue.Agent{Extension: fmt.Sprint(i), Static: true})
		go func() {
			for {
				select {
				case <-ph.Answered:
				case <-ph.Byes:
				case <-ph.Invites:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	var callers []*siptest.Phone
	for i := 101; i <= 104; i++ {
		callers = append(callers, phone(fmt.Sprint(i)))
	}
	var cfg pbxconfig.Telephony
	if err := json.Unmarshal(api.must(200, "GET", "/api/v1/telephony", nil), &cfg); err != nil {
		b.Fatal(err)
	}
	cfg.Features.Queues = []queue.Queue{{Number: "800", Strategy: queue.LeastRecent, Ringback: true, Agents: agents}}
	api.must(200, "PUT", "/api/v1/telephony", cfg)

	b.ResetTimer()
	start := time.Now()
	errs := make(chan error, len(callers))
	for k, c := range callers {
		go func() {
			for i := k; i < b.N; i += len(callers) {
				d, _, err := c.Dial(ctx, "127.0.0.1", udp.Port, "800")
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
