package sipedge

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/pbxconfig"
	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestSipgoClientSHA256 registers with sipgo's client, whose digest code
// (icholy/digest) is independent of ours, using the SHA-256 challenge.
func TestSipgoClientSHA256(t *testing.T) {
	s := startServer(t, func(c *pbxconfig.SIP) { c.Algorithms = []string{AlgSHA256} })
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("sipgo-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	aor := sip.Uri{Scheme: "sip", User: "103", Host: "127.0.0.1"}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: s.udp.Port})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: "t1"}}})
	req.AppendHeader(sip.NewHeader("Contact", "<sip:103@127.0.0.1:5099>"))
	req.AppendHeader(sip.NewHeader("Expires", "300"))
	res, err := cl.Do(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 401 || !strings.Contains(res.GetHeader("WWW-Authenticate").Value(), "algorithm=SHA-256") {
		t.Fatalf("want a SHA-256 challenge, got %s", res)
	}
	res, err = cl.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: "103", Password: testPassword})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("SHA-256 digest: %s", res)
	}
	if b := s.Location().Lookup(s.now(), "103"); len(b) != 1 || b[0].Contact != "sip:103@127.0.0.1:5099" {
		t.Fatalf("bindings: %+v", b)
	}
}

// TestTrunkRegistration: the box registers to an "ITSP" (a second edge on
// loopback) with digest, using the sealed trunk password.
func TestTrunkRegistration(t *testing.T) {
	itsp := startServer(t, nil)
	box := startServerWith(t, func(c *pbxconfig.SIP) {
		c.Trunks = []pbxconfig.Trunk{{Name: "itsp", Register: &pbxconfig.TrunkRegistration{
			Registrar: itsp.udp.String(), Transport: "udp", Username: "102", Domain: "127.0.0.1", Expires: 10 * time.Minute,
		}}}
	}, func(db *store.DB) {
		if err := SetTrunkPassword(db, "itsp", testPassword); err != nil {
			t.Fatal(err)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for len(itsp.Location().Lookup(itsp.now(), "102")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("trunk never registered; box log: %+v", box.log.Recent(10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	found := false
	for !found && time.Now().Before(deadline) {
		for _, e := range box.log.Recent(10) {
			found = found || (e.Kind == logs.KindTrunkReg && e.User == "itsp")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !found {
		t.Fatal("no trunk_registered event")
	}
}
