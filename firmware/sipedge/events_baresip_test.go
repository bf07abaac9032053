package sipedge

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/media/baresiptest"
)

// TestBaresipMWI: Debian's baresip with its mwi module registers, then
// subscribes to its own message-summary by itself; when voicemail reports
// new messages the phone gets the NOTIFY (baresip 1.0 prints each MWI body
// it accepts; its ctrl_tcp has no event for it), and the box's NOTIFYs
// were all answered 200.
func TestBaresipMWI(t *testing.T) {
	bin := baresiptest.Need(t, "mwi")
	es := startEvents(t, nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ph := baresiptest.Start(ctx, t, bin, baresiptest.Config{Name: "101", Tone: 440, Modules: []string{"mwi"},
		Accounts: []string{fmt.Sprintf("<sip:101@127.0.0.1:%d;transport=udp>;auth_pass=%s;regint=300", es.udp.Port, testPassword)}})
	ph.WaitRegistered(ctx, t, 1)
	waitLong(t, "baresip's message-summary subscription and its first NOTIFY", func() bool {
		return es.ev.LenOf("101") == 1 && es.ev.Counters().Notifies >= 1 && es.ev.Backlog() == 0
	})
	waitLong(t, "baresip to show the first NOTIFY", func() bool { return strings.Contains(ph.Log(), "Messages-Waiting: no") })
	es.ev.MailboxChanged("101", 3, 0)
	waitLong(t, "baresip to show the new messages", func() bool {
		return strings.Contains(ph.Log(), "Messages-Waiting: yes\r\nMessage-Account: sip:101@127.0.0.1\r\nVoice-Message: 3/0 (0/0)") ||
			strings.Contains(ph.Log(), "Messages-Waiting: yes\nMessage-Account: sip:101@127.0.0.1\nVoice-Message: 3/0 (0/0)")
	})
	waitLong(t, "the NOTIFY's answer", func() bool { return es.ev.Backlog() == 0 })
	if c := es.ev.Counters(); c.Notifies != 2 || c.NotifyFailed != 0 || c.Subscribed != 1 {
		t.Fatalf("counters %+v", c)
	}
}
