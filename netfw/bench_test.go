package netfw

import (
	"errors"
	"github.com/edgepbx/edgepbx/qemu/netnstest"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// bigPolicy has one zone of n non-adjacent IPv4 /24s (so merging cannot
// shrink it) open to SIP.
func bigPolicy(n int) Policy {
	p := labPolicy()
	z := Zone{Name: "big"}
	for i := range n {
		a := netip.AddrFrom4([4]byte{100, byte(i / 128), byte(2 * (i % 128)), 0})
		z.Prefixes = append(z.Prefixes, netip.PrefixFrom(a, 24))
	}
	p.Zones = append(p.Zones, z)
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{"big"}})
	return p
}

// cpuTime is the process's user+system CPU time: the nf_tables commit runs
// in our sendmsg, so this counts kernel work too, and unlike wall time it
// does not grow when other processes load the machine.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkApply10kCIDRs: validate, compile, one atomic batch, read back
// and verify, for a policy with a 10,000-CIDR zone replacing a small one
// ("replace" re-applies the same big policy: the old 10k set is torn down
// in the same batch).
func BenchmarkApply10kCIDRs(b *testing.B) {
	for _, replace := range []bool{false, true} {
		name := "fresh"
		if replace {
			name = "replace"
		}
		b.Run(name, func(b *testing.B) {
			l := newLab(b)
			fw := l.firewall()
			p := bigPolicy(10000)
			var cpu time.Duration
			for b.Loop() {
				if !replace {
					b.StopTimer()
					if err := fw.Apply(labPolicy()); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				c0 := cpuTime()
				if err := fw.Apply(p); err != nil {
					b.Fatal(err)
				}
				cpu += cpuTime() - c0
			}
			b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkApplyDefault is what PID 1 does at boot.
func BenchmarkApplyDefault(b *testing.B) {
	l := newLab(b)
	for b.Loop() {
		fw, err := New(WithNetNS(int(l.box)))
		if err != nil {
			b.Fatal(err)
		}
		if err := fw.Apply(DefaultPolicy()); err != nil {
			b.Fatal(err)
		}
		fw.Close()
	}
}

func reportPercentiles(b *testing.B, d []time.Duration) {
	slices.Sort(d)
	if len(d) == 0 {
		return
	}
	b.ReportMetric(float64(d[len(d)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds()), "p99-µs")
}

func benchBounds() Bounds {
	bd := DefaultBounds()
	bd.OpsPerSecond, bd.OpsBurst = 1e9, 1e9
	return bd
}

// BenchmarkPinholeOpenClose: one OpenPinhole + ClosePinhole pair per op,
// straight on the Firewall (see the control-socket variant in
// control_bench_test.go).
func BenchmarkPinholeOpenClose(b *testing.B) {
	l := newLab(b)
	fw := l.firewall(WithBounds(benchBounds()))
	if err := fw.Apply(labPolicy()); err != nil {
		b.Fatal(err)
	}
	var lat []time.Duration
	i := 0
	for b.Loop() {
		ph := Pinhole{Remote: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), LocalPort: uint16(10000 + i%10000)}
		i++
		start := time.Now()
		if err := fw.OpenPinhole(ph); err != nil {
			b.Fatal(err)
		}
		if err := fw.ClosePinhole(ph); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	reportPercentiles(b, lat)
}

// BenchmarkBanToDrop: time from calling Ban until a packet from the banned
// address is dropped. The kernel commits the ban before Ban returns, so
// the next packet is the first dropped one; the drop is proven by the ban
// rule's counter (outside the timed section).
func BenchmarkBanToDrop(b *testing.B) {
	l := newLab(b)
	fw := l.firewall(WithBounds(benchBounds()))
	p := labPolicy()
	p.Rules = append(p.Rules, Rule{Service: SvcSIPUDP, Zones: []string{ZoneAny}})
	if err := fw.Apply(p); err != nil {
		b.Fatal(err)
	}
	var c *net.UDPConn
	if err := netnstest.Run(l.hosts[hostInternet], func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(inet4, 0)))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dst := netip.AddrPortFrom(boxInet4, 5060)
	ban := Ban{Prefix: netip.PrefixFrom(inet4, 32), Reason: "bench"}
	var lat []time.Duration
	for b.Loop() {
		before := counter(b, fw, "ban_4")
		start := time.Now()
		if err := fw.Ban(ban); err != nil {
			b.Fatal(err)
		}
		if _, err := c.WriteToUDPAddrPort([]byte("q"), dst); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
		b.StopTimer()
		deadline := time.Now().Add(5 * time.Second)
		for counter(b, fw, "ban_4") == before {
			if time.Now().After(deadline) {
				b.Fatalf("packet after Ban was not dropped by the ban rule (counter %d)", before)
			}
			time.Sleep(time.Millisecond)
		}
		if err := fw.Unban(ban.Prefix); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportPercentiles(b, lat)
}

// BenchmarkPacketRate compares how many RTP packets per second one sender
// pushes over a veth into the box through an open pinhole (the media hot
// path: ban lookups, conntrack, pinhole lookup and refresh) with the same
// traffic and no ruleset at all. Netfilter runs in the sender's softirq, so
// the sender's rate is the measure; delivered counts the packets the
// receiving socket saw.
func BenchmarkPacketRate(b *testing.B) {
	l := newLab(b)
	fw := l.firewall(WithBounds(benchBounds()))
	var c *net.UDPConn
	if err := netnstest.Run(l.hosts[hostInternet], func() error {
		var err error
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(inet4, 0)))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	dst := netip.AddrPortFrom(boxInet4, 10000)
	payload := make([]byte, 172) // one 20 ms G.711 RTP packet
	payload[0] = 'q'
	const burst = 20000
	// send runs on one locked thread so its CPU time (RUSAGE_THREAD,
	// which includes the softirq work netfilter does in its context
	// unless the kernel accounts IRQ time separately) can be measured;
	// that figure does not move when other processes load the machine.
	send := func() (pps, cpuNs float64, delivered int) {
		before := l.srv.count(inet4)
		var el, cpu time.Duration
		if err := netnstest.Run(l.hosts[hostInternet], func() error {
			var r0, r1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_THREAD, &r0)
			start := time.Now()
			for range burst {
				if _, err := c.WriteToUDPAddrPort(payload, dst); err != nil && !errors.Is(err, unix.ENOBUFS) {
					return err
				}
			}
			el = time.Since(start)
			unix.Getrusage(unix.RUSAGE_THREAD, &r1)
			cpu = time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		return burst / el.Seconds(), float64(cpu.Nanoseconds()) / burst, l.srv.count(inet4) - before
	}
	var withRules, empty, cpuRules, cpuEmpty float64
	var delivRules, delivEmpty int
	for b.Loop() {
		b.StopTimer()
		if err := fw.Apply(labPolicy()); err != nil {
			b.Fatal(err)
		}
		if err := fw.OpenPinhole(Pinhole{Remote: inet4, LocalPort: 10000, Timeout: time.Minute}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		pps, cpu, d := send()
		withRules += pps
		cpuRules += cpu
		delivRules += d
		b.StopTimer()
		l.nft("delete", "table", "inet", tableName)
		b.StartTimer()
		pps, cpu, d = send()
		empty += pps
		cpuEmpty += cpu
		delivEmpty += d
	}
	n := float64(b.N)
	b.ReportMetric(withRules/n, "pps-ruleset")
	b.ReportMetric(empty/n, "pps-empty")
	b.ReportMetric(withRules/empty, "ratio")
	b.ReportMetric(cpuRules/n, "cpu-ns/pkt-ruleset")
	b.ReportMetric(cpuEmpty/n, "cpu-ns/pkt-empty")
	b.ReportMetric(cpuEmpty/cpuRules, "cpu-ratio")
	b.ReportMetric(float64(delivRules)/n/burst*100, "%delivered-ruleset")
	b.ReportMetric(float64(delivEmpty)/n/burst*100, "%delivered-empty")
}
