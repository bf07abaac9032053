package main

import (
	"strings"
	"testing"
)

func TestStayDownReason(t *testing.T) {
	long := strings.Repeat("x", 2*maxReason)
	for _, c := range []struct {
		name  string
		lines []string
		want  string
	}{
		{"damaged store", []string{
			`time=… level=ERROR msg="edgepbxd: cannot start, staying down (exit 125)" err="…"`,
			"edgepbxd: permanent failure: store: database file is damaged: /data/edgepbx.db: invalid database",
		}, "permanent failure: store: database file is damaged: /data/edgepbx.db: invalid database"},
		{"last of several", []string{"edgepbxd: first", "noise", "edgepbxd: second", "level=INFO more noise"}, "second"},
		{"silent", []string{"level=ERROR x"}, "exited 125 without saying why (see its output above)"},
		{"empty", nil, "exited 125 without saying why (see its output above)"},
		{"bounded", []string{"edgepbxd: " + long}, long[:maxReason] + "…"},
	} {
		if got := stayDownReason(c.lines); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

// TestSafeStateChoices: the console names both ways out of a store that
// does not open, and how to start each.
func TestSafeStateChoices(t *testing.T) {
	all := strings.Join(safeStateChoices(), "\n")
	for _, want := range []string{"factory reset", "type ERASE", "edgepbx.factory_reset=1", "power button 10s", "restore a backup", "will not start with an empty store"} {
		if !strings.Contains(all, want) {
			t.Errorf("choices lack %q:\n%s", want, all)
		}
	}
}
