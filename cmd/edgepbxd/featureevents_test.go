package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/features"
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

	ph := newEventPhone(t, fb.port, "210", ext.Password)
	subscribe := func(target string) int {
		t.Helper()
		return ph.subscribe(ctx, target, "presence", "application/pidf+xml").StatusCode
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
			case n := <-ph.notifies:
				if strings.Contains(string(n.Body()), "<note>"+want+"</note>") {
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
