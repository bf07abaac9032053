package certs

import (
	"errors"
	"testing"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
	"github.com/edgepbx/edgepbx/firmware/store/storetest"
)

// TestInstallPending: a pending certificate is served at once but reaches
// the active slot only when confirmed; revert and restart both bring back
// what was stored; Install and Rollback wait while one is pending.
func TestInstallPending(t *testing.T) {
	now := t0
	m, db, path := newManager(t, &now)
	self := m.Fingerprint()
	root := newCA(t, "Root", nil)
	names := []string{"a.example.com"}
	k1, k2, k3 := ecKey(t), ecKey(t), ecKey(t)
	b1 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: names, key: k1})}, k1}
	b2 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: names, key: k2})}, k2}
	b3 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: names, key: k3})}, k3}
	fp1, fp2, fp3 := FingerprintOf(b1.Chain[0]), FingerprintOf(b2.Chain[0]), FingerprintOf(b3.Chain[0])
	if err := m.Install(b1, names, SourceUpload); err != nil {
		t.Fatal(err)
	}
	for _, f := range []func() error{m.ConfirmPending, m.RevertPending} {
		if err := f(); !errors.Is(err, ErrNoPending) {
			t.Fatalf("nothing pending: %v", err)
		}
	}
	// A refused bundle changes nothing.
	if _, err := m.InstallPending(b2, []string{"other.example.com"}, SourceUpload); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad names: %v", err)
	}
	if _, ok := m.Pending(); ok || m.Fingerprint() != fp1 {
		t.Fatal("a refused bundle became pending")
	}

	// Pending, then reverted.
	info, err := m.InstallPending(b2, names, SourceUpload)
	if err != nil || info.Fingerprint != fp2 || m.Fingerprint() != fp2 {
		t.Fatalf("pending: %+v %v, serving %s", info, err, m.Fingerprint())
	}
	if p, ok := m.Pending(); !ok || p.Fingerprint != fp2 {
		t.Fatalf("Pending = %+v %v", p, ok)
	}
	if _, err := m.InstallPending(b3, names, SourceUpload); !errors.Is(err, ErrPending) {
		t.Fatalf("second pending: %v", err)
	}
	if err := m.Install(b3, names, SourceACME); !errors.Is(err, ErrPending) {
		t.Fatalf("Install while pending: %v", err)
	}
	if err := m.Rollback(); !errors.Is(err, ErrPending) {
		t.Fatalf("Rollback while pending: %v", err)
	}
	if err := m.RevertPending(); err != nil || m.Fingerprint() != fp1 {
		t.Fatalf("revert: %v, serving %s", err, m.Fingerprint())
	}
	if _, ok := m.Pending(); ok {
		t.Fatal("still pending after revert")
	}

	// Pending, then confirmed: b1 becomes the previous one.
	if _, err := m.InstallPending(b3, names, SourceUpload); err != nil {
		t.Fatal(err)
	}
	if err := m.ConfirmPending(); err != nil || m.Fingerprint() != fp3 {
		t.Fatalf("confirm: %v, serving %s", err, m.Fingerprint())
	}
	if err := m.Rollback(); err != nil || m.Fingerprint() != fp1 {
		t.Fatalf("rollback after confirm: %v, serving %s", err, m.Fingerprint())
	}

	// Pending across a restart: forgotten, the stored one is served, and the
	// leftover does not block the next change.
	if _, err := m.InstallPending(b2, names, SourceUpload); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = storetest.OpenAt(t, path, deviceKey)
	defer db.Close()
	m, err = Load(db, testID, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	if m.Fingerprint() != fp1 {
		t.Fatalf("after restart serving %s, want the stored %s", m.Fingerprint(), fp1)
	}
	if _, ok := m.Pending(); ok {
		t.Fatal("a pending certificate survived the restart")
	}
	if _, err := m.InstallPending(b3, names, SourceUpload); err != nil {
		t.Fatalf("pending after restart: %v", err)
	}
	if err := m.RevertPending(); err != nil || m.Fingerprint() != fp1 || m.SelfSigned().Fingerprint != self {
		t.Fatalf("revert after restart: %v, serving %s", err, m.Fingerprint())
	}
}

