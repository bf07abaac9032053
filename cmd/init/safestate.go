package main

import (
	"strings"

	"github.com/edgepbx/edgepbx/init/reset"
)

// maxReason bounds the reason shown on the console and in the banner: it
// is edgepbxd's own output, so a compromised daemon cannot flood the
// console through it.
const maxReason = 300

// stayDownReason picks what edgepbxd said last before it exited 125 (its
// "edgepbxd: <error>" line, written after the structured log line), from
// the supervisor's ring of its output.
func stayDownReason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if r, ok := strings.CutPrefix(lines[i], daemonName+": "); ok && strings.TrimSpace(r) != "" {
			r = strings.TrimSpace(r)
			if len(r) > maxReason {
				r = r[:maxReason] + "…"
			}
			return r
		}
	}
	return "exited 125 without saying why (see its output above)"
}

// safeStateChoices are the lines PID 1 prints when edgepbxd stays down: a
// damaged store is never replaced by an empty one, so the owner chooses.
func safeStateChoices() []string {
	return []string{
		"nothing on " + dataDir + " was changed, and the box will not start with an empty store. Choices:",
		"  1. factory reset: type " + confirmWord + " and Enter on this console (or boot with " + reset.CmdlineFlag +
			", or hold the power button " + buttonHold.String() + " at boot): erases the keys and all data; the box comes up unclaimed",
		"  2. restore a backup: after the factory reset, claim the box with its new setup code and restore the backup" +
			" (System page, Backups; or edgepbx backup restore)",
		"  or power off (ctrl-alt-del reboots) and have the disk inspected: it is left as it is",
	}
}

// enterSafeState runs when edgepbxd exits 125 (a damaged store, a store
// from newer firmware, a sealed key that does not open): PID 1 stays in
// charge, says why and what can be done, keeps the watchdog quiet (a
// reset would only repeat the failure) and offers the factory reset on
// the console.
func (b *box) enterSafeState() {
	reason := stayDownReason(b.sup.Output(daemonName))
	b.health.stayDown("stays down: " + reason)
	b.say("SAFE STATE: %s stopped and stays down: %s", daemonName, reason)
	for _, l := range safeStateChoices() {
		b.say("%s", l)
	}
	select {
	case b.health.onChange <- struct{}{}: // the banner shows it too
	default:
	}
	go func() {
		for {
			line, err := b.consoleLine(b.ctx)
			if err != nil {
				return
			}
			if line != confirmWord {
				if line != "" {
					b.say("SAFE STATE: type %s to factory reset; anything else is ignored", confirmWord)
				}
				continue
			}
			b.say("FACTORY RESET confirmed on the console")
			select {
			case b.resetReq <- "safe state, confirmed on the console":
			default:
			}
			return
		}
	}()
}
