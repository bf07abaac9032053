package metrics

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/auth"
	"github.com/edgepbx/edgepbx/firmware/certs"
	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/sipedge"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScrape10kRegistrations is the cost of one authorised /metrics
// scrape (network check, token lookup in the store, every collector, text
// encoding; with gzip as Prometheus asks) on a box whose real SIP edge
// holds 10,000 registered extensions. It reports the process CPU time per
// scrape and the answer's size.
func BenchmarkScrape10kRegistrations(b *testing.B) {
	const phones = 10000
	a, db := newAuth(b)
	sec, err := logs.New(db, 1000)
	if err != nil {
		b.Fatal(err)
	}
	cfg := pbxconfig.DefaultSIP()
	cfg.UDP, cfg.TCP, cfg.TLS, cfg.WSS = "127.0.0.1:0", "", "", ""
	sip, err := sipedge.New(cfg, sipedge.Deps{Store: db, Security: sec})
	if err != nil {
		b.Fatal(err)
	}
	defer sip.Close()
	cm, err := certs.Load(db, certs.Identity{Serial: "B0001", Hostname: "box.example"})
	if err != nil {
		b.Fatal(err)
	}
	reg, err := NewRegistry(Sources{SIP: sip, Registrar: sip.Location(), Logins: a, Certificates: cm, StorePath: db.Path(), Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	h, err := NewHandler(reg, a, Settings{Networks: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	tok := token(b, a, auth.ScopeMetrics)
	register := func(n int) {
		now := time.Now()
		for j := range n {
			user := fmt.Sprintf("%d", 10000+j)
			src := netip.AddrFrom4([4]byte{10, byte(j >> 16), byte(j >> 8), byte(j)})
			sip.Location().Register(now, user, sipedge.Binding{CallID: fmt.Sprintf("%x@10.0.0.1", j), CSeq: 1,
				Source: src.String() + ":5060", Transport: "UDP", UserAgent: "Yealink SIP-T46U 108.86.0.20"},
				[]sipedge.ContactUpdate{{Contact: "sip:" + user + "@" + src.String() + ":5060", Expires: time.Hour}}, false, src)
		}
	}
	// The same scrape with no registrations first: the difference is what
	// the registrations cost.
	for _, run := range []struct {
		name string
		regs int
		enc  string
	}{{"regs=0/identity", 0, "identity"}, {"regs=10000/identity", phones, "identity"}, {"regs=10000/gzip", phones, "gzip"}} {
		if u, _ := sip.Location().Count(time.Now()); u < run.regs {
			register(run.regs)
		}
		enc := run.enc
		b.Run(run.name, func(b *testing.B) {
			var size int
			b.ReportAllocs()
			cpu0 := cpuTime()
			for b.Loop() {
				r := httptest.NewRequest("GET", "/metrics", nil)
				r.RemoteAddr = "192.0.2.9:40000"
				r.Header.Set("Authorization", "Bearer "+tok)
				r.Header.Set("Accept-Encoding", enc)
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != 200 {
					b.Fatalf("status %d", w.Code)
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/scrape")
			b.ReportMetric(float64(size), "bytes/scrape")
		})
	}
	if u, _ := sip.Location().Count(time.Now()); u != phones {
		b.Fatalf("%d registered, want %d", u, phones)
	}
}
