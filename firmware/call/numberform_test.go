package call

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/dialplan"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestTrunkGetsClassifiedNumber: what a trunk receives in the
// Request-URI is the number the dial plan classified. A phone that hides
// an international or premium number behind a GSM feature code
// (*31#, #31#, sent as %23) is refused before any INVITE reaches the
// trunk; a national number with a code is refused unless the route lists
// the code; full-width digits and separators reach the trunk as plain
// ASCII digits; emergency numbers go out with the code removed.
func TestTrunkGetsClassifiedNumber(t *testing.T) {
	tests := []struct {
		name, dialled string
		codes         []string // route's FeatureCodes
		code          int      // answer to the caller
		trunkUser     string   // Request-URI user at the trunk ("": no INVITE)
	}{
		{"international behind *31#", "*31%230044201234567", nil, 403, ""},
		{"international behind raw *31#", "*31#0044201234567", nil, 403, ""},
		{"satellite behind raw #31#", "#31#00882123456", nil, 403, ""},
		{"satellite behind #31#", "%2331%2300882123456", nil, 403, ""},
		{"international behind an allowed code", "*31%230044201234567", []string{"*31#"}, 403, ""},
		{"national behind *31#", "*31%23030123456", nil, 403, ""},
		{"national behind an allowed code", "*31%23030123456", []string{"*31#"}, 486, "*31%23030123456"},
		{"trunk prefix after +49", "+490044201234567", nil, 404, ""},
		{"full-width national", "%EF%BC%90%EF%BC%93%EF%BC%90-123%20456", nil, 486, "030123456"},
		{"tel parameters dropped", "030123456;phone-context=+44", nil, 486, "030123456"},
		{"emergency behind #31#", "%2331%23112", nil, 486, "112"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := startHarness(t, func(_ *Config, p *dialplan.Plan) {
				p.Routes[0].FeatureCodes = tc.codes
			})
			caller, trunk := newPhone(t, "101"), newPhone(t, "trunk")
			h.dir.setTrunk("itsp", trunk.addr)
			trunk.setOnInvite(func(req *sip.Request, tx sip.ServerTransaction, d *sipgo.DialogServerSession) {
				_ = d.Respond(486, "Busy Here", nil)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // generous: -race on a loaded host
			defer cancel()
			d, err := caller.dial(ctx, h, tc.dialled)
			if err != nil {
				t.Fatal(err)
			}
			err = d.WaitAnswer(ctx, sipgo.AnswerOptions{})
			var e *sipgo.ErrDialogResponse
			if !errors.As(err, &e) || e.Res.StatusCode != tc.code {
				t.Fatalf("want %d, got %v", tc.code, err)
			}
			waitEnded(t, h)
			trunk.mu.Lock()
			invites := trunk.invites
			trunk.mu.Unlock()
			switch {
			case tc.trunkUser == "" && len(invites) != 0:
				t.Fatalf("trunk got %s", invites[0].Recipient.String())
			case tc.trunkUser != "" && (len(invites) != 1 || invites[0].Recipient.User != tc.trunkUser):
				t.Fatalf("trunk got %d INVITEs %v, want user %q", len(invites), invites, tc.trunkUser)
			}
		})
	}
}
