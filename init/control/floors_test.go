package control

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/edgepbx/edgepbx/init/keys"
	"github.com/edgepbx/edgepbx/init/keys/swtpmtest"
)

// TestFloorsForwardOnly drives the floors through the socket against the
// real TPM-backed store: forward moves are kept, backward ones refused by
// PID 1 with the field named, and the refusal changes nothing.
func TestFloorsForwardOnly(t *testing.T) {
	tpm := swtpmtest.Start(t, filepath.Join(t.TempDir(), "tpm"))
	fl, err := keys.OpenFloors(t.TempDir(), keys.DeviceTPM(tpm.Sock))
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, func(c *Config) { c.Floors = fl; c.FloorRate, c.FloorBurst = 1e-9, 4 })
	c, err := Dial(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.RaiseFloor(ctx, "license.seq", 7); err != nil {
		t.Fatal(err)
	}
	if err := c.RaiseFloor(ctx, "license.seq", 7); err != nil {
		t.Fatalf("equal value (a retry): %v", err)
	}
	for _, tc := range []struct {
		name  string
		v     uint64
		field string
	}{
		{"license.seq", 6, "value"},
		{"Update", 9, "name"},
		{"../x", 9, "name"},
		{"junk.a", 9, "name"},         // well-formed, but not a floor PID 1 keeps
		{"update.version", 9, "name"}, // PID 1's own: only its installer raises it
	} {
		err := c.RaiseFloor(ctx, tc.name, tc.v)
		var re *RemoteError
		if !errors.As(err, &re) || re.Field != tc.field {
			t.Errorf("raise %s=%d: %v, want a refusal naming %q", tc.name, tc.v, err, tc.field)
		}
	}
	st, err := c.GetFloors(ctx)
	if err != nil || !st.Hardware || st.Floors["license.seq"] != 7 || len(st.Floors) != 1 {
		t.Fatalf("floors %+v %v", st, err)
	}
	// Burst of 4 used by the two accepted raises and the refused one
	// that got past validation; the next is rate limited.
	if err := c.RaiseFloor(ctx, "license.seq", 8); err != nil {
		t.Fatal(err)
	}
	if err := c.RaiseFloor(ctx, "license.seq", 9); err == nil {
		t.Fatal("raise past the rate limit accepted")
	}
}
