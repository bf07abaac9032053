package license_test

import (
	"testing"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// TestSessionAcrossRestart: the TLS session with the licence server is kept
// sealed in the store, so the first check-in after a restart resumes it
// (no certificate on the wire); a damaged record costs one full handshake,
// never a failed check-in.
func TestSessionAcrossRestart(t *testing.T) {
	e := newEnv(t)
	b := e.newBox()
	type counts struct{ full, resumed int32 }
	now := func() counts { return counts{e.full.Load(), e.resumed.Load()} }
	steps := []struct {
		name   string
		before func()
		want   counts // after the step's check-in
	}{
		{"new box: full handshake", func() {}, counts{1, 0}},
		{"next day, same process: resumed", func() { e.advance(b, day) }, counts{1, 1}},
		{"after a restart: resumed from the store", func() { e.advance(b, day); b.restart(e) }, counts{1, 2}},
		{"stored session damaged, restart: full handshake", func() {
			e.advance(b, day)
			if err := b.db.Update(func(tx *store.Tx) error { return tx.Put("license.state", "tls_session", []byte("not sealed")) }); err != nil {
				t.Fatal(err)
			}
			b.restart(e)
		}, counts{2, 2}},
		{"and the new session is kept again", func() { e.advance(b, day); b.restart(e) }, counts{2, 3}},
	}
	for _, s := range steps {
		s.before()
		if st := e.mustCheck(b); st.LastGood.IsZero() {
			t.Fatalf("%s: no good check-in", s.name)
		}
		if got := now(); got != s.want {
			t.Fatalf("%s: %d full / %d resumed handshakes, want %d / %d", s.name, got.full, got.resumed, s.want.full, s.want.resumed)
		}
	}
}
