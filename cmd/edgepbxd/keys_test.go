package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/admin"
	"github.com/edgepbx/edgepbx/firmware/license"
	"github.com/edgepbx/edgepbx/init/control"
)

// The dashboard says what an attacker with the disk gets, per protection.
func TestKeysItem(t *testing.T) {
	for _, tc := range []struct {
		prot   string
		floors bool
		level  string
		says   []string
	}{
		{"tpm", true, admin.LevelOK, []string{"sealed to this box's TPM", "opens nothing"}},
		{"passphrase", false, admin.LevelWarn, []string{"offline", "restoring an old /data rewinds them"}},
		{"none", false, admin.LevelBad, []string{"reads every secret", "rewinds"}},
		{"", false, admin.LevelWarn, []string{"development"}},
	} {
		it := keysItem(bootstrap{KeyProtection: tc.prot, FloorsInTPM: tc.floors})
		lvl := it.Level
		if lvl == "" && it.OK {
			lvl = admin.LevelOK
		}
		if lvl != tc.level {
			t.Errorf("%q: level %q, want %q", tc.prot, lvl, tc.level)
		}
		for _, s := range tc.says {
			if !strings.Contains(it.Value, s) {
				t.Errorf("%q: %q does not say %q", tc.prot, it.Value, s)
			}
		}
	}
}

// Every floor the licence manager raises is one PID 1 keeps: PID 1 refuses
// other names, and the raise would fail at every check-in.
func TestLicenceFloorsKeptByPID1(t *testing.T) {
	for _, name := range []string{license.FloorRun, license.FloorGoodRun, license.FloorSeq} {
		if !slices.Contains(control.FloorNames, name) {
			t.Errorf("licence floor %q is not in control.FloorNames %v", name, control.FloorNames)
		}
	}
}
