package call

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// srtpSDP is a phone's SDP on proto; with keys it carries an a=crypto
// (tag, suite as given), with fingerprint the DTLS-SRTP attributes.
func srtpSDP(t testing.TB, port int, proto string, tag int, suite string, fingerprint bool) string {
	t.Helper()
	s := "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		fmt.Sprintf("m=audio %d %s 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n", port, proto)
	if suite != "" {
		key := make([]byte, 30)
		_, _ = rand.Read(key)
		s += fmt.Sprintf("a=crypto:%d %s inline:%s\r\n", tag, suite, base64.StdEncoding.EncodeToString(key))
	}
	if fingerprint {
		fp := make([]string, 32)
		for i := range fp {
			fp[i] = fmt.Sprintf("%02X", i*7%256)
		}
		s += "a=fingerprint:sha-256 " + strings.Join(fp, ":") + "\r\na=setup:active\r\n"
	}
	return s
}

// TestCalleeSRTP: a callee phone configured "SRTP mandatory" (it answers
// 488 unless offered RTP/SAVP with a key it can use) is offered RTP/SAVP
// when the caller's leg is encrypted (SDES or DTLS-SRTP), and best-effort
// keys on RTP/AVP when the caller's is not.
func TestCalleeSRTP(t *testing.T) {
	tests := []struct {
		name       string
		callerSDP  func(t testing.TB) string
		firstProto string // offered first (DTLS-SRTP to a DTLS caller's callee)
		wantProto  string
		wantCode   int // the caller's final answer
	}{
		{"SDES caller", func(t testing.TB) string { return srtpSDP(t, 6000, "RTP/SAVP", 1, "AES_CM_128_HMAC_SHA1_80", false) }, "RTP/SAVP", "RTP/SAVP", 200},
		{"DTLS caller", func(t testing.TB) string { return srtpSDP(t, 6000, "UDP/TLS/RTP/SAVP", 0, "", true) }, media.ProtoDTLS, "RTP/SAVP", 200},
		{"plain caller", func(t testing.TB) string { return sdpBody(6000, "sendrecv") }, "RTP/AVP", "RTP/AVP", 488},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t)
			caller, callee := newPhone(t, "101"), newPhone(t, "102")
			h.dir.set("102", callee.addr)
			offers := make(chan media.Remote, 4)
			callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				_, rem, err := media.ParseSDP(req.Body())
				if err != nil {
					_ = d.Respond(400, "Bad SDP", nil)
					return
				}
				offers <- rem
				// SRTP mandatory: RTP/SAVP with a usable key, else 488.
				if rem.Proto != media.ProtoSRTP || len(rem.Crypto) == 0 {
					_ = d.Respond(488, "Not Acceptable Here", nil)
					return
				}
				cr, err := sdes.Parse(rem.Crypto[0])
				if err != nil {
					_ = d.Respond(488, "Not Acceptable Here", nil)
					return
				}
				_ = d.Respond(200, "OK", []byte(srtpSDP(t, 7000, media.ProtoSRTP, cr.Tag, string(cr.Suite), false)),
					sip.NewHeader("Content-Type", "application/sdp"))
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			hp := strings.Split(h.addr, ":")
			var port int
			fmt.Sscan(hp[1], &port)
			from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
			from.Params.Add("tag", sip.GenerateTagN(10))
			d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: hp[0], Port: port},
				[]byte(tc.callerSDP(t)), from, sip.NewHeader("Content-Type", "application/sdp"))
			if err != nil {
				t.Fatal(err)
			}
			err = d.WaitAnswer(ctx, sipgo.AnswerOptions{})
			got := 200
			var e *sipgo.ErrDialogResponse
			if errors.As(err, &e) {
				got = e.Res.StatusCode
			} else if err != nil {
				t.Fatal(err)
			}
			var offer media.Remote
			for i := 0; len(offers) > 0; i++ {
				offer = <-offers
				if i == 0 && offer.Proto != tc.firstProto {
					t.Fatalf("callee first offered %s, want %s", offer.Proto, tc.firstProto)
				}
			}
			if offer.Proto != tc.wantProto || len(offer.Crypto) != 1 {
				t.Fatalf("callee offered %s with %d a=crypto, want %s with one", offer.Proto, len(offer.Crypto), tc.wantProto)
			}
			if got != tc.wantCode {
				t.Fatalf("caller got %d, want %d", got, tc.wantCode)
			}
			if got == 200 {
				if _, ans, err := media.ParseSDP(d.InviteResponse.Body()); err != nil || !ans.Secure() {
					t.Fatalf("caller's answer not encrypted: %+v %v", ans, err)
				}
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				if err := d.Bye(ctx); err != nil {
					t.Fatal(err)
				}
			}
			rec := waitEnded(t, h).rec
			if got == 200 && !rec.SRTPCallee {
				t.Fatalf("CDR says the callee's leg was not SRTP: %+v", rec)
			}
			h.noStateLeft(t, false)
		})
	}
}

// An encrypted caller reaching a callee without SRTP: the upgraded RTP/SAVP
// offer is refused with 488, so the box offers once more best effort
// (RTP/AVP) and the call connects, SRTP on the caller's leg only.
func TestCalleeWithoutSRTPFallsBack(t *testing.T) {
	h := startHarness(t)
	caller, callee := newPhone(t, "101"), newPhone(t, "102")
	h.dir.set("102", callee.addr)
	offers := make(chan media.Remote, 2)
	callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
		_, rem, err := media.ParseSDP(req.Body())
		if err != nil {
			_ = d.Respond(400, "Bad SDP", nil)
			return
		}
		offers <- rem
		if rem.Proto != "RTP/AVP" { // a phone that knows plain RTP only
			_ = d.Respond(488, "Not Acceptable Here", nil)
			return
		}
		_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hp := strings.Split(h.addr, ":")
	var port int
	fmt.Sscan(hp[1], &port)
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
	from.Params.Add("tag", sip.GenerateTagN(10))
	d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: hp[0], Port: port},
		[]byte(srtpSDP(t, 6000, "RTP/SAVP", 1, "AES_CM_128_HMAC_SHA1_80", false)), from, sip.NewHeader("Content-Type", "application/sdp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{}); err != nil {
		t.Fatalf("caller: %v", err)
	}
	first, second := <-offers, <-offers
	if first.Proto != media.ProtoSRTP || second.Proto != "RTP/AVP" {
		t.Fatalf("callee offers %s then %s, want RTP/SAVP then RTP/AVP", first.Proto, second.Proto)
	}
	if _, ans, err := media.ParseSDP(d.InviteResponse.Body()); err != nil || !ans.Secure() {
		t.Fatalf("caller's answer not encrypted: %+v %v", ans, err)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	rec := waitEnded(t, h).rec
	if !rec.SRTPCaller || rec.SRTPCallee {
		t.Fatalf("CDR SRTP caller/callee = %v/%v, want true/false", rec.SRTPCaller, rec.SRTPCallee)
	}
	h.noStateLeft(t, false)
}
