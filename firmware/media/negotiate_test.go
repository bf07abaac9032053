package media

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/media/sdes"
)

func phoneSDP(p *phone, proto, extra string) []byte {
	return []byte(fmt.Sprintf("v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d %s 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtcp-mux\r\n%s", p.addr().Port(), proto, extra))
}

// The B2BUA's sequence: A's offer → Answer(A); Offer(B) → B's answer →
// Answered(B); then SRTP from A arrives as plain RTP at B.
func TestNegotiateFlow(t *testing.T) {
	tests := []struct {
		name     string
		polB     Policy
		bProto   string
		bKeys    bool // B's answer carries a=crypto
		wantErr  error
		bSecured bool
	}{
		{"plain callee, optional", SRTPOptional, ProtoRTP, false, nil, false},
		{"best-effort callee takes the keys", SRTPOptional, ProtoRTP, true, nil, true},
		{"plain callee, required", SRTPRequired, ProtoRTP, false, ErrSRTPRequired, false},
		{"srtp callee", SRTPRequired, ProtoSRTP, true, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t)
			a, b := newPhone(t, "127.0.0.1"), newPhone(t, "127.0.0.1")
			call, err := r.NewCall("neg")
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			ctx := context.Background()
			aKey, _ := sdes.New(3, sdes.AEADAES128GCM)
			_, remA, err := ParseSDP(phoneSDP(a, ProtoSRTP, "a=crypto:"+aKey.Marshal()+"\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			ansA, err := call.Answer(ctx, A, remA, SRTPRequired, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			offB, err := call.Offer(B, tc.polB, 2, 1)
			if err != nil {
				t.Fatal(err)
			}
			body, err := Rewrite(remA, offB)
			// Required: RTP/SAVP; optional: the key on RTP/AVP (best effort).
			wantProto := "RTP/SAVP"
			if tc.polB == SRTPOptional {
				wantProto = "RTP/AVP"
			}
			if err != nil || !strings.Contains(string(body), "m=audio "+fmt.Sprint(offB.RTPPort)+" "+wantProto+" ") ||
				!strings.Contains(string(body), "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:") {
				t.Fatalf("offer to B: %v\n%s", err, body)
			}
			_, offerAtB, err := ParseSDP(body)
			if err != nil {
				t.Fatal(err)
			}
			var bKey sdes.Crypto
			extra := ""
			if tc.bKeys {
				bKey, _ = sdes.New(offB.Crypto.Tag, offB.Crypto.Suite)
				extra = "a=crypto:" + bKey.Marshal() + "\r\n"
			}
			_, remB, err := ParseSDP(phoneSDP(b, tc.bProto, extra))
			if err != nil {
				t.Fatal(err)
			}
			err = call.Answered(ctx, B, offB, remB, tc.polB)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Answered: %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			ansBody, err := Rewrite(remB, ansA)
			if err != nil || !strings.Contains(string(ansBody), "a=crypto:3 AEAD_AES_128_GCM") {
				t.Fatalf("answer to A: %v\n%s", err, ansBody)
			}
			if call.Secured(B) != tc.bSecured || !call.Secured(A) {
				t.Fatal("Secured() disagrees with the negotiation")
			}
			enc, _ := srtpPair(t, aKey, *ansA.Crypto)
			plain := rtpPacket(t, 77, payload(1))
			ct, _ := enc.EncryptRTP(nil, plain, nil)
			a.send(call.LocalPort(A), ct)
			got, _ := b.recv()
			if tc.bSecured {
				_, dec := srtpPair(t, bKey, *offerCrypto(t, offerAtB))
				if got, err = dec.DecryptRTP(nil, got, nil); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, plain) {
				t.Fatal("media did not arrive intact")
			}
		})
	}
}

func offerCrypto(t *testing.T, r Remote) *sdes.Crypto {
	c, err := sdes.Parse(r.Crypto[0])
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestAnswerBestEffort: keys offered on RTP/AVP are taken when usable and
// answered on RTP/AVP; unusable ones fall back to plain RTP unless SRTP is
// required.
func TestAnswerBestEffort(t *testing.T) {
	good, _ := sdes.New(1, sdes.AES128CMSHA1_80)
	tests := []struct {
		name      string
		crypto    string
		pol       Policy
		wantKeys  bool
		wantError bool
	}{
		{"usable keys", good.Marshal(), SRTPOptional, true, false},
		{"unknown suite, optional", "1 FOO_BAR inline:AAAA", SRTPOptional, false, false},
		{"unknown suite, required", "1 FOO_BAR inline:AAAA", SRTPRequired, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t)
			a := newPhone(t, "127.0.0.1")
			call, err := r.NewCall("be")
			if err != nil {
				t.Fatal(err)
			}
			defer call.Close()
			_, rem, err := ParseSDP(phoneSDP(a, ProtoRTP, "a=crypto:"+tc.crypto+"\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			l, err := call.Answer(context.Background(), A, rem, tc.pol, 1, 1)
			if (err != nil) != tc.wantError {
				t.Fatalf("Answer: %v", err)
			}
			if err != nil {
				return
			}
			body, err := Rewrite(rem, l)
			if err != nil || !strings.Contains(string(body), " RTP/AVP ") || strings.Contains(string(body), "a=crypto") != tc.wantKeys {
				t.Fatalf("answer: %v\n%s", err, body)
			}
			if call.Secured(A) != tc.wantKeys {
				t.Fatal("Secured() disagrees with the answer")
			}
		})
	}
}
