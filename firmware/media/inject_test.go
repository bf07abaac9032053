package media

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/prompts"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"golang.org/x/sys/unix"
)

// countingSource plays n payloads whose bytes are their index (n < 0:
// forever).
type countingSource struct{ i, n int }

func (s *countingSource) Next(dst []byte) ([]byte, bool) {
	if s.n >= 0 && s.i >= s.n {
		return dst, false
	}
	s.i++
	return append(dst, bytes.Repeat([]byte{byte(s.i)}, 160)...), true
}

// recvRTP reads the next RTP packet a phone gets (decrypted with dec when
// set).
func recvRTP(t *testing.T, p *phone, dec func([]byte) ([]byte, error)) rtp.Packet {
	t.Helper()
	b, _ := p.recv()
	if dec != nil {
		var err error
		if b, err = dec(b); err != nil {
			t.Fatalf("decrypt: %v", err)
		}
	}
	var pkt rtp.Packet
	if err := pkt.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return pkt
}

func TestInjectPlainStopsRelayAndResumes(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	call, err := r.NewCall("inject")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, b.peer()); err != nil {
		t.Fatal(err)
	}
	pa := call.LocalPort(A)
	a.send(pa, rtpPacket(t, 1, payload(1)))
	if p := recvRTP(t, b, nil); p.SSRC != 0x1234 {
		t.Fatalf("relay before inject: SSRC %x", p.SSRC)
	}
	in, err := call.Inject(B, 8, 8000, &countingSource{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !call.Injecting(B) || call.Injecting(A) {
		t.Fatal("Injecting() wrong")
	}
	first := recvRTP(t, b, nil)
	// The timestamp goes on from the last relayed packet's (160).
	if !first.Marker || first.PayloadType != 8 || first.SSRC == 0x1234 || first.Payload[0] != 1 || first.Timestamp != 320 {
		t.Fatalf("first injected packet %+v", first.Header)
	}
	// While the box plays, A's packets never reach B; the injected stream
	// is continuous.
	prev := first
	for i := range 20 {
		a.send(pa, rtpPacket(t, uint16(2+i), payload(2+i)))
		p := recvRTP(t, b, nil)
		if p.SSRC != first.SSRC {
			t.Fatalf("packet of A leaked to B during the injection (SSRC %x)", p.SSRC)
		}
		if p.SequenceNumber != prev.SequenceNumber+1 || p.Timestamp != prev.Timestamp+160 || p.Marker || int(p.Payload[0]) != i+2 {
			t.Fatalf("injected stream not continuous: %+v after %+v", p.Header, prev.Header)
		}
		prev = p
	}
	in.Stop()
	if call.Injecting(B) {
		t.Fatal("still injecting after Stop")
	}
	select {
	case <-in.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	// Packets sent while it stopped may still arrive: skip those, then A
	// reaches B again.
	marker := rtpPacket(t, 500, payload(55))
	a.send(pa, marker)
	for {
		got, _ := b.recv()
		if bytes.Equal(got, marker) {
			break
		}
		var p rtp.Packet
		if err := p.Unmarshal(got); err != nil || p.SSRC != first.SSRC {
			t.Fatalf("unexpected packet after Stop: %v %x", err, p.SSRC)
		}
		prev = p
	}
	// A second injection continues the box's stream: same SSRC, next
	// sequence number, new talkspurt.
	in2, err := call.Inject(B, 8, 8000, &countingSource{n: 3})
	if err != nil {
		t.Fatal(err)
	}
	p := recvRTP(t, b, nil)
	if p.SSRC != first.SSRC || p.SequenceNumber != prev.SequenceNumber+1 || !p.Marker || int32(p.Timestamp-prev.Timestamp) < 160 {
		t.Fatalf("second injection %+v after %+v", p.Header, prev.Header)
	}
	recvRTP(t, b, nil)
	recvRTP(t, b, nil)
	// A finite source ends the injection by itself.
	select {
	case <-in2.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("finite injection did not end")
	}
	if call.Injecting(B) {
		t.Fatal("Injecting after the source ended")
	}
	a.send(pa, marker)
	if got, _ := b.recv(); !bytes.Equal(got, marker) {
		t.Fatal("relay did not resume after the source ended")
	}
	if st := call.Stats().Legs[B]; st.Injected < 24 {
		t.Fatalf("Injected = %d", st.Injected)
	}
}

func TestInjectSDESWithLegKeys(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	call, err := r.NewCall("inject-srtp")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	keys, ok, err := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
	if err != nil || !ok {
		t.Fatal(err)
	}
	pb := b.peer()
	pb.SDES = &keys
	if err := call.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, pb); err != nil {
		t.Fatal(err)
	}
	_, dec := srtpPair(t, offer, keys.Send)
	// Real G.711 A-law of the recording notice, as the announcement plays.
	c, _ := codec.New("PCMA")
	pcm, _ := prompts.Default(prompts.RecordingNotice)
	pl, err := prompts.NewPlayer(pcm, prompts.Rate, c, false)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := prompts.NewPlayer(pcm, prompts.Rate, c, false)
	in, err := call.Inject(B, 8, 8000, pl)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	for i := range 10 {
		p := recvRTP(t, b, func(x []byte) ([]byte, error) { return dec.DecryptRTP(nil, x, nil) })
		w, _ := want.Next(nil)
		if !bytes.Equal(p.Payload, w) {
			t.Fatalf("payload %d differs from the source", i)
		}
	}
	// The plain leg gets nothing encrypted and nothing injected.
	if st := call.Stats().Legs[A]; st.Injected != 0 {
		t.Fatalf("leg A injected %d", st.Injected)
	}
}

func TestInjectCloseEndsInjectionAndRefuses(t *testing.T) {
	r := newTestRelay(t)
	b := newPhone(t, "127.0.0.1")
	call, err := r.NewCall("inject-close")
	if err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(context.Background(), B, b.peer()); err != nil {
		t.Fatal(err)
	}
	if _, err := call.Inject(B, 200, 8000, &countingSource{}); err == nil {
		t.Fatal("payload type 200 accepted")
	}
	if _, err := call.Inject(B, 0, 0, &countingSource{}); err == nil {
		t.Fatal("clock 0 accepted")
	}
	// A leg without a peer: packets are counted as not sent.
	inA, err := call.Inject(A, 0, 8000, &countingSource{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	in, err := call.Inject(B, 0, 8000, &countingSource{n: -1})
	if err != nil {
		t.Fatal(err)
	}
	recvRTP(t, b, nil)
	if err := call.Close(); err != nil { // waits for both goroutines
		t.Fatal(err)
	}
	for _, x := range []*Injection{in, inA} {
		select {
		case <-x.Done():
		default:
			t.Fatal("injection outlived Close")
		}
		x.Stop() // still safe
	}
	if st := call.Stats().Legs[A]; st.InjectErrors == 0 || st.Injected != 0 {
		t.Fatalf("leg A without peer: %+v", st)
	}
	if _, err := call.Inject(B, 0, 8000, &countingSource{}); err != ErrInjectClosed {
		t.Fatalf("Inject after Close: %v", err)
	}
}

// TestHandOverLatePacketFromApplication: an application call handed over
// to a destination whose media address is the box's own: a packet of the
// application's socket that arrives after the switch must not latch the
// relay's B side (it would take the leg from the new peer for good).
func TestHandOverLatePacketFromApplication(t *testing.T) {
	r := newTestRelay(t)
	a, app, dest := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	call, err := r.NewCall("handover")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	if err := call.SetPeer(ctx, A, a.peer()); err != nil {
		t.Fatal(err)
	}
	if err := call.SetPeer(ctx, B, app.peer()); err != nil {
		t.Fatal(err)
	}
	pb := call.LocalPort(B)
	p1 := rtpPacket(t, 1, payload(1))
	app.send(pb, p1)
	if got, _ := a.recv(); !bytes.Equal(got, p1) {
		t.Fatal("application audio not relayed")
	}
	// The switch to the destination, then the application's late packet.
	if err := call.SetPeer(ctx, B, dest.peer()); err != nil {
		t.Fatal(err)
	}
	app.send(pb, rtpPacket(t, 2, payload(2)))
	fromDest := rtpPacket(t, 3, payload(3))
	dest.send(pb, fromDest)
	if got, _ := a.recv(); !bytes.Equal(got, fromDest) {
		t.Fatalf("caller got payload %d, want the destination's first packet", got[12])
	}
	toDest := rtpPacket(t, 4, payload(4))
	a.send(call.LocalPort(A), toDest)
	if got, _ := dest.recv(); !bytes.Equal(got, toDest) {
		t.Fatal("caller's audio did not reach the destination")
	}
	// Still refused after a re-INVITE of the destination.
	if err := call.SetPeer(ctx, B, dest.peer()); err != nil {
		t.Fatal(err)
	}
	app.send(pb, rtpPacket(t, 5, payload(5)))
	again := rtpPacket(t, 6, payload(6))
	dest.send(pb, again)
	if got, _ := a.recv(); !bytes.Equal(got, again) {
		t.Fatal("application socket accepted after a re-INVITE")
	}
	if d := call.Stats().Legs[B].DroppedSource; d != 2 {
		t.Fatalf("DroppedSource = %d, want 2", d)
	}
	// An application taking the leg back on the same port is heard again.
	if err := call.SetPeer(ctx, B, app.peer()); err != nil {
		t.Fatal(err)
	}
	back := rtpPacket(t, 7, payload(7))
	app.send(pb, back)
	if got, _ := a.recv(); !bytes.Equal(got, back) {
		t.Fatal("application refused as the leg's own peer")
	}
}

// BenchmarkInjectPacket is the work of one injected 20 ms packet: the
// music encoded in the leg's codec, the RTP header, SRTP (SDES leg) and
// the send on the leg's socket. One stream sends 50 packets a second, so
// cpu-%/stream = 50 × ns/op / 10^7.
func BenchmarkInjectPacket(b *testing.B) {
	for _, tc := range []struct {
		name  string
		codec string
		srtp  bool
	}{{"PCMU", "PCMU", false}, {"PCMU-SRTP", "PCMU", true}, {"G722-SRTP", "G722", true}} {
		b.Run(tc.name, func(b *testing.B) {
			r := newTestRelay(b)
			call, err := r.NewCall("bench-inject")
			if err != nil {
				b.Fatal(err)
			}
			defer call.Close()
			ph := newPhone(b, "127.0.0.1")
			p := ph.peer()
			if tc.srtp {
				offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
				keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
				p.SDES = &keys
			}
			if err := call.SetPeer(context.Background(), B, p); err != nil {
				b.Fatal(err)
			}
			c, _ := codec.New(tc.codec)
			pcm, _ := prompts.Default(prompts.MusicOnHold)
			pl, err := prompts.NewPlayer(pcm, prompts.Rate, c, true)
			if err != nil {
				b.Fatal(err)
			}
			l := call.legs[B]
			inj := &injector{ssrc: 7}
			buf := make([]byte, 12+maxInjectPayload)
			out := make([]byte, 12+maxInjectPayload+64)
			var hdr rtp.Header
			b.ReportAllocs()
			cpu0 := processCPU(b)
			b.ResetTimer()
			for range b.N {
				payload, _ := pl.Next(buf[12:12])
				l.sendInjected(&hdr, buf[:12+len(payload)], out, c.PayloadType(), false, inj)
				inj.seq++
				inj.ts += 160
			}
			b.StopTimer()
			// Process CPU time, not wall time: the shared cores are loaded.
			ns := float64((processCPU(b) - cpu0).Nanoseconds()) / float64(b.N)
			b.ReportMetric(ns/1000, "cpu-µs/packet")
			b.ReportMetric(50*ns/1e7, "cpu-%/stream")
			if st := call.Stats().Legs[B]; st.Injected != uint64(b.N) {
				b.Fatalf("sent %d of %d (errors %d)", st.Injected, b.N, st.InjectErrors)
			}
		})
	}
}

// TestReofferKeepsSDESKeys: a hold/resume re-offer in the dialog of the
// same peer keeps the box's SDES key both ways (Reoffer toward the callee,
// Reanswer toward the caller), so phones that never re-key on a
// re-INVITE still decrypt; the contexts of unchanged keys continue, so a
// packet the peer sent before the re-offer cannot be replayed after it.
// A new peer (Answer, Offer) gets a fresh key.
func TestReofferKeepsSDESKeys(t *testing.T) {
	r := newTestRelay(t)
	a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
	call, err := r.NewCall("rekey")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	aKey, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	_, remA, err := ParseSDP(phoneSDP(a, ProtoSRTP, "a=crypto:"+aKey.Marshal()+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	ansA, err := call.Answer(ctx, A, remA, SRTPRequired, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	offB, err := call.Offer(B, SRTPRequired, 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	bKey, _ := sdes.New(offB.Crypto.Tag, offB.Crypto.Suite)
	_, remB, err := ParseSDP(phoneSDP(b, ProtoSRTP, "a=crypto:"+bKey.Marshal()+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Answered(ctx, B, offB, remB, SRTPRequired); err != nil {
		t.Fatal(err)
	}
	encB, _ := srtpPair(t, bKey, *offB.Crypto)
	old := rtpPacket(t, 10, payload(10))
	oldCT, _ := encB.EncryptRTP(nil, old, nil)
	b.send(call.LocalPort(B), oldCT)
	_, decA := srtpPair(t, aKey, *ansA.Crypto)
	if got, _ := a.recv(); !bytes.Equal(mustDecrypt(t, decA, got), old) {
		t.Fatal("B→A before the re-offer")
	}

	// The hold: A re-offers (a new tag), B is re-offered.
	aKey2 := aKey
	aKey2.Tag = 2
	_, remA2, _ := ParseSDP(phoneSDP(a, ProtoSRTP, "a=sendonly\r\na=crypto:"+aKey2.Marshal()+"\r\n"))
	ansA2, err := call.Reanswer(ctx, A, remA2, SRTPRequired, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(*ansA2.Crypto, *ansA.Crypto) || ansA2.Crypto.Tag != 2 {
		t.Fatalf("Reanswer changed the box's key toward A (tag %d)", ansA2.Crypto.Tag)
	}
	offB2, err := call.Reoffer(B, SRTPRequired, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !sameKey(*offB2.Crypto, *offB.Crypto) {
		t.Fatal("Reoffer changed the box's key toward B")
	}
	if err := call.Answered(ctx, B, offB2, remB, SRTPRequired); err != nil {
		t.Fatal(err)
	}
	// B's old packet again (a replay), then a new one: only the new one
	// arrives, decrypted by A's unchanged context.
	b.send(call.LocalPort(B), oldCT)
	fresh := rtpPacket(t, 11, payload(11))
	freshCT, _ := encB.EncryptRTP(nil, fresh, nil)
	b.send(call.LocalPort(B), freshCT)
	if got, _ := a.recv(); !bytes.Equal(mustDecrypt(t, decA, got), fresh) {
		t.Fatal("replayed packet accepted after the re-offer, or the new one lost")
	}

	// A new peer gets fresh keys.
	if ans, err := call.Answer(ctx, A, remA2, SRTPRequired, 1, 3); err != nil || sameKey(*ans.Crypto, *ansA.Crypto) {
		t.Fatalf("Answer for a new peer kept the old key (%v)", err)
	}
	if off, err := call.Offer(B, SRTPRequired, 2, 3); err != nil || sameKey(*off.Crypto, *offB.Crypto) {
		t.Fatalf("Offer for a new peer kept the old key (%v)", err)
	}
}

func mustDecrypt(t *testing.T, dec interface {
	DecryptRTP(dst, encrypted []byte, header *rtp.Header) ([]byte, error)
}, b []byte) []byte {
	t.Helper()
	p, err := dec.DecryptRTP(nil, b, nil)
	if err != nil {
		t.Fatalf("decrypt: %v", err)
	}
	return p
}

// processCPU is the process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInjectStreams runs 100 real-time injections (the music in
// PCMU, SDES-SRTP legs: goroutine, 20 ms ticker, encode, encrypt, send)
// for about 2 s per iteration and reports the process CPU per packet
// sent and per stream (50 packets a second), timers and scheduling
// included.
func BenchmarkInjectStreams(b *testing.B) {
	const streams = 100
	r := newTestRelay(b)
	ph := newPhone(b, "127.0.0.1")
	pcm, _ := prompts.Default(prompts.MusicOnHold)
	var calls []*Call
	for i := range streams {
		call, err := r.NewCall(fmt.Sprint("bench-", i))
		if err != nil {
			b.Fatal(err)
		}
		defer call.Close()
		offer, _ := sdes.New(1, sdes.AES128CMSHA1_80)
		keys, _, _ := AnswerSDES([]string{offer.Marshal()}, sdes.Suites())
		p := ph.peer()
		p.SDES = &keys
		if err := call.SetPeer(context.Background(), B, p); err != nil {
			b.Fatal(err)
		}
		calls = append(calls, call)
	}
	var cpu time.Duration
	var sent uint64
	for range b.N {
		cpu0 := processCPU(b)
		var ins []*Injection
		for _, call := range calls {
			c, _ := codec.New("PCMU")
			pl, _ := prompts.NewPlayer(pcm, prompts.Rate, c, true)
			in, err := call.Inject(B, 0, 8000, pl)
			if err != nil {
				b.Fatal(err)
			}
			ins = append(ins, in)
		}
		time.Sleep(2 * time.Second) // real time is what is measured
		for _, in := range ins {
			in.Stop()
		}
		cpu += processCPU(b) - cpu0
	}
	for _, call := range calls {
		sent += call.Stats().Legs[B].Injected
	}
	// Per packet sent, as streams start and stop one after the other.
	perPacket := float64(cpu.Nanoseconds()) / float64(sent)
	b.ReportMetric(perPacket/1000, "cpu-µs/packet")
	b.ReportMetric(50*perPacket/1e7, "cpu-%/stream")
}

// TestInjectDTLS: an injection to a DTLS-SRTP leg is encrypted with the
// keys of its handshake; the phone's own context decrypts it.
func TestInjectDTLS(t *testing.T) {
	r := newTestRelay(t)
	call, err := r.NewCall("inject-dtls")
	if err != nil {
		t.Fatal(err)
	}
	defer call.Close()
	ctx := context.Background()
	a := newDTLSPhone(t, call.LocalPort(A))
	acert, afp, err := NewDTLSCertificate()
	if err != nil {
		t.Fatal(err)
	}
	pa := a.peer()
	pa.DTLS = &DTLSParams{Fingerprint: afp}
	if err := call.SetPeer(ctx, A, pa); err != nil {
		t.Fatal(err)
	}
	conn, err := a.handshake(acert, r.fp)
	if err != nil {
		t.Fatal("client handshake:", err)
	}
	defer conn.Close()
	done, herr := call.DTLSDone(A)
	<-done
	if herr() != nil {
		t.Fatal(herr())
	}
	state, _ := conn.ConnectionState()
	sp, _ := conn.SelectedSRTPProtectionProfile()
	prof, err := srtpProfile(sp)
	if err != nil {
		t.Fatal(err)
	}
	sc := srtp.Config{Profile: prof}
	if err := sc.ExtractSessionKeysFromDTLS(&state, true); err != nil {
		t.Fatal(err)
	}
	dec, _ := srtp.CreateContext(sc.Keys.RemoteMasterKey, sc.Keys.RemoteMasterSalt, prof, srtp.SRTPReplayProtection(64))
	in, err := call.Inject(A, 9, 8000, &countingSource{n: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Stop()
	for i := range 5 {
		p, err := dec.DecryptRTP(nil, a.recvMedia(), nil)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		var pkt rtp.Packet
		if err := pkt.Unmarshal(p); err != nil || pkt.PayloadType != 9 || int(pkt.Payload[0]) != i+1 {
			t.Fatalf("packet %d: %v %+v", i, err, pkt.Header)
		}
	}
}
