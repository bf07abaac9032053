package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/conference"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/ivr"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge/siptest"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
)

// appLegs is how many application legs of one kind a benchmark iteration
// holds at once (a room takes at most conference.MaxParticipants).
const appLegs = 50

// BenchmarkDevAppLegRSS measures the real daemon's resident memory (and
// Go heap, from GODEBUG=gctrace=1) per active application leg: one sipp
// process places appLegs calls from 1001, each speaking G.711 (the A-law
// pcap, looped) for 60 s, to one kind of application: voicemail deposits
// (mailboxes 1002-1006, no phone registered), one conference room, one
// IVR menu waiting for a key. Each kind gets a fresh daemon (memory the Go
// runtime kept from another kind's legs would be reused and hide the
// growth). The idle figure is taken before the calls, once the set-up's
// garbage is collected; the steady one over 30 s once all legs are up
// (median of 1 s samples); "after" 45 s after the last leg ended (and
// the heap at the first GC after that). The per-leg figures are
// (steady - idle) / legs; after - idle is what the daemon has not given
// back by then. It takes about 4 min per kind (-timeout 30m). Run it with -benchtime 1x: a second
// round on the same daemon reuses the first one's memory (it logs both).
func BenchmarkDevAppLegRSS(b *testing.B) {
	sipp := siptest.NeedSipp(b)
	b.Setenv("GODEBUG", "gctrace=1")
	for _, kind := range []struct{ name, to string }{
		{"voicemail", "[field0]"}, {"conference", "830"}, {"ivr", "850"},
	} {
		b.Run(kind.name, func(b *testing.B) {
			p, api, udp, pw := confDaemon(b)
			var cfg pbxconfig.Telephony
			if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/telephony", nil), &cfg); err != nil {
				b.Fatal(err)
			}
			// 1001 holds every leg: its concurrency limit (default 4) is raised.
			cfg.Extensions = append(cfg.Extensions, dialplan.Extension{Number: "1001", Limits: dialplan.Limits{MaxConcurrent: 4 * appLegs}})
			cfg.IVR.Menus = append(cfg.IVR.Menus, ivr.Menu{Number: "850", Name: "bench",
				Options: []ivr.Option{{Key: "1", Dest: "1002"}}, Timeout: ivr.MaxTimeout, Repeats: 3})
			api.must(http.StatusOK, "PUT", "/api/v1/telephony", cfg)
			api.must(http.StatusOK, "PUT", "/api/v1/conference/rooms/830", conference.RoomRequest{Name: "bench", MaxParticipants: appLegs})
			pid := p.cmd.Process.Pid
			quiesce(b, p, pid, func(ctx context.Context) <-chan error {
				return startLegs(ctx, b, sipp, udp.String(), pw["1001"], kind.to, 5, 15*time.Second)
			})
			var idle, steady, after, heapIdle, heapSteady, heapAfter float64
			round := func() {
				i0, h0 := settleRSS(b, p, pid)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
				defer cancel() // a failed round leaves no sipp behind
				done := startLegs(ctx, b, sipp, udp.String(), pw["1001"], kind.to, appLegs, 60*time.Second)
				up := waitLive(ctx, b, api, func(n int) bool { return n == appLegs })
				gc := len(gcLines(p))
				var rs []float64
				for time.Since(up) < 30*time.Second {
					rs = append(rs, rssOf(b, pid))
					time.Sleep(time.Second)
				}
				hs := gcLines(p)[gc:]
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				waitLive(ctx, b, api, func(n int) bool { return n == 0 })
				gc = len(gcLines(p))
				time.Sleep(45 * time.Second) // what the daemon gives back
				ra := rssOf(b, pid)
				ha := nextGC(b, p, gc) // the legs' garbage collected
				idle += i0
				steady += median(rs)
				after += ra
				heapIdle += h0
				heapSteady += median(hs)
				heapAfter += ha
				b.Logf("%s: RSS idle %.0f kB, steady %.0f kB (median of %d), 45 s after %.0f kB; live heap after each GC (gctrace, MB resolution): idle %.0f kB, steady %v kB, first GC after the legs %.0f kB",
					kind.name, i0, median(rs), len(rs), ra, h0, hs, ha)
				if len(hs) == 0 {
					b.Logf("no GC while the legs were up: no heap figure")
				}
			}
			b.ResetTimer() // ns/op: one round, not the daemon's set-up
			for range b.N {
				round()
			}
			n := float64(b.N)
			b.ReportMetric((steady-idle)/n/appLegs, "RSS-kB/leg")
			b.ReportMetric((heapSteady-heapIdle)/n/appLegs, "heap-kB/leg")
			b.ReportMetric(idle/n/1024, "idle-RSS-MiB")
			b.ReportMetric((after-idle)/n/1024, "after-minus-idle-RSS-MiB")
			b.ReportMetric((heapAfter-heapIdle)/n/1024, "after-minus-idle-heap-MiB")
			if code := p.stop(b); code != 0 {
				b.Fatalf("SIGTERM: exit %d", code)
			}
		})
	}
}

