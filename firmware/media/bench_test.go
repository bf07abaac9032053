package media

import (
	"context"
	"net"
	"runtime"
	"sync/atomic"
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
