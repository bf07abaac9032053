package main

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestUnopenedSealedValueStaysDown: an extension whose sealed HA1 does not
// open (here: a record moved to another user, so its associated data no
// longer matches) makes edgepbxd stay down (errStayDown: PID 1's safe
// state) instead of exiting for a restart that would fail the same way
// until the watchdog reboots the box.
func TestUnopenedSealedValueStaysDown(t *testing.T) {
	dir := t.TempDir()
	cfg := config{devDir: dir, dataDir: dir, httpsAddr: "127.0.0.1:0", sipAddr: "127.0.0.1:0"}
	d, err := newDaemon(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.sip.Extensions().Set("201", "a-long-enough-secret-201"); err != nil {
		t.Fatal(err)
	}
	err = d.db.Update(func(tx *store.Tx) error {
		var moved map[string]any
		if err := tx.ForEach("sip.extensions", func(_ string, raw []byte) error {
			return json.Unmarshal(raw, &moved)
		}); err != nil {
			return err
		}
		moved["user"] = "202"
		return tx.Put("sip.extensions", "202", moved)
	})
	if err != nil {
		t.Fatal(err)
	}
	d.close()

	_, err = newDaemon(cfg, slog.New(slog.DiscardHandler))
	if !errors.Is(err, errStayDown) || !errors.Is(err, store.ErrUnseal) || !strings.Contains(err.Error(), "sip/ha1/MD5/202") {
		t.Fatalf("restart over an unopenable sealed record: %v, want a permanent failure naming it", err)
	}
}
