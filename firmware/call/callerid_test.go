package call

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestCallerID: what the callee's leg shows of the caller. Calls out
// through a trunk present the extension's configured outbound number; only
// a trusted trunk gets P-Asserted-Identity; a caller asking for Privacy: id
// is anonymous in From (and the trusted trunk gets PAI with Privacy: id to
// enforce it); internal calls show the extension; a P-Asserted-Identity the
// phone sent itself never passes.
func TestCallerID(t *testing.T) {
	tests := []struct {
		name     string
		dialled  string
		shown    string // configured outbound caller ID of 101
		trusted  bool
		privacy  bool
		wantFrom string
		wantPAI  string
		wantPriv bool
	}{
		{"trunk, defaults", "030123456", "", false, false, "101", "", false},
		{"trunk, configured number", "030123456", "+4930555", false, false, "+4930555", "", false},
		{"trusted trunk", "030123456", "+4930555", true, false, "+4930555", "<sip:+4930555@127.0.0.1>", false},
		{"trusted trunk, privacy", "030123456", "+4930555", true, true, "anonymous", "<sip:+4930555@127.0.0.1>", true},
		{"untrusted trunk, privacy", "030123456", "+4930555", false, true, "anonymous", "", false},
		{"internal call", "102", "+4930555", true, false, "101", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t)
			caller, far := newPhone(t, "101"), newPhone(t, "far")
			h.dir.setTrunk("itsp", far.addr)
			h.dir.set("102", far.addr)
			h.dir.mu.Lock()
			if tc.shown != "" {
				h.dir.shown["101"] = tc.shown
			}
			h.dir.assert["itsp"] = tc.trusted
			h.dir.mu.Unlock()
			far.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				_ = d.Respond(200, "OK", []byte(sdpBody(7000, "sendrecv")), sip.NewHeader("Content-Type", "application/sdp"))
			})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			hs := []sip.Header{sip.NewHeader("P-Asserted-Identity", "<sip:forged@evil.invalid>")}
			if tc.privacy {
				hs = append(hs, sip.NewHeader("Privacy", "id"))
			}
			d, err := caller.dial(ctx, h, tc.dialled, hs...)
			d = connect(ctx, t, d, err)
			if err := d.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			waitEnded(t, h)
			far.mu.Lock()
			inv := far.invites[0]
			far.mu.Unlock()
			if u := inv.From().Address.User; u != tc.wantFrom {
				t.Fatalf("From user %q, want %q", u, tc.wantFrom)
			}
			if tc.privacy && (inv.From().Address.Host != "anonymous.invalid" || strings.Contains(inv.From().String(), "101")) {
				t.Fatalf("anonymous From leaks: %s", inv.From())
			}
			pai := ""
			if h := inv.GetHeader("P-Asserted-Identity"); h != nil {
				pai = h.Value()
			}
			if n := len(inv.GetHeaders("P-Asserted-Identity")); n > 1 || pai != tc.wantPAI {
				t.Fatalf("P-Asserted-Identity %q (%d headers), want %q", pai, n, tc.wantPAI)
			}
			if got := inv.GetHeader("Privacy") != nil; got != tc.wantPriv {
				t.Fatalf("Privacy header present %v, want %v", got, tc.wantPriv)
			}
			if strings.Contains(inv.String(), "forged") {
				t.Fatal("the phone's own P-Asserted-Identity passed")
			}
		})
	}
}
