package call

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
)

// TestTrunkDigestAuth: a sipgo trunk challenges the box's INVITE (401 or
// 407); the box retries once with the trunk's credentials. The trunk
// checks the digest response itself; a wrong password or no credentials
// fail the call with 503 after at most one retry.
func TestTrunkDigestAuth(t *testing.T) {
	const realm, nonce = "itsp.example", "f84f1cec41e6cbe5aea9c8e88d359"
	tests := []struct {
		name       string
		code       int    // the trunk's challenge
		user, pass string // the box's credentials ("" user: none)
		wantCode   int    // the caller's final answer
		wantInv    int    // INVITEs the trunk saw
	}{
		{"401 answered", 401, "acct1", "s3cret", 200, 2},
		{"407 answered", 407, "acct1", "s3cret", 200, 2},
		{"wrong password", 401, "acct1", "wrong", 503, 2},
		{"no credentials", 407, "", "", 503, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t)
			caller, trunk := newPhone(t, "101"), newPhone(t, "itsp")
			h.dir.setTrunk("itsp", trunk.addr)
			if tc.user != "" {
				h.dir.setCreds("itsp", tc.user, tc.pass)
			}
			chName, authName := "WWW-Authenticate", "Authorization"
			if tc.code == 407 {
				chName, authName = "Proxy-Authenticate", "Proxy-Authorization"
			}
			chal := &digest.Challenge{Realm: realm, Nonce: nonce, Algorithm: "MD5", QOP: []string{"auth"}}
			trunk.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				ah := req.GetHeader(authName)
				if ah == nil || !validDigest(ah.Value(), chal, req, "acct1", "s3cret") {
					res := sip.NewResponseFromRequest(req, tc.code, "Unauthorized", nil)
					res.AppendHeader(sip.NewHeader(chName, chal.String()))
					_ = tx.Respond(res)
					return
				}
				_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d, err := caller.dial(ctx, h, "030123456")
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
			if got != tc.wantCode {
				t.Fatalf("caller got %d, want %d", got, tc.wantCode)
			}
			trunk.mu.Lock()
			invs := append([]*sip.Request(nil), trunk.invites...)
			trunk.mu.Unlock()
			if len(invs) != tc.wantInv {
				t.Fatalf("trunk saw %d INVITEs, want %d", len(invs), tc.wantInv)
			}
			if len(invs) == 2 {
				a, b := invs[0], invs[1]
				if a.CallID().Value() != b.CallID().Value() || b.CSeq().SeqNo != a.CSeq().SeqNo+1 || viaBranch(a) == viaBranch(b) {
					t.Fatalf("retry is not the same call with a new transaction:\n%s\n%s", a, b)
				}
				if fa, _ := a.From().Params.Get("tag"); fa != fromTag(b) {
					t.Fatal("retry changed the From tag")
				}
			}
			if got == 200 {
				if err := d.Ack(ctx); err != nil {
					t.Fatal(err)
				}
				if err := d.Bye(ctx); err != nil {
					t.Fatal(err)
				}
			}
			rec := waitEnded(t, h).rec
			if (got == 200) != (rec.Result == cdr.Answered) || rec.Trunk != "itsp" {
				t.Fatalf("CDR %+v", rec)
			}
			h.noStateLeft(t, false)
		})
	}
}

// validDigest is the trunk's check of the box's answer to chal.
func validDigest(v string, chal *digest.Challenge, req *sip.Request, user, pass string) bool {
	cred, err := digest.ParseCredentials(v)
	if err != nil || cred.Username != user || cred.Realm != chal.Realm || cred.Nonce != chal.Nonce || cred.URI != req.Recipient.Addr() {
		return false
	}
	want, err := digest.Digest(chal, digest.Options{Method: string(req.Method), URI: cred.URI, Username: user, Password: pass, Cnonce: cred.Cnonce, Count: cred.Nc})
	return err == nil && want.Response == cred.Response
}

func viaBranch(r *sip.Request) string { v, _ := r.Via().Params.Get("branch"); return v }

func fromTag(r *sip.Request) string { v, _ := r.From().Params.Get("tag"); return v }
