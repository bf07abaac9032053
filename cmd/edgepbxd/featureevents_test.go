package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/features"
	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// TestDevModePresenceFollowsFeatures: the event server and the call
// features are one product. Who may watch whose presence is the admin's
// pickup groups (a member of "sales" may, an outsider gets the same 403 as
// for anything else), and an extension's DND set by feature code reaches
// the watcher's phone as a presence NOTIFY.
func TestDevModePresenceFollowsFeatures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fb := startFeatureBox(t, ctx) // pickup group "sales": 201, 202
	var ext struct{ User, Password string }
	if err := json.Unmarshal(fb.api.must(201, "POST", "/api/v1/extensions", admin.ExtensionRequest{User: "210"}), &ext); err != nil || ext.Password == "" {
		t.Fatalf("create 210: %v", err)
	}

	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := conn.LocalAddr().(*net.UDPAddr).Port
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("presence-wiring-test"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	notifies := make(chan string, 16)
	srv.OnNotify(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
		notifies <- string(req.Body())
	})
	go func() { _ = srv.ServeUDP(conn) }()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientPort(port))
	if err != nil {
		t.Fatal(err)
	}
	subscribe := func(target string) int {
		t.Helper()
		req := sip.NewRequest(sip.SUBSCRIBE, sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1", Port: fb.port})
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "210", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: "p" + target}}})
		req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: target, Host: "127.0.0.1"}})
		req.AppendHeader(sip.NewHeader("Contact", fmt.Sprintf("<sip:210@127.0.0.1:%d>", port)))
		req.AppendHeader(sip.NewHeader("Event", "presence"))
		req.AppendHeader(sip.NewHeader("Accept", "application/pidf+xml"))
		req.AppendHeader(sip.NewHeader("Expires", "600"))
		first, err := cl.Do(ctx, req)
		if err != nil || first == nil || first.StatusCode != 401 {
			t.Fatalf("SUBSCRIBE %s without credentials: %v %v", target, first, err)
		}
		second, err := cl.DoDigestAuth(ctx, req, first, sipgo.DigestAuth{Username: "210", Password: ext.Password})
		if err != nil || second == nil {
			t.Fatalf("SUBSCRIBE %s with digest: %v", target, err)
		}
		return second.StatusCode
	}
	// Not in a group with 201 yet: refused like an unknown extension.
	if code := subscribe("201"); code != 403 {
		t.Fatalf("210 watching 201 outside any common group: %d, want 403", code)
	}
	if code := subscribe("9999"); code != 403 {
		t.Fatalf("210 watching an unknown extension: %d, want 403", code)
	}
	fb.cfg.Features.PickupGroups = []features.PickupGroup{{Name: "sales", Members: []string{"201", "202", "210"}}}
	fb.saveConfig()
	if code := subscribe("201"); code != 200 {
		t.Fatalf("210 watching 201 in the same pickup group: %d, want 200", code)
	}
	if code := subscribe("203"); code != 403 {
		t.Fatalf("210 watching 203 of no common group: %d, want 403", code)
	}
	waitNote := func(want string) {
		t.Helper()
		for {
			select {
			case body := <-notifies:
				if strings.Contains(body, "<note>"+want+"</note>") {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no presence NOTIFY with note %q\n%s", want, fb.p.output())
			}
		}
	}
	waitNote("Available")
	// 201 turns DND on from its phone; the watcher sees it, then off again.
	if c := fb.code(ctx, "201", "*78"); c != 200 {
		t.Fatalf("*78: %d", c)
	}
	waitNote("Do not disturb")
	if c := fb.code(ctx, "201", "*79"); c != 200 {
		t.Fatalf("*79: %d", c)
	}
	waitNote("Available")
}
