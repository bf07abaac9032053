package call

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/cdr"
	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/edgepbx/edgepbx/firmware/media"
	"github.com/edgepbx/edgepbx/firmware/media/sdes"
	"github.com/edgepbx/edgepbx/firmware/mediaserver/codec"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// stagesHunt rings 102 for ring, then ends at 102's voicemail (as a
// forward on busy / no answer to voicemail does).
type stagesHunt struct {
	ring time.Duration
	n    int
}

func (h *stagesHunt) Next(o Outcome) (Stage, bool) {
	h.n++
	switch h.n {
	case 1:
		return Stage{Dests: []Dest{{Extension: "102"}}, Ring: h.ring}, true
	case 2:
		return Stage{App: dialplan.AppTarget(dialplan.AppVoicemail, "102")}, true
	}
	return Stage{}, false
}

type stagesHunter struct{ ring time.Duration }

func (s stagesHunter) Hunt(string, dialplan.Decision) Hunt { return &stagesHunt{ring: s.ring} }

// TestHandOverAfterRinging: an SRTP (SDES) caller rings 102, which sends
// early media (183 with SDP: the caller hears the branch through the
// relay) and then either rings past the stage's ring time or answers 486.
// The branch is CANCELled (no answer) or done (busy); the box answers the
// caller with the application: a 200 with a new SDP answer (new session
// version, the same relay address and key), the application opened with
// the reason, the caller's SRTP speech heard decoded, the application's
// tone received under the box's key, and a CDR of an application call.
func TestHandOverAfterRinging(t *testing.T) {
	tests := []struct {
		name       string
		busy       bool
		wantReason string
	}{
		{"no answer", false, ReasonNoAnswer},
		{"busy", true, ReasonBusy},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			apps := &testApps{app: &listenApp{started: make(chan struct{})}}
			h := startHarness(t, func(c *Config, _ *dialplan.Plan) {
				c.Apps = apps
				c.Hunter = stagesHunter{ring: 1500 * time.Millisecond}
			})
			h.dir.mu.Lock()
			h.dir.policy[Identity{Extension: "101"}] = media.SRTPRequired
			h.dir.mu.Unlock()
			caller, callee := newPhone(t, "101"), newPhone(t, "102")
			h.dir.setContacts("102", callee.addr)
			early, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer early.Close()
			cancels := make(chan struct{}, 1)
			callee.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				if tc.busy {
					_ = d.Respond(180, "Ringing", nil)
					time.Sleep(300 * time.Millisecond) // the caller rang a while
					_ = d.Respond(486, "Busy Here", nil)
					return
				}
				// Early media answering the box's SDES offer with its tag
				// and suite.
				_, off, err := media.ParseSDP(req.Body())
				if err != nil || len(off.Crypto) == 0 {
					_ = d.Respond(488, "Not Acceptable Here", nil)
					return
				}
				o, _ := sdes.Parse(off.Crypto[0])
				ans := srtpSDP(t, early.LocalAddr().(*net.UDPAddr).Port, "RTP/SAVP", o.Tag, string(o.Suite), false)
				tx.OnCancel(func(*sip.Request) { cancels <- struct{}{} })
				_ = d.Respond(183, "Session Progress", []byte(ans), sip.NewHeader("Content-Type", "application/sdp"))
				<-tx.Done()
			})

			conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			offer := srtpSDP(t, conn.LocalAddr().(*net.UDPAddr).Port, "RTP/SAVP", 1, "AES_CM_128_HMAC_SHA1_80", false)
			_, offered, err := media.ParseSDP([]byte(offer))
			if err != nil {
				t.Fatal(err)
			}
			mine, err := sdes.Parse(offered.Crypto[0])
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			host, hport, _ := net.SplitHostPort(h.addr)
			var pn int
			_, _ = fmt.Sscan(hport, &pn)
			from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "101", Host: "phone.invalid"}}
			from.Params.Add("tag", sip.GenerateTagN(10))
			d, err := caller.calls.Invite(ctx, sip.Uri{Scheme: "sip", User: "102", Host: host, Port: pn}, []byte(offer),
				from, sip.NewHeader("Content-Type", "application/sdp"))
			if err != nil {
				t.Fatal(err)
			}
			var early183 []byte
			var provisional []int
			err = d.WaitAnswer(ctx, sipgo.AnswerOptions{OnResponse: func(res *sip.Response) error {
				if res.StatusCode > 100 && res.StatusCode < 200 {
					provisional = append(provisional, res.StatusCode)
					if res.StatusCode == 183 {
						early183 = res.Body()
					}
				}
				return nil
			}})
			var re *sipgo.ErrDialogResponse
			if errors.As(err, &re) {
				t.Fatalf("caller got %d, want the application's 200\n", re.Res.StatusCode)
			} else if err != nil {
				t.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
			if len(provisional) == 0 {
				t.Fatal("the caller never heard the callee ring")
			}
			_, ans, err := media.ParseSDP(d.InviteResponse.Body())
			if err != nil || ans.Proto != media.ProtoSRTP || len(ans.Crypto) != 1 {
				t.Fatalf("answer %+v %v: want RTP/SAVP with a key", ans, err)
			}
			if !tc.busy {
				select {
				case <-cancels:
				case <-ctx.Done():
					t.Fatal("the ringing callee got no CANCEL")
				}
				// The early answer and the final one: same relay port and
				// key, a newer session version (the formats are the
				// application's now).
				_, ea, err := media.ParseSDP(early183)
				if err != nil || ea.RTPPort != ans.RTPPort || len(ea.Crypto) != 1 || ea.Crypto[0] != ans.Crypto[0] {
					t.Fatalf("early answer %+v %v, final %+v", ea, err, ans)
				}
				if ev, fv := sessionVersion(t, early183), sessionVersion(t, d.InviteResponse.Body()); fv <= ev {
					t.Fatalf("final answer's session version %d, early %d", fv, ev)
				}
			}
			theirs, err := sdes.Parse(ans.Crypto[0])
			if err != nil {
				t.Fatal(err)
			}
			prof, _ := mine.Suite.Profile()
			enc, err := srtp.CreateContext(mine.Key, mine.Salt, prof)
			if err != nil {
				t.Fatal(err)
			}
			dec, err := media.NewSRTPContext(theirs.Key, theirs.Salt, prof)
			if err != nil {
				t.Fatal(err)
			}
			box := &net.UDPAddr{IP: net.IP(ans.Addr.AsSlice()), Port: int(ans.RTPPort)}
			select {
			case <-apps.app.started:
			case <-ctx.Done():
				t.Fatal("the application never ran")
			}
			got := make(chan int, 1)
			go func() {
				ok := 0
				buf := make([]byte, 1500)
				_ = conn.SetReadDeadline(time.Now().Add(4 * time.Second))
				for {
					n, err := conn.Read(buf)
					if err != nil {
						got <- ok
						return
					}
					var hd rtp.Header
					if _, err := dec.DecryptRTP(nil, buf[:n], &hd); err == nil && hd.PayloadType == 0 {
						ok++
					}
				}
			}()
			ulaw, _ := codec.New("PCMU")
			pcm := make([]int16, 160)
			for i := range 60 {
				for j := range pcm {
					pcm[j] = int16(8000 * math.Sin(2*math.Pi*1000*float64(i*160+j)/8000))
				}
				pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: uint16(100 + i), Timestamp: uint32(i * 160), SSRC: 0xabc},
					Payload: ulaw.Encode(nil, pcm)}
				raw, _ := pkt.Marshal()
				out, err := enc.EncryptRTP(nil, raw, nil)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := conn.WriteToUDP(out, box); err != nil {
					t.Fatal(err)
				}
				time.Sleep(20 * time.Millisecond) // real-time pacing, as a phone sends
			}
			if n := <-got; n < 20 {
				t.Errorf("%d SRTP packets from the application decrypted with the box's key", n)
			}
			a := apps.app
			a.mu.Lock()
			frames, loud, reason := a.frames, a.loud, a.caller.Reason
			a.mu.Unlock()
			if frames < 40 || loud < 40 {
				t.Errorf("application heard %d frames, %d loud, of 60 SRTP packets", frames, loud)
			}
			if reason != tc.wantReason {
				t.Errorf("application reason %q, want %q", reason, tc.wantReason)
			}
			if err := d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			e := waitEnded(t, h)
			if e.rec.Result != cdr.Answered || e.rec.Direction != string(dialplan.KindApp) || e.rec.To != "voicemail/102" ||
				e.rec.Dialled != "102" || !e.rec.SRTPCaller || e.rec.Cause != "caller BYE" {
				t.Fatalf("CDR %+v", e.rec)
			}
			apps.mu.Lock()
			opened := strings.Join(apps.opened, " ")
			apps.mu.Unlock()
			if opened != "voicemail/102/"+tc.wantReason {
				t.Errorf("opened %q", opened)
			}
			h.noStateLeft(t, true)
		})
	}
}

// sessionVersion is the o= line's version of an SDP body.
func sessionVersion(t *testing.T, body []byte) uint64 {
	t.Helper()
	for _, l := range strings.Split(string(body), "\n") {
		if f := strings.Fields(strings.TrimSpace(l)); len(f) >= 3 && strings.HasPrefix(f[0], "o=") {
			var v uint64
			if _, err := fmt.Sscan(f[2], &v); err == nil {
				return v
			}
		}
	}
	t.Fatalf("no o= version in %q", body)
	return 0
}
