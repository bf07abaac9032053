package media

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/srtp/v3"
)

// TestDTLSStartsWithTheAnswer: a DTLS leg answered with Answer starts its
// handshake only once the box's answer is sent (AnswerSent) or, as DTLS
// server, when the peer's ClientHello comes; its timeout counts from
// there. The answer is held back for several handshake timeouts, as while
// a callee rings; the handshake then succeeds and SRTP is decrypted. A
// peer that never starts is given up on: HandshakeTimeout after the
// answer, or HandshakeWait when the answer is never sent.
func TestDTLSStartsWithTheAnswer(t *testing.T) {
	// Long enough for a handshake under -race on a loaded 2-core host
	// (150 ms was not), short enough to hold the answer for several.
	const timeout = 400 * time.Millisecond
	for _, tc := range []struct {
		name      string
		setup     string // the phone's offer
		early     bool   // EarlyAnswerSent is called first (a 183 with the answer)
		send      bool   // AnswerSent is called
		handshake bool   // the phone handshakes after the answer
		wantErr   bool
		wait      time.Duration // HandshakeWait
	}{
		{"box client", "actpass", false, true, true, false, time.Minute},
		{"box server", "active", false, true, true, false, time.Minute},
		{"box client, peer silent until the 2xx", "actpass", true, true, true, false, time.Minute},
		{"box server, peer silent until the 2xx", "active", true, true, true, false, time.Minute},
		{"box server, silent peer", "active", false, true, false, true, time.Minute},
		{"answer never sent", "actpass", false, false, false, true, 4 * timeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ports, err := NewPorts(42000, 42999)
			if err != nil {
				t.Fatal(err)
			}
			cert, fp, err := NewDTLSCertificate()
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewRelay(Config{Addr: localhost, Ports: ports, Pinholes: newRecordingPinholes(), Certificate: &cert,
				HandshakeTimeout: timeout, HandshakeWait: tc.wait})
			if err != nil {
				t.Fatal(err)
			}
			call, err := r.NewCall("start")
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			a := newDTLSPhone(t, call.LocalPort(A))
			b := newPhone(t, "127.0.0.1")
			acert, afp, _ := NewDTLSCertificate()
			sdp := "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
				fmt.Sprintf("m=audio %d UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n", a.addr().Port()) +
				"a=fingerprint:" + afp.String() + "\r\na=setup:" + tc.setup + "\r\n"
			_, rem, err := ParseSDP([]byte(sdp))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			loc, err := call.Answer(ctx, A, rem, SRTPRequired, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			if err := call.SetPeer(ctx, B, b.peer()); err != nil {
				t.Fatal(err)
			}
			if tc.early {
				call.EarlyAnswerSent(A)
			}
			// The callee rings for several handshake timeouts.
			time.Sleep(3 * timeout)
			select {
			case <-a.dtlsIn:
				if !tc.early {
					t.Fatal("the box sent a DTLS record before its answer")
				}
				// The phone ignores DTLS before the final answer.
				for len(a.dtlsIn) > 0 {
					<-a.dtlsIn
				}
			default:
			}
			done, herr := call.DTLSDone(A)
			select {
			case <-done:
				if !tc.wantErr || tc.send {
					t.Fatalf("handshake ended before the answer was sent: %v", herr())
				}
			default:
			}
			if tc.send {
				call.AnswerSent(A)
			}
			if !tc.handshake {
				<-done
				if herr() == nil {
					t.Fatal("a handshake without a peer succeeded")
				}
				t.Log(herr())
				if call.Stats().Legs[A].HandshakeFailures != 1 {
					t.Fatal("the failure was not counted")
				}
				return
			}
			var conn *dtls.Conn
			boxClient := loc.Setup == "active"
			if boxClient != (tc.setup == "actpass") {
				t.Fatalf("box answered a=setup:%s to %s", loc.Setup, tc.setup)
			}
			if boxClient {
				conn, err = dtls.Server(a, a.to, DTLSConfig(acert, fp))
			} else {
				conn, err = dtls.Client(a, a.to, DTLSConfig(acert, fp))
			}
			if err != nil {
				t.Fatal(err)
			}
			// pion's Close can block after a failed handshake: never let
			// it hang the test instead of failing it.
			defer func() {
				closed := make(chan struct{})
				go func() { conn.Close(); close(closed) }()
				select {
				case <-closed:
				case <-time.After(5 * time.Second):
					t.Error("the phone's DTLS connection did not close")
				}
			}()
			hctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := conn.HandshakeContext(hctx); err != nil {
				t.Fatal("phone's handshake:", err)
			}
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
			if err := sc.ExtractSessionKeysFromDTLS(&state, !boxClient); err != nil {
				t.Fatal(err)
			}
			enc, err := srtp.CreateContext(sc.Keys.LocalMasterKey, sc.Keys.LocalMasterSalt, prof)
			if err != nil {
				t.Fatal(err)
			}
			plain := rtpPacket(t, 4242, payload(5))
			ct, _ := enc.EncryptRTP(nil, plain, nil)
			a.send(call.LocalPort(A), ct)
			if got, _ := b.recv(); !bytes.Equal(got, plain) {
				t.Fatal("SRTP from the phone not decrypted")
			}
		})
	}
}