// quiesce waits until the daemon has collected the set-up's garbage (the
// admin login's argon2id hash takes 64 MiB) and given it back to the
// system, and its RSS is steady: the idle figure would include it
// otherwise. Go collects at the latest every 2 min without allocation
// pressure and returns freed memory in the background.
func quiesce(tb testing.TB, p *proc, pid int, warm func(context.Context) <-chan error) {
	deadline := time.Now().Add(4 * time.Minute)
	var live float64
	for {
		if hs := gcLines(p); len(hs) > 0 && hs[len(hs)-1] < 32*1024 {
			live = hs[len(hs)-1]
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("no GC down to 32 MB of live heap: %v", gcLines(p))
		}
		time.Sleep(time.Second)
	}
	if rssOf(tb, pid) > live+48*1024 {
		// The freed hash stays resident while the daemon idles (no GC
		// wakes Go's scavenger): a few short legs do, as in a real box.
		// They leave little free heap for the measured legs to reuse.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := <-warm(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	for rssOf(tb, pid) > live+48*1024 { // the hash's 64 MiB are back
		if time.Now().After(deadline) {
			tb.Fatalf("RSS %.0f kB with %.0f kB of live heap", rssOf(tb, pid), live)
		}
		time.Sleep(time.Second)
	}
	for last := rssOf(tb, pid); time.Now().Before(deadline); {
		time.Sleep(5 * time.Second)
		now := rssOf(tb, pid)
		if now > last*0.99 {
			return
		}
		last = now
	}
}

// nextGC waits (at most 3 min: Go forces one every 2 min) for the
// daemon's next GC after the first n and returns its live heap (kB).
func nextGC(tb testing.TB, p *proc, n int) float64 {
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if hs := gcLines(p); len(hs) > n {
			return hs[n]
		}
	}
	tb.Fatalf("no GC within 3 min")
	return 0
}

// settleRSS waits for 5 s without calls and returns the daemon's RSS (kB)
// and its live heap after the last GC (kB; 0 when there was none yet).
func settleRSS(tb testing.TB, p *proc, pid int) (rss, heap float64) {
	time.Sleep(5 * time.Second)
	hs := gcLines(p)
	if len(hs) > 0 {
		heap = hs[len(hs)-1]
	}
	return rssOf(tb, pid), heap
}

// gcRE is the live heap after one GC in a gctrace line ("4->5->2 MB").
var gcRE = regexp.MustCompile(`^gc \d+ @.* \d+->\d+->(\d+) MB`)

// gcLines are the live heaps (kB) after each GC the daemon traced so far.
func gcLines(p *proc) []float64 {
	var out []float64
	for l := range strings.SplitSeq(p.output(), "\n") {
		if m := gcRE.FindStringSubmatch(l); m != nil {
			mb, _ := strconv.ParseFloat(m[1], 64)
			out = append(out, mb*1024)
		}
	}
	return out
}

func rssOf(tb testing.TB, pid int) float64 {
	kb, err := strconv.ParseFloat(strings.TrimSuffix(rssKB(pid), " kB"), 64)
	if err != nil {
		tb.Fatalf("RSS of %d: %v", pid, err)
	}
	return kb
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	return s[len(s)/2]
}

