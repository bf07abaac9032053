package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// Bounds on what an upload or an ACME response may hand us.
const (
	MaxChainPEM = 64 << 10 // bytes of PEM for the whole chain
	MaxKeyPEM   = 16 << 10 // bytes of PEM for the key
	MaxChainLen = 6        // certificates in a chain, leaf included
)

// clockSkew tolerates a certificate issued moments ago by a CA whose clock
// runs slightly ahead of ours.
const clockSkew = 5 * time.Minute

// Bundle is a certificate chain (DER, leaf first) and its private key, as
// parsed from an upload (ParsePEM) or issued by ACME.
type Bundle struct {
	Chain [][]byte
	Key   crypto.Signer
}

// ParsePEM parses an uploaded PEM chain (CERTIFICATE blocks only, leaf first)
// and PEM private key (PKCS#8, SEC 1 or PKCS#1; not encrypted). Input is
// untrusted: sizes are bounded and anything unexpected is refused.
func ParsePEM(chainPEM, keyPEM []byte) (*Bundle, error) {
	if len(chainPEM) > MaxChainPEM {
		return nil, fmt.Errorf("%w: certificate chain is %d bytes (max %d)", ErrInvalid, len(chainPEM), MaxChainPEM)
	}
	if len(keyPEM) > MaxKeyPEM {
		return nil, fmt.Errorf("%w: private key is %d bytes (max %d)", ErrInvalid, len(keyPEM), MaxKeyPEM)
	}
	var b Bundle
	rest := chainPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%w: unexpected PEM block %q in the certificate chain", ErrInvalid, block.Type)
		}
		if len(b.Chain) == MaxChainLen {
			return nil, fmt.Errorf("%w: more than %d certificates in the chain", ErrInvalid, MaxChainLen)
		}
		b.Chain = append(b.Chain, block.Bytes)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the certificate chain", ErrInvalid)
	}
	if len(b.Chain) == 0 {
		return nil, fmt.Errorf("%w: no CERTIFICATE block found", ErrInvalid)
	}
	block, rest := pem.Decode(keyPEM)
	if block == nil || len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: the key must be exactly one PEM block", ErrInvalid)
	}
	if _, encrypted := block.Headers["Proc-Type"]; encrypted {
		return nil, fmt.Errorf("%w: encrypted private keys are not supported; upload it decrypted", ErrInvalid)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: unsupported key block %q", ErrInvalid, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: private key: %v", ErrInvalid, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: private key type %T", ErrInvalid, key)
	}
	b.Key = signer
	return &b, nil
}

// checkKey accepts ECDSA P-256/P-384 and RSA 2048–8192 keys that belong to leaf.
func checkKey(key any, leaf *x509.Certificate) (crypto.Signer, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s (use P-256 or P-384)", ErrInvalid, k.Curve.Params().Name)
		}
	case *rsa.PrivateKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return nil, fmt.Errorf("%w: RSA key of %d bits (use 2048 to 8192)", ErrInvalid, n)
		}
	default:
		return nil, fmt.Errorf("%w: key type %T (use ECDSA or RSA)", ErrInvalid, key)
	}
	signer := key.(crypto.Signer)
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, fmt.Errorf("%w: the private key does not match the certificate", ErrInvalid)
	}
	return signer, nil
}