// TestRevertPendingFallsBack: with nothing stored as active, a revert goes
// back to the self-signed certificate.
func TestRevertPendingFallsBack(t *testing.T) {
	now := t0
	m, _, _ := newManager(t, &now)
	self := m.Fingerprint()
	root := newCA(t, "Root", nil)
	k := ecKey(t)
	b := &Bundle{[][]byte{root.issue(t, leafOpts{dns: []string{"a.example.com"}, key: k})}, k}
	if _, err := m.InstallPending(b, []string{"a.example.com"}, SourceUpload); err != nil {
		t.Fatal(err)
	}
	if m.Current().Source != SourceUpload {
		t.Fatalf("pending not served: %+v", m.Current())
	}
	if err := m.RevertPending(); err != nil || m.Fingerprint() != self {
		t.Fatalf("revert: %v, serving %s", err, m.Fingerprint())
	}
}

// TestWithFailureChangesNothing: when the caller's part of the transaction
// (its audit entry) fails, the certificate change is not stored and the
// served certificate stays what it was.
func TestWithFailureChangesNothing(t *testing.T) {
	now := t0
	m, _, _ := newManager(t, &now)
	self := m.Fingerprint()
	root := newCA(t, "Root", nil)
	names := []string{"a.example.com"}
	k1, k2 := ecKey(t), ecKey(t)
	b1 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: names, key: k1})}, k1}
	b2 := &Bundle{[][]byte{root.issue(t, leafOpts{dns: names, key: k2})}, k2}
	errAudit := errors.New("audit full")
	if _, err := m.InstallPendingWith(b1, names, SourceUpload, func(*store.Tx, Info) error { return errAudit }); !errors.Is(err, errAudit) {
		t.Fatalf("install: %v", err)
	}
	if _, pending := m.Pending(); pending || m.Fingerprint() != self {
		t.Fatalf("failed install left pending=%v serving %s", pending, m.Fingerprint())
	}
	if _, err := m.InstallPending(b1, names, SourceUpload); err != nil {
		t.Fatal(err)
	}
	if err := m.ConfirmPendingWith(func(*store.Tx) error { return errAudit }); !errors.Is(err, errAudit) {
		t.Fatalf("confirm: %v", err)
	}
	if _, pending := m.Pending(); !pending {
		t.Fatal("failed confirm dropped the pending certificate")
	}
	if err := m.RevertPendingWith(func(*store.Tx, Info) error { return errAudit }); !errors.Is(err, errAudit) {
		t.Fatalf("revert: %v", err)
	}
	if _, pending := m.Pending(); !pending {
		t.Fatal("failed revert dropped the pending certificate")
	}
	if err := m.ConfirmPending(); err != nil {
		t.Fatal(err)
	}
	fp1 := m.Fingerprint()
	if err := m.Install(b2, names, SourceUpload); err != nil {
		t.Fatal(err)
	}
	fp2 := m.Fingerprint()
	var was, now2 Info
	err := m.RollbackWith(func(_ *store.Tx, before, after Info) error { was, now2 = before, after; return errAudit })
	if !errors.Is(err, errAudit) || m.Fingerprint() != fp2 {
		t.Fatalf("failed rollback: %v, serving %s want %s", err, m.Fingerprint(), fp2)
	}
	if was.Fingerprint != fp2 || now2.Fingerprint != fp1 {
		t.Errorf("rollback told before %s after %s, want %s and %s", was.Fingerprint, now2.Fingerprint, fp2, fp1)
	}
	if err := m.Rollback(); err != nil || m.Fingerprint() != fp1 {
		t.Fatalf("rollback: %v, serving %s", err, m.Fingerprint())
	}
}
