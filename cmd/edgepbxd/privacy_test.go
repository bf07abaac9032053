package main

import (
	"log/slog"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/logs"
	"github.com/edgepbx/edgepbx/firmware/privacy"
)

// TestPrivacyIntrusionWired: edgepbxd registers the intrusion report as a
// privacy category and hands the report the category's truncation.
func TestPrivacyIntrusionWired(t *testing.T) {
	dir := t.TempDir()
	d, err := newDaemon(config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	o, err := d.privacy.Overview()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range o.Categories {
		found = found || c.Name == "intrusion"
	}
	if !found {
		t.Fatalf("intrusion report not a privacy category: %+v", o.Categories)
	}
	if err := d.privacy.Set("test", "127.0.0.1", "intrusion", privacy.Policy{Days: 180, Anonymise: privacy.Truncate}); err != nil {
		t.Fatal(err)
	}
	d.intrusion.Observe(logs.Event{Time: time.Now(), Kind: logs.KindAuthFailure, Source: "198.51.100.77:5060", User: "101"})
	rep, err := d.intrusion.Report(d.intrusion.Today(), d.intrusion.Today())
	if err != nil {
		t.Fatal(err)
	}
	if s := rep.Days[0].TopSources; len(s) != 1 || s[0].Source != "198.51.100.0" {
		t.Fatalf("sources %+v, want the truncated 198.51.100.0", s)
	}
}