// Validate checks b as a server certificate for names at time now: the key
// matches the leaf, the leaf is valid now and for server auth, every name is
// covered by its SANs, and each certificate is signed by the next one.
func Validate(b *Bundle, names []string, now time.Time) (*x509.Certificate, error) {
	if b == nil || len(b.Chain) == 0 {
		return nil, fmt.Errorf("%w: empty chain", ErrInvalid)
	}
	if len(b.Chain) > MaxChainLen {
		return nil, fmt.Errorf("%w: more than %d certificates in the chain", ErrInvalid, MaxChainLen)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%w: no names given to check the certificate against", ErrInvalid)
	}
	certs := make([]*x509.Certificate, len(b.Chain))
	for i, der := range b.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: certificate %d: %v", ErrInvalid, i, err)
		}
		certs[i] = c
	}
	leaf := certs[0]
	if b.Key == nil {
		return nil, fmt.Errorf("%w: no private key", ErrInvalid)
	}
	if _, err := checkKey(b.Key, leaf); err != nil {
		return nil, err
	}
	if now.Add(clockSkew).Before(leaf.NotBefore) {
		return nil, fmt.Errorf("%w: not valid before %s (box clock says %s)", ErrInvalid, leaf.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !now.Before(leaf.NotAfter) {
		return nil, fmt.Errorf("%w: expired %s", ErrInvalid, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if len(leaf.ExtKeyUsage) > 0 && !hasServerAuth(leaf) {
		return nil, fmt.Errorf("%w: not valid for TLS server authentication", ErrInvalid)
	}
	for _, name := range names {
		if err := leaf.VerifyHostname(name); err != nil {
			return nil, fmt.Errorf("%w: does not cover %q (names: %v %v)", ErrInvalid, name, leaf.DNSNames, leaf.IPAddresses)
		}
	}
	for i := 0; i+1 < len(certs); i++ {
		if err := certs[i].CheckSignatureFrom(certs[i+1]); err != nil {
			return nil, fmt.Errorf("%w: certificate %d is not signed by certificate %d: %v", ErrInvalid, i, i+1, err)
		}
	}
	return leaf, nil
}

func hasServerAuth(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageServerAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// Install validates b (see Validate) for names and makes it the active
// certificate; the one it replaces becomes the previous one, kept for
// Rollback. source is SourceUpload or SourceACME. On any error nothing is
// stored and the served certificate does not change. While an uploaded
// change awaits confirmation it refuses with ErrPending (ACME retries).
func (m *Manager) Install(b *Bundle, names []string, source string) error {
	return m.InstallWith(b, names, source, nil)
}

// InstallWith is Install with also run in the same write transaction (the
// caller's audit entry, given what was served before and the new
// certificate): both commit or neither does.
func (m *Manager) InstallWith(b *Bundle, names []string, source string, also func(tx *store.Tx, before, after Info) error) error {
	if source != SourceUpload && source != SourceACME {
		return fmt.Errorf("certs: unknown source %q", source)
	}
	if _, err := Validate(b, names, m.now()); err != nil {
		return err
	}
	rec, err := m.sealRecord(b.Chain, b.Key, source)
	if err != nil {
		return err
	}
	l, err := m.fromRecord(rec)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, live, err := m.pendingLocked(); err != nil || live {
		return errors.Join(err, ErrPending)
	}
	old := m.state.Load()
	err = m.db.Update(func(tx *store.Tx) error {
		if old.active != old.self {
			if err := tx.Put(Bucket, slotPrevious, old.active.rec); err != nil {
				return err
			}
		} else if err := tx.Delete(Bucket, slotPrevious); err != nil {
			return err
		}
		if err := tx.Put(Bucket, slotActive, rec); err != nil || also == nil {
			return err
		}
		return also(tx, old.active.info, l.info)
	})
	if err != nil {
		return fmt.Errorf("certs: store new certificate: %w", err)
	}
	prev := old.active
	if prev == old.self {
		prev = nil
	}
	m.state.Store(&state{active: l, previous: prev, self: old.self})
	m.log.Info("certs: installed certificate", "source", source, "fingerprint", l.info.Fingerprint,
		"not_after", l.info.NotAfter, "replaces", old.active.info.Fingerprint)
	return nil
}

// Rollback makes the previous certificate (the self-signed one if there was
// none) active again; the current one becomes the previous.
func (m *Manager) Rollback() error { return m.RollbackWith(nil) }

// RollbackWith is Rollback with also run in the same write transaction (the
// caller's audit entry, given what was served before and what is served
// after): both commit or neither does.
func (m *Manager) RollbackWith(also func(tx *store.Tx, before, after Info) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, live, err := m.pendingLocked(); err != nil || live {
		return errors.Join(err, ErrPending)
	}
	old := m.state.Load()
	if old.active == old.self {
		return errors.New("certs: already serving the self-signed certificate")
	}
	next := old.previous
	if next != nil && !m.now().Before(next.info.NotAfter) {
		next = nil // an expired previous one helps nobody
	}
	err := m.db.Update(func(tx *store.Tx) error {
		if next == nil {
			if err := tx.Delete(Bucket, slotActive); err != nil {
				return err
			}
		} else if err := tx.Put(Bucket, slotActive, next.rec); err != nil {
			return err
		}
		if err := tx.Put(Bucket, slotPrevious, old.active.rec); err != nil {
			return err
		}
		if also == nil {
			return nil
		}
		after := old.self.info
		if next != nil {
			after = next.info
		}
		return also(tx, old.active.info, after)
	})
	if err != nil {
		return fmt.Errorf("certs: roll back: %w", err)
	}
	st := &state{active: next, previous: old.active, self: old.self}
	if next == nil {
		st.active = old.self
	}
	m.state.Store(st)
	m.log.Warn("certs: rolled back certificate", "now_serving", st.active.info.Fingerprint, "was", old.active.info.Fingerprint)
	return nil
}

func (m *Manager) sealRecord(chain [][]byte, key crypto.Signer, source string) (record, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return record{}, fmt.Errorf("certs: encode key: %w", err)
	}
	sealed, err := m.db.Seal(der, keyAD(FingerprintOf(chain[0])))
	if err != nil {
		return record{}, fmt.Errorf("certs: seal key: %w", err)
	}
	return record{Chain: chain, Key: sealed, Source: source, Installed: m.now().UTC()}, nil
}

// Commit only when healthy: an uploaded certificate is first installed as
// pending. It is served at once, but stored only in the "pending" slot, so
// the active slot still holds the certificate the box had; the admin side
// confirms it (ConfirmPending) once a new connection proved it works, or
// reverts it (RevertPending) when the confirmation does not come in time.
// A restart in between forgets the pending one: Load never reads that slot.

// slotPending holds a certificate served but not yet confirmed.
const slotPending = "pending"

// ErrPending refuses Install and Rollback while a change awaits confirmation.
var ErrPending = errors.New("certs: a certificate change awaits confirmation")

// ErrNoPending answers a confirm or revert with nothing pending.
var ErrNoPending = errors.New("certs: no certificate change is pending")

// pendingLocked returns the pending record when it is the one being served;
// a leftover from before a restart is not pending (and gets overwritten).
func (m *Manager) pendingLocked() (record, bool, error) {
	var rec record
	var ok bool
	err := m.db.View(func(tx *store.Tx) error {
		var err error
		ok, err = tx.Get(Bucket, slotPending, &rec)
		return err
	})
	if err != nil || !ok || len(rec.Chain) == 0 {
		return record{}, false, err
	}
	return rec, FingerprintOf(rec.Chain[0]) == m.state.Load().active.info.Fingerprint, nil
}

// Pending describes the certificate awaiting confirmation, if any.
func (m *Manager) Pending() (Info, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, live, err := m.pendingLocked()
	if err != nil || !live {
		return Info{}, false
	}
	return m.state.Load().active.info, true
}

// InstallPending validates b (see Validate) for names and serves it at once
// without making it the active certificate in the store. On any error
// nothing changes.
func (m *Manager) InstallPending(b *Bundle, names []string, source string) (Info, error) {
	return m.InstallPendingWith(b, names, source, nil)
}

// InstallPendingWith is InstallPending with also run in the same write
// transaction (the caller's audit entry, given the pending certificate):
// both commit or neither does, and nothing is served if they do not.
func (m *Manager) InstallPendingWith(b *Bundle, names []string, source string, also func(tx *store.Tx, pending Info) error) (Info, error) {
	if source != SourceUpload && source != SourceACME {
		return Info{}, fmt.Errorf("certs: unknown source %q", source)
	}
	if _, err := Validate(b, names, m.now()); err != nil {
		return Info{}, err
	}
	rec, err := m.sealRecord(b.Chain, b.Key, source)
	if err != nil {
		return Info{}, err
	}
	l, err := m.fromRecord(rec)
	if err != nil {
		return Info{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, live, err := m.pendingLocked(); err != nil || live {
		return Info{}, errors.Join(err, ErrPending)
	}
	err = m.db.Update(func(tx *store.Tx) error {
		if err := tx.Put(Bucket, slotPending, rec); err != nil || also == nil {
			return err
		}
		return also(tx, l.info)
	})
	if err != nil {
		return Info{}, fmt.Errorf("certs: store pending certificate: %w", err)
	}
	old := m.state.Load()
	m.state.Store(&state{active: l, previous: old.previous, self: old.self})
	m.log.Info("certs: serving certificate pending confirmation", "source", source, "fingerprint", l.info.Fingerprint,
		"replaces", old.active.info.Fingerprint)
	return l.info, nil
}

// ConfirmPending makes the pending certificate the active one in the store;
// the one it replaces becomes the previous one.
func (m *Manager) ConfirmPending() error { return m.ConfirmPendingWith(nil) }

// ConfirmPendingWith is ConfirmPending with also run in the same write
// transaction (the caller's audit entry): both commit or neither does.
func (m *Manager) ConfirmPendingWith(also func(tx *store.Tx) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, live, err := m.pendingLocked()
	if err != nil || !live {
		return errors.Join(err, ErrNoPending)
	}
	var prev *loaded
	err = m.db.Update(func(tx *store.Tx) error {
		var oldRec record
		ok, err := tx.Get(Bucket, slotActive, &oldRec)
		if err != nil {
			return err
		}
		if ok {
			if prev, err = m.fromRecord(oldRec); err != nil {
				prev = nil // an unusable old one is not worth keeping
			}
		}
		if prev != nil {
			if err := tx.Put(Bucket, slotPrevious, oldRec); err != nil {
				return err
			}
		} else if err := tx.Delete(Bucket, slotPrevious); err != nil {
			return err
		}
		if err := tx.Put(Bucket, slotActive, rec); err != nil {
			return err
		}
		if err := tx.Delete(Bucket, slotPending); err != nil || also == nil {
			return err
		}
		return also(tx)
	})
	if err != nil {
		return fmt.Errorf("certs: confirm certificate: %w", err)
	}
	old := m.state.Load()
	m.state.Store(&state{active: old.active, previous: prev, self: old.self})
	m.log.Info("certs: certificate confirmed", "fingerprint", old.active.info.Fingerprint)
	return nil
}

// RevertPending drops the pending certificate and serves the stored active
// one again (or the previous, or the self-signed, as Load would).
func (m *Manager) RevertPending() error { return m.RevertPendingWith(nil) }

// RevertPendingWith is RevertPending with also run in the same write
// transaction (the caller's audit entry, given what is served after): both
// commit or neither does.
func (m *Manager) RevertPendingWith(also func(tx *store.Tx, after Info) error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, live, err := m.pendingLocked()
	if err != nil || !live {
		return errors.Join(err, ErrNoPending)
	}
	was := m.state.Load()
	st := state{self: was.self}
	err = m.db.Update(func(tx *store.Tx) error {
		if err := tx.Delete(Bucket, slotPending); err != nil {
			return err
		}
		for _, slot := range []string{slotActive, slotPrevious} {
			l, err := m.loadSlot(tx, slot)
			if err != nil || (l != nil && !m.now().Before(l.info.NotAfter)) {
				l = nil
			}
			if slot == slotActive {
				st.active = l
			} else {
				st.previous = l
			}
		}
		if st.active == nil {
			st.active, st.previous = st.previous, nil
		}
		if st.active == nil {
			st.active = st.self
		}
		if also == nil {
			return nil
		}
		return also(tx, st.active.info)
	})
	if err != nil {
		return fmt.Errorf("certs: revert certificate: %w", err)
	}
	m.state.Store(&st)
	m.log.Warn("certs: pending certificate reverted", "was", was.active.info.Fingerprint, "now_serving", st.active.info.Fingerprint)
	return nil
}