// waitLive polls the live calls until ok(count) and returns when.
func waitLive(ctx context.Context, tb testing.TB, api *apiClient, ok func(int) bool) time.Time {
	var live struct{ Calls []admin.LiveCall }
	for {
		if err := json.Unmarshal(api.must(http.StatusOK, "GET", "/api/v1/calls/live", nil), &live); err != nil {
			tb.Fatal(err)
		}
		if ok(len(live.Calls)) {
			return time.Now()
		}
		select {
		case <-ctx.Done():
			tb.Fatalf("%d live calls", len(live.Calls))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// startLegs runs sipp: legs calls from 1001 (digest pw) to to ("[field0]":
// mailboxes 1002-1006 in turn), 10 new calls a second, each speaking the
// A-law pcap for hold and then hanging up. The channel says how sipp ended.
func startLegs(ctx context.Context, tb testing.TB, sipp, sipAddr, pw, to string, legs int, hold time.Duration) <-chan error {
	dir := tb.TempDir()
	sf := filepath.Join(dir, "legs.xml")
	if err := os.WriteFile(sf, []byte(legScenario(to, hold)), 0o600); err != nil {
		tb.Fatal(err)
	}
	inf := filepath.Join(dir, "callees.csv")
	if err := os.WriteFile(inf, []byte("SEQUENTIAL\n1002;\n1003;\n1004;\n1005;\n1006;\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	port := netnstest.FreePort(tb, "udp")
	cmd := exec.CommandContext(ctx, sipp, "-sf", sf, "-inf", inf, "-i", "127.0.0.1", "-p", fmt.Sprint(port),
		"-mi", "127.0.0.1", "-mp", fmt.Sprint(42000+port%5000*2), "-s", "1001", "-au", "1001", "-ap", pw,
		"-m", fmt.Sprint(legs), "-l", fmt.Sprint(legs), "-r", "10", "-timeout", "200s", "-timeout_error", "-nostdin", "-trace_err", sipAddr)
	cmd.Dir = dir
	done := make(chan error, 1)
	go func() {
		out, err := cmd.CombinedOutput()
		if err != nil {
			el, _ := filepath.Glob(filepath.Join(dir, "*_errors.log"))
			var errs []byte
			if len(el) > 0 {
				errs, _ = os.ReadFile(el[0])
			}
			err = fmt.Errorf("sipp -> %s: %w\n%s\nerrors:\n%s", to, err, lastBytes(out), lastBytes(errs))
		}
		done <- err
	}()
	return done
}

// legScenario: INVITE (digest), ACK, the A-law pcap (7.3 s) looped for
// hold, BYE.
func legScenario(to string, hold time.Duration) string {
	via := "      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n"
	hdr := func(tag string) string {
		return fmt.Sprintf(`      From: <sip:1001@[remote_ip]:[remote_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:%s@[remote_ip]:[remote_port]>%s
      Call-ID: [call_id]
      Contact: <sip:1001@[local_ip]:[local_port]>
      Max-Forwards: 70`, to, tag)
	}
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
	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="application legs">
  <send retrans="500"><![CDATA[
      INVITE sip:%[4]s@[remote_ip]:[remote_port] SIP/2.0
%[5]s%[1]s
      CSeq: 1 INVITE
%[3]s
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send><![CDATA[
      ACK sip:%[4]s@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
%[2]s
      CSeq: 1 ACK
      Content-Length: 0
  ]]></send>
  <send retrans="500"><![CDATA[
      INVITE sip:%[4]s@[remote_ip]:[remote_port] SIP/2.0
%[5]s%[1]s
      CSeq: 2 INVITE
      [authentication]
%[3]s
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
      ACK sip:%[4]s@[remote_ip]:[remote_port] SIP/2.0
%[5]s%[2]s
      CSeq: 2 ACK
      Content-Length: 0
  ]]></send>
`, hdr(""), hdr("[peer_tag_param]"), sdp, to, via)
	const speech = 7300 * time.Millisecond
	for left := hold; left > 0; left -= speech {
		fmt.Fprintf(&b, "  <nop><action><exec play_pcap_audio=\"/usr/share/sip-tester/g711a.pcap\"/></action></nop>\n  <pause milliseconds=\"%d\"/>\n",
			min(left, speech).Milliseconds())
	}
	fmt.Fprintf(&b, `  <send retrans="500"><![CDATA[
      BYE sip:%[2]s@[remote_ip]:[remote_port] SIP/2.0
%[3]s%[1]s
      CSeq: 3 BYE
      Content-Length: 0
  ]]></send>
  <recv response="200"/>
</scenario>
`, hdr("[peer_tag_param]"), to, via)
	return b.String()
}
