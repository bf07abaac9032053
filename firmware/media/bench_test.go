package media

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/pion/srtp/v3"
	"golang.org/x/net/ipv4"
)

// benchRelay pushes b.N G.711-sized packets from phone A through one call
// to phone B with sendmmsg/recvmmsg on the phones too, keeping at most
// window packets in flight so the figure is throughput without loss.
// Sender-side SRTP encryption is done up front in batches and included in
// the time (it runs on the same two shared cores).
func benchRelay(b *testing.B, secureA bool) {
	r := newTestRelay(b)
	call, err := r.NewCall("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer call.Close()
	a, bb := newPhone(b, "127.0.0.1"), newPhone(b, "127.0.0.1")
	pa := a.peer()
	var enc *srtp.Context
	if secureA {
		offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
		keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
		pa.SDES = &keys
		enc, _ = srtp.CreateContext(offer.Key, offer.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
	}
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, pa); err != nil {
		b.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, bb.peer()); err != nil {
		b.Fatal(err)
	}
	const batchN, window = 32, 512
	bb.conn.SetReadBuffer(4 << 20)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		pc := ipv4.NewPacketConn(bb.conn)
		ms := make([]ipv4.Message, batchN)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 1500)}
		}
		for got.Load() < int64(b.N) {
			// Only ends the run if packets were lost; reported below.
			bb.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := pc.ReadBatch(ms, 0)
			if err != nil {
				return
			}
			got.Add(int64(n))
		}
	}()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(call.LocalPort(A))}
	pc := ipv4.NewPacketConn(a.conn)
	ms := make([]ipv4.Message, batchN)
	bufs := make([][]byte, batchN)
	for i := range bufs {
		bufs[i] = make([]byte, 0, 256)
	}
	seq := uint16(1)
	b.SetBytes(172)
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		for int64(sent)-got.Load() > window {
			// Flow control: wait for the receiver to catch up.
			select {
			case <-done:
				b.Fatalf("receiver stopped after %d of %d packets", got.Load(), sent)
			default:
				runtime.Gosched()
			}
		}
		n := min(batchN, b.N-sent)
		for i := range n {
			p := rtpPacket(b, seq, payload(i)) // starts below 2^15, wraps naturally
			seq++
			if enc != nil {
				p, _ = enc.EncryptRTP(bufs[i][:0], p, nil)
			}
			ms[i] = ipv4.Message{Buffers: [][]byte{p}, Addr: to}
		}
		if _, err := pc.WriteBatch(ms[:n], 0); err != nil {
			b.Fatal(err)
		}
		sent += n
	}
	<-done
	b.StopTimer()
	b.ReportMetric(float64(got.Load())/b.Elapsed().Seconds(), "pkts/s")
	b.ReportMetric(100*float64(int64(b.N)-got.Load())/float64(b.N), "loss%")
	st := call.Stats()
	if st.Legs[A].DroppedCrypto != 0 {
		b.Fatalf("%d packets failed SRTP", st.Legs[A].DroppedCrypto)
	}
}

func BenchmarkRelayRTPToRTP(b *testing.B)  { benchRelay(b, false) }
func BenchmarkRelaySRTPToRTP(b *testing.B) { benchRelay(b, true) }

// BenchmarkCallSetup measures one call's life without media: bind four
// sockets, two peers with SDES on one leg, pinholes, close. B/op is the
// heap per call (buffers of the four reader goroutines included).
func BenchmarkCallSetup(b *testing.B) {
	r := newTestRelay(b)
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	pa := Peer{Addr: netip.MustParseAddr("127.0.0.1"), RTPPort: 9, RTCPMux: true, SDES: &keys}
	pb := Peer{Addr: netip.MustParseAddr("127.0.0.1"), RTPPort: 11, RTCPMux: true}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := r.NewCall("x")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.SetPeer(ctx, A, pa); err != nil {
			b.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, pb); err != nil {
			b.Fatal(err)
		}
		if err := c.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConcurrentCalls relays n simultaneous G.711 calls (50 packets/s,
// 172-byte SRTP in on leg A, plain RTP out on leg B) for 2 s of media and
// reports loss and the process CPU time per relayed packet (the senders'
// encryption and the receivers are in the same process, so this is an
// upper bound for the relay). Run with -benchtime 1x.
func BenchmarkConcurrentCalls(b *testing.B) {
	for _, n := range []int{100, 500, 1000, 2000} {
		b.Run(fmt.Sprintf("calls=%d", n), func(b *testing.B) { benchConcurrent(b, n) })
	}
}

func benchConcurrent(b *testing.B, n int) {
	r := newTestRelayRange(b, 20000, 29999)
	type callRig struct {
		call *Call
		a    *phone
		bb   *phone
		enc  *srtp.Context
		to   *net.UDPAddr
		got  atomic.Int64
	}
	rigs := make([]*callRig, n)
	ctx := context.Background()
	for i := range rigs {
		c, err := r.NewCall(fmt.Sprint(i))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		rg := &callRig{call: c, a: newPhone(b, "127.0.0.1"), bb: newPhone(b, "127.0.0.1")}
		offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
		keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
		pa := rg.a.peer()
		pa.SDES = &keys
		if err := c.SetPeer(ctx, A, pa); err != nil {
			b.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, rg.bb.peer()); err != nil {
			b.Fatal(err)
		}
		rg.enc, _ = srtp.CreateContext(offer.Key, offer.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
		rg.to = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(c.LocalPort(A))}
		rigs[i] = rg
		go func() {
			buf := make([]byte, 1500)
			for {
				if _, err := rg.bb.conn.Read(buf); err != nil {
					return
				}
				rg.got.Add(1)
			}
		}()
	}
	const packets = 100 // 2 s at 20 ms
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for range b.N {
		for i := range rigs {
			rigs[i].got.Store(0)
		}
		tick := time.NewTicker(20 * time.Millisecond)
		pkt := make([]byte, 0, 256)
		for seq := range packets {
			<-tick.C
			for _, rg := range rigs {
				p := rtpPacket(b, uint16(seq+1), payload(seq))
				ct, err := rg.enc.EncryptRTP(pkt[:0], p, nil)
				if err != nil {
					b.Fatal(err)
				}
				rg.a.conn.WriteToUDP(ct, rg.to)
			}
		}
		tick.Stop()
		time.Sleep(500 * time.Millisecond) // drain; measurement only
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	var got int64
	for _, rg := range rigs {
		got += rg.got.Load()
	}
	want := int64(n * packets)
	cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime)-syscall.TimevalToNsec(ru0.Utime)) + time.Duration(syscall.TimevalToNsec(ru1.Stime)-syscall.TimevalToNsec(ru0.Stime))
	b.ReportMetric(100*float64(want-got)/float64(want), "loss%")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(got), "cpu-ns/pkt")
}
