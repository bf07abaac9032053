package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/emiago/sipgo"
)

// kills is how many times TestDevModeKill9DuringCalls kills edgepbxd; the
// issue asks for at least 50. EDGEPBX_KILLS lowers it for a quick run.
func kills(t *testing.T) int {
	n := 50
	if v := os.Getenv("EDGEPBX_KILLS"); v != "" {
		m, err := strconv.Atoi(v)
		if err != nil || m < 1 || m > 500 {
			t.Fatalf("EDGEPBX_KILLS=%q: want 1..500", v)
		}
		n = m
	}
	return n
}

// ackedCall is a call whose BYE the box answered with 200. The box sends
// that 200 only after the call's CDR is committed (firmware/call onBye),
// so its record must survive any later kill. The window brackets the
// record's times: the box stamps Start after the INVITE left the caller
// and End before the BYE's 200 arrived (same host, same clock).
type ackedCall struct {
	from, to string
	sent     time.Time // INVITE sent
	byeSent  time.Time // after the answer, BYE sent
	byeOK    time.Time // 200 to the BYE received
}

// bearer is an API client with a token: no argon2 login after each
// restart. It reports errors instead of failing, so writers run into the
// kill.
type bearer struct {
	base, token string
	c           *http.Client
}

func (b *bearer) try(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, b.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", b.base)
	req.Header.Set("Authorization", "Bearer "+b.token)
	resp, err := b.c.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return resp.StatusCode, out, err
}

