//go:build !testhook

package main

import (
	"time"

	"github.com/edgepbx/edgepbx/init/netconf"
	"github.com/edgepbx/edgepbx/init/update"
)

// netRevertAfter is the network confirmation window: always 120 s in
// production builds.
func netRevertAfter(*box) time.Duration { return netconf.DefaultRevertAfter }

// trialTimes are a trial boot's N minutes healthy and its deadline:
// always the defaults in production builds.
func trialTimes(*box) (healthyFor, deadline time.Duration) {
	return update.DefaultHealthyFor, update.DefaultTrialDeadline
}

// testDaemonArgs are no extra edgepbxd flags in production builds.
func testDaemonArgs(*box) []string { return nil }

// startTestHook does nothing in production builds: there is no console
// command path at all (see testhook.go, built only with -tags testhook).
func startTestHook(*box) {}
