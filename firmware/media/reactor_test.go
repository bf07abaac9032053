package media

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/pion/srtp/v3"
)

// flowPayload marks a packet with its call and sequence number so the
// receiver can tell flows apart and check every byte.
func flowPayload(call, seq int) []byte {
	p := bytes.Repeat([]byte{byte(call ^ seq)}, 160)
	binary.BigEndian.PutUint32(p, uint32(call))
	binary.BigEndian.PutUint32(p[4:], uint32(seq))
	return p
}

// TestRelayManyCallsFewLoops relays 500 calls on two loops, half of them
// SRTP→RTP, from one phone socket to another (latching and strict source
// still apply per call): every packet must arrive intact, exactly once,
// in order within its call, from that call's B port.
func TestRelayManyCallsFewLoops(t *testing.T) {
	const calls, perCall, callsPerChunk, pktsPerChunk = 500, 12, 25, 4
	// 2000 ports are needed; the slack lets a bind that loses a port to
	// another process's ephemeral socket (the range overlaps Linux's
	// 32768-60999) try the next one instead of failing the test.
	ports, err := NewPorts(43000, 46999)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRelay(Config{Addr: localhost, Ports: ports, Pinholes: newRecordingPinholes(), Loops: 2, Batch: 8})
	if err != nil {
		t.Fatal(err)
	}
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	b.conn.SetReadBuffer(4 << 20)
	ctx := context.Background()
	type rig struct {
		call *Call
		enc  *srtp.Context
		next int // next sequence number expected at B
	}
	rigs := make([]*rig, calls)
	byPort := map[uint16]int{}
	for i := range rigs {
		c, err := r.NewCall(fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		rg := &rig{call: c, next: 1}
		pa := a.peer()
		if i%2 == 1 {
			offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
			keys, _, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
			if err != nil {
				t.Fatal(err)
			}
			pa.SDES = &keys
			rg.enc, _ = srtp.CreateContext(offer.Key, offer.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
		}
		if err := c.SetPeer(ctx, A, pa); err != nil {
			t.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, b.peer()); err != nil {
			t.Fatal(err)
		}
		rigs[i] = rg
		byPort[c.LocalPort(B)] = i
	}
	if n := len(r.loops); n != 2 {
		t.Fatalf("%d loops serve the calls, want 2", n)
	}
	for lp := range r.loops {
		if c := r.loops[lp].calls; c != calls/2 {
			t.Errorf("loop %d serves %d calls, want %d", lp, c, calls/2)
		}
	}
	for first := 0; first < calls; first += callsPerChunk {
		for seq0 := 1; seq0 <= perCall; seq0 += pktsPerChunk {
			want := 0
			for i := first; i < first+callsPerChunk; i++ {
				rg := rigs[i]
				for seq := seq0; seq < seq0+pktsPerChunk; seq++ {
					p := rtpPacket(t, uint16(seq), flowPayload(i, seq))
					if rg.enc != nil {
						if p, err = rg.enc.EncryptRTP(nil, p, nil); err != nil {
							t.Fatal(err)
						}
					}
					a.send(rg.call.LocalPort(A), p)
					want++
				}
			}
			for range want {
				got, from := b.recv()
				i, ok := byPort[from.Port()]
				if !ok {
					t.Fatalf("packet from unknown port %s", from)
				}
				rg := rigs[i]
				if exp := rtpPacket(t, uint16(rg.next), flowPayload(i, rg.next)); !bytes.Equal(got, exp) {
					t.Fatalf("call %d: packet %d arrived wrong or out of order", i, rg.next)
				}
				rg.next++
			}
		}
	}
	for i, rg := range rigs {
		st := rg.call.Stats()
		if rg.next != perCall+1 || st.Legs[A].Received != perCall || st.Legs[B].Sent != perCall {
			t.Errorf("call %d: %d delivered, stats %+v", i, rg.next-1, st.Legs)
		}
	}
}

// TestRelayCloseWithPacketsInFlight closes calls while their phones keep
// sending: Close must return, the ports come back, and the relay serves
// new calls afterwards.
func TestRelayCloseWithPacketsInFlight(t *testing.T) {
	r := newTestRelay(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var calls []*Call
	var receivers []*phone
	for i := range 20 {
		c, err := r.NewCall(fmt.Sprint(i))
		if err != nil {
			t.Fatal(err)
		}
		a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		if err := c.SetPeer(ctx, A, a.peer()); err != nil {
			t.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, b.peer()); err != nil {
			t.Fatal(err)
		}
		calls = append(calls, c)
		receivers = append(receivers, b)
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(c.LocalPort(A))}
		wg.Add(2)
		go func() {
			defer wg.Done()
			for seq := 1; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				// Errors (ICMP port unreachable once closed) are expected.
				a.conn.WriteToUDP(rtpPacket(t, uint16(seq), payload(seq)), to)
			}
		}()
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				if _, err := b.conn.Read(buf); err != nil {
					return
				}
			}
		}()
	}
	// Wait until media flows through every call, then close them all
	// while the senders go on.
	deadline := time.Now().Add(10 * time.Second) // only stops a hang
	for i, c := range calls {
		for c.Stats().Legs[B].Sent == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("call %d relays nothing", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	for _, c := range calls {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	for _, b := range receivers {
		b.conn.SetReadDeadline(time.Now())
	}
	wg.Wait()
	if n := r.cfg.Ports.InUse(); n != 0 {
		t.Fatalf("%d port pairs still allocated", n)
	}
	if r.loops != nil {
		t.Fatal("loops still running without calls")
	}
	// The relay still works.
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	c, err := r.NewCall("after")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	p := rtpPacket(t, 7, payload(7))
	a.send(c.LocalPort(A), p)
	if got, _ := b.recv(); !bytes.Equal(got, p) {
		t.Fatal("relay broken after closing calls in flight")
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestRelayNoLeaks runs many calls (plain, SDES, and DTLS legs whose
// handshakes never happen) and closes them: no descriptor and no goroutine
// may stay behind.
func TestRelayNoLeaks(t *testing.T) {
	r := newTestRelay(t)
	r.cfg.Log = slog.New(slog.DiscardHandler) // every handshake is cut short
	ctx := context.Background()
	settle := func() {
		runtime.GC()
		runtime.Gosched()
	}
	settle()
	fds0, g0 := openFDs(t), runtime.NumGoroutine()
	phoneA, phoneB := netip.AddrPortFrom(localhost, 9), netip.AddrPortFrom(localhost, 11)
	for round := range 3 {
		var calls []*Call
		for i := range 100 {
			c, err := r.NewCall(fmt.Sprint(round, i))
			if err != nil {
				t.Fatal(err)
			}
			calls = append(calls, c)
			pa := Peer{Addr: phoneA.Addr(), RTPPort: phoneA.Port(), RTCPMux: i%2 == 0}
			switch i % 3 {
			case 1:
				offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
				keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
				pa.SDES = &keys
			case 2:
				pa.DTLS = &DTLSParams{Fingerprint: r.fp}
			}
			if err := c.SetPeer(ctx, A, pa); err != nil {
				t.Fatal(err)
			}
			if err := c.SetPeer(ctx, B, Peer{Addr: phoneB.Addr(), RTPPort: phoneB.Port()}); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range calls {
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := r.cfg.Ports.InUse(); n != 0 {
		t.Fatalf("%d port pairs still allocated", n)
	}
	if n := len(r.ph.snapshot()); n != 0 {
		t.Fatalf("%d pinholes still open", n)
	}
	if fds := openFDs(t); fds != fds0 {
		t.Errorf("%d descriptors open after the calls, %d before", fds, fds0)
	}
	// Goroutines of pion's DTLS connections end shortly after Close
	// returns; wait for them (the deadline only stops a hang).
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > g0 {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines after the calls, %d before:\n%s", runtime.NumGoroutine(), g0, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTxBatchGrouping checks which queued datagrams share one GSO message:
// only runs to one destination whose datagrams all have the first one's
// size, except a shorter last one.
func TestTxBatchGrouping(t *testing.T) {
	p1, p2 := netip.MustParseAddrPort("127.0.0.1:5000"), netip.MustParseAddrPort("127.0.0.1:5002")
	type pkt struct {
		n   int
		dst netip.AddrPort
	}
	tests := []struct {
		name string
		pkts []pkt
		gso  bool
		want [][]int // datagram sizes per message
	}{
		{"equal run", []pkt{{172, p1}, {172, p1}, {172, p1}}, true, [][]int{{172, 172, 172}}},
		{"gso off", []pkt{{172, p1}, {172, p1}}, false, [][]int{{172}, {172}}},
		{"shorter last", []pkt{{172, p1}, {172, p1}, {100, p1}, {172, p1}}, true, [][]int{{172, 172, 100}, {172}}},
		{"longer second", []pkt{{100, p1}, {172, p1}}, true, [][]int{{100}, {172}}},
		{"other peer", []pkt{{172, p1}, {172, p2}, {172, p2}}, true, [][]int{{172}, {172, 172}}},
		{"segment cap", slices.Repeat([]pkt{{100, p1}}, maxSegments+1), true, [][]int{slices.Repeat([]int{100}, maxSegments), {100}}},
		{"byte cap", slices.Repeat([]pkt{{1100, p1}}, 60), true, [][]int{slices.Repeat([]int{1100}, 59), {1100}}},
		{"too large to segment", []pkt{{1300, p1}, {1300, p1}}, true, [][]int{{1300}, {1300}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTxBatch(len(tc.pkts))
			for _, p := range tc.pkts {
				tb.pkts = append(tb.pkts, txPkt{b: make([]byte, p.n), dst: p.dst})
			}
			m := tb.build(0, tc.gso, false)
			var got [][]int
			for k := range m {
				var sizes []int
				for j := tb.first[k]; j < tb.first[k+1]; j++ {
					sizes = append(sizes, len(tb.pkts[j].b))
				}
				got = append(got, sizes)
				h := tb.hdrs[k].Hdr
				if segs := len(sizes); (segs > 1) != (h.Controllen != 0) || int(h.Iovlen) != segs {
					t.Fatalf("message %d: %d datagrams, %d iovecs, control %d bytes", k, segs, h.Iovlen, h.Controllen)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("messages %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRelayBurstKeepsDatagrams sends bursts of equal and mixed sizes
// through one call (the runs GSO sends as one buffer): each datagram must
// arrive whole, alone and in order.
func TestRelayBurstKeepsDatagrams(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	b.conn.SetReadBuffer(4 << 20)
	c, err := r.NewCall("burst")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := c.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	var sent [][]byte
	for i := range 300 {
		n := 160
		if i%7 == 3 {
			n = 40 + i%100 // a shorter one now and then ends a run
		}
		p := rtpPacket(t, uint16(i+1), bytes.Repeat([]byte{byte(i)}, n))
		sent = append(sent, p)
	}
	for chunk := range slices.Chunk(sent, 100) {
		for _, p := range chunk {
			a.send(c.LocalPort(A), p)
		}
		for _, p := range chunk {
			if got, _ := b.recv(); !bytes.Equal(got, p) {
				t.Fatalf("got %d bytes (seq %d), want %d bytes (seq %d)", len(got), binary.BigEndian.Uint16(got[2:]), len(p), binary.BigEndian.Uint16(p[2:]))
			}
		}
	}
}

// TestRelayFloodDoesNotStarveOtherCalls floods one call from its own
// (accepted) peer while another call on the same single loop relays
// packet by packet: each socket gets one read per round, so the quiet
// call's packets all get through.
func TestRelayFloodDoesNotStarveOtherCalls(t *testing.T) {
	ports, err := NewPorts(45000, 45999)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRelay(Config{Addr: localhost, Ports: ports, Pinholes: newRecordingPinholes(), Loops: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	newCall := func(name string) (*Call, *phone, *phone) {
		c, err := r.NewCall(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
		if err := c.SetPeer(ctx, A, a.peer()); err != nil {
			t.Fatal(err)
		}
		if err := c.SetPeer(ctx, B, b.peer()); err != nil {
			t.Fatal(err)
		}
		return c, a, b
	}
	flooded, fa, _ := newCall("flooded")
	quiet, qa, qb := newCall("quiet")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(flooded.LocalPort(A))}
		p := rtpPacket(t, 1, payload(1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			fa.conn.WriteToUDP(p, to)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	for i := range 100 {
		p := rtpPacket(t, uint16(i+1), payload(i))
		qa.send(quiet.LocalPort(A), p)
		if got, _ := qb.recv(); !bytes.Equal(got, p) {
			t.Fatalf("quiet call: packet %d wrong", i)
		}
	}
	if flooded.Stats().Legs[A].Received == 0 {
		t.Fatal("the flood never reached the relay")
	}
}

// TestRelayPacketPathDoesNotAllocate keeps the per-packet path free of
// heap allocations (SRTP in pion included), so the relay's cost does not
// grow with garbage collection under load.
func TestRelayPacketPathDoesNotAllocate(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("allocs")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, _, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pa, pb := netip.AddrPortFrom(localhost, 9), netip.AddrPortFrom(localhost, 11)
	if err := call.SetPeer(ctx, A, Peer{Addr: pa.Addr(), RTPPort: pa.Port(), RTCPMux: true, SDES: &keys}); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, Peer{Addr: pb.Addr(), RTPPort: pb.Port(), RTCPMux: true}); err != nil {
		t.Fatal(err)
	}
	enc, err := srtp.CreateContext(offer.Key, offer.Salt, srtp.ProtectionProfileAes128CmHmacSha1_80)
	if err != nil {
		t.Fatal(err)
	}
	const runs = 100
	var srtpIn, plainIn [][]byte
	for i := range runs + 1 { // AllocsPerRun makes one extra warm-up call
		p := rtpPacket(t, uint16(i+1), payload(i))
		plainIn = append(plainIn, p)
		ct, err := enc.EncryptRTP(nil, p, nil)
		if err != nil {
			t.Fatal(err)
		}
		srtpIn = append(srtpIn, ct)
	}
	for _, tc := range []struct {
		name string
		side Side
		from netip.AddrPort
		pkts [][]byte
	}{
		{"SRTP to RTP", A, pa, srtpIn},
		{"RTP to SRTP", B, pb, plainIn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorker(1)
			l := call.legs[tc.side]
			st, ost := l.state.Load(), l.other().state.Load()
			i := 0
			allocs := testing.AllocsPerRun(runs, func() {
				l.handle(w, 0, st, ost, tc.pkts[i], tc.from, false)
				i++
				if len(w.tx[0].pkts) != 1 {
					t.Fatalf("packet %d not queued", i)
				}
				w.tx[0].pkts = w.tx[0].pkts[:0]
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per packet", allocs)
			}
		})
	}
}