// records reads every CDR naming party through the API, page by page.
func (b *bearer) records(party string) ([]cdr.Record, error) {
	var all []cdr.Record
	cursor := ""
	for range 100 {
		q := url.Values{"party": {party}, "limit": {"1000"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		code, out, err := b.try("GET", "/api/v1/cdr?"+q.Encode(), nil)
		if err != nil || code != http.StatusOK {
			return nil, fmt.Errorf("GET cdr: %d %v %.300s", code, err, out)
		}
		var page cdr.Page
		if err := json.Unmarshal(out, &page); err != nil {
			return nil, fmt.Errorf("cdr page %.200s: %w", out, err)
		}
		all = append(all, page.Records...)
		if page.Next == "" {
			return all, nil
		}
		cursor = page.Next
	}
	return nil, fmt.Errorf("cdr of %s: more than 100 pages", party)
}

// killLedger is every write the box acknowledged before a kill.
type killLedger struct {
	mu    sync.Mutex
	calls []ackedCall
	exts  map[string]bool
}

// check reads the restarted box's CDRs and extensions and finds every
// acknowledged one.
func (l *killLedger) check(b *bearer) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	byCaller := map[string][]cdr.Record{}
	for _, c := range l.calls {
		if _, ok := byCaller[c.from]; ok {
			continue
		}
		recs, err := b.records(c.from)
		if err != nil {
			return err
		}
		byCaller[c.from] = recs
	}
	for _, c := range l.calls {
		found := false
		for _, r := range byCaller[c.from] {
			// One caller's calls are sequential, so their windows are
			// disjoint: each acknowledged call has its own record.
			if r.From == c.from && r.To == c.to && r.Result == cdr.Answered &&
				!r.Start.Before(c.sent) && !r.Start.After(c.byeSent) &&
				!r.End.Before(c.byeSent) && !r.End.After(c.byeOK) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("call %s -> %s (INVITE %s, BYE answered %s) acknowledged, its CDR is gone (%d records of %s)",
				c.from, c.to, c.sent.Format(time.StampMicro), c.byeOK.Format(time.StampMicro), len(byCaller[c.from]), c.from)
		}
	}
	code, out, err := b.try("GET", "/api/v1/extensions", nil)
	if err != nil || code != http.StatusOK {
		return fmt.Errorf("GET extensions: %d %v %.200s", code, err, out)
	}
	var el struct {
		Extensions []string `json:"extensions"`
	}
	if err := json.Unmarshal(out, &el); err != nil {
		return fmt.Errorf("extensions answer %.200s: %w", out, err)
	}
	have := map[string]bool{}
	for _, u := range el.Extensions {
		have[u] = true
	}
	for u := range l.exts {
		if !have[u] {
			return fmt.Errorf("acknowledged extension %s lost", u)
		}
	}
	return nil
}

// TestDevModeKill9DuringCalls kills the real edgepbxd (SIGKILL, no
// chance to flush or close) 50 times while two pairs of real sipgo phones
// place, answer and hang up calls through its B2BUA (each call's end is a
// CDR commit) and the admin API creates extensions (sealed secrets,
// audit entries). Each kill lands after a varying number of acknowledged
// calls, with calls and API writes in flight. After every restart the
// store must open (bbolt's check runs at open: a damaged file keeps
// edgepbxd down) and the CDR API must hold the record of every call whose
// BYE was answered 200 before the kill, and every extension whose
// creation was answered 201. The QEMU power-cut test does the same
// across real power cuts (qemu/e2e, TestX86PowerCuts).
func TestDevModeKill9DuringCalls(t *testing.T) {
	n := kills(t)
	dir := filepath.Join(t.TempDir(), "dev")
	args := []string{"--dev", dir, "--https", "127.0.0.1:0", "--sip", "127.0.0.1:0", "--sip-tls", ""}
	start := time.Now()

	type running struct {
		p        *proc
		base, fp string
		sipPort  int
	}
	launch := func() running {
		t.Helper()
		p := startProc(t, procOpts{noFD3: true}, args...)
		r := running{p: p, base: p.waitLine(t, adminRE)[1]}
		udp, err := net.ResolveUDPAddr("udp", p.waitLine(t, sipUDPRE)[1])
		if err != nil {
			t.Fatal(err)
		}
		r.sipPort = udp.Port
		r.fp = p.waitLine(t, fpRE)[1]
		for deadline := time.Now().Add(60 * time.Second); !strings.Contains(p.output(), `msg="calls: ready"`); {
			if time.Now().After(deadline) { // a hang, not a performance limit
				t.Fatalf("B2BUA not ready:\n%s", p.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
		return r
	}

	r := launch()
	api := claimBox(t, r.base, r.fp, r.p.waitLine(t, setupRE)[1])
	token := createToken(t, api, "kill9", "admin")
	pairs := [][2]string{{"1001", "1002"}, {"1003", "1004"}}
	phones := map[string]*siptest.Phone{}
	for _, pr := range pairs {
		for _, u := range pr {
			var ans struct{ Password string }
			if err := json.Unmarshal(api.must(http.StatusCreated, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: u}), &ans); err != nil || ans.Password == "" {
				t.Fatalf("create %s: %v", u, err)
			}
			phones[u] = siptest.NewPhone(t, u, ans.Password)
		}
	}
	// The callees' handlers block on full channels: drain them.
	drained := make(chan struct{})
	defer close(drained)
	for _, pr := range pairs {
		for _, u := range pr {
			go func(p *siptest.Phone) {
				for {
					select {
					case <-p.Answered:
					case <-p.Byes:
					case <-drained:
						return
					}
				}
			}(phones[u])
		}
	}

	led := &killLedger{exts: map[string]bool{}}
	var restartTotal, writeTotal time.Duration
	for round := 1; round <= n; round++ {
		if round > 1 {
			r0 := time.Now()
			r = launch()
			restartTotal += time.Since(r0)
		}
		b := &bearer{base: r.base, token: token, c: pinnedClient(r.fp, 0, 0)}
		if err := led.check(b); err != nil {
			t.Fatalf("after kill %d: %v\n%s", round-1, err, r.p.output())
		}
		w0 := time.Now()
		regCtx, regCancel := context.WithTimeout(context.Background(), 60*time.Second)
		for _, p := range phones {
			p.Register(regCtx, "127.0.0.1", r.sipPort)
		}
		regCancel()
		led.burst(t, r.p, b, r.sipPort, phones, pairs, round)
		writeTotal += time.Since(w0)
		b.c.CloseIdleConnections()
	}
	r = launch()
	b := &bearer{base: r.base, token: token, c: pinnedClient(r.fp, 0, 0)}
	if err := led.check(b); err != nil {
		t.Fatalf("after kill %d: %v\n%s", n, err, r.p.output())
	}
	if code := r.p.stop(t); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
	t.Logf("%d kill -9 of edgepbxd during calls: %d acknowledged calls (CDRs) and %d extensions all present; restarts %.1fs (%.2fs each), write bursts %.1fs, total %.1fs",
		n, len(led.calls), len(led.exts), restartTotal.Seconds(), restartTotal.Seconds()/float64(n), writeTotal.Seconds(), time.Since(start).Seconds())
}

// sipUDPRE reads the banner's SIP line for the UDP address only (TLS is
// off in this test).
var sipUDPRE = regexp.MustCompile(`^\s+sip:\s+udp (\S+)`)

// burst runs one caller per pair (sequential calls: INVITE, answer, ACK,
// BYE) and an extension writer until a number of calls that varies with
// the round have been acknowledged, then kills edgepbxd with everything
// in flight.
func (l *killLedger) burst(t *testing.T, p *proc, b *bearer, sipPort int, phones map[string]*siptest.Phone, pairs [][2]string, round int) {
	t.Helper()
	// The force cause: sipgo's WaitAnswer would otherwise CANCEL the
	// INVITE the dead box never answered and wait out its 32 s timer.
	ctx, cancelCause := context.WithCancelCause(context.Background())
	cancel := func() { cancelCause(sipgo.WaitAnswerForceCancelErr) }
	defer cancel()
	progress := make(chan struct{}, 256)
	var wg sync.WaitGroup
	// A failure while the box runs is a bug; once the kill is under way
	// it is the kill's.
	var killing atomic.Bool
	var failMu sync.Mutex
	var failures []string
	fail := func(s string) {
		if killing.Load() {
			return
		}
		failMu.Lock()
		failures = append(failures, s)
		failMu.Unlock()
	}
	for _, pr := range pairs {
		wg.Add(1)
		go func(from, to string) {
			defer wg.Done()
			for ctx.Err() == nil {
				c := ackedCall{from: from, to: to, sent: time.Now()}
				d, _, err := phones[from].Dial(ctx, "127.0.0.1", sipPort, to)
				if err != nil {
					if d != nil {
						d.Close()
					}
					fail(fmt.Sprintf("call %s -> %s: %v", from, to, err))
					return
				}
				c.byeSent = time.Now()
				err = d.Bye(ctx)
				c.byeOK = time.Now()
				if err != nil {
					fail(fmt.Sprintf("BYE %s -> %s: %v", from, to, err))
					return
				}
				l.mu.Lock()
				l.calls = append(l.calls, c)
				l.mu.Unlock()
				progress <- struct{}{}
			}
		}(pr[0], pr[1])
	}
	wg.Add(1)
	go func() { // API writes between the CDR commits
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			user := fmt.Sprintf("%d%03d", 5000+round, i)
			code, out, err := b.try("POST", "/api/v1/extensions", admin.ExtensionRequest{User: user})
			if err != nil {
				fail(fmt.Sprintf("create extension %s: %v", user, err))
				return
			}
			if code != http.StatusCreated {
				fail(fmt.Sprintf("create extension %s: %d %.200s", user, code, out))
				return
			}
			l.mu.Lock()
			l.exts[user] = true
			l.mu.Unlock()
		}
	}()
	// Kill after 2..7 acknowledged calls, so the kill lands at different
	// points of the commits.
	want := 2 + (round*3)%6
	timeout := time.After(60 * time.Second) // a hang, not a performance limit
	for got := 0; got < want; got++ {
		select {
		case <-progress:
		case <-timeout:
			t.Fatalf("round %d: calls stalled after %d acknowledged: %v\n%s", round, got, failures, p.output())
		}
		failMu.Lock()
		f := failures
		failMu.Unlock()
		if len(f) > 0 {
			t.Fatalf("round %d: %v\n%s", round, f, p.output())
		}
	}
	killing.Store(true)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t)
	cancel()
	wg.Wait()
	failMu.Lock()
	defer failMu.Unlock()
	if len(failures) > 0 {
		t.Fatalf("round %d: %v\n%s", round, failures, p.output())
	}
}
