package certs

import (
	"encoding/json"
	"fmt"

	"github.com/edgepbx/edgepbx/firmware/store"
)

// ACMEBucket holds the ACME account key (sealed) and ACME settings.
const ACMEBucket = acmeBucket

// BoxLocalKeys are the Bucket keys that belong to the box, not to its
// configuration: the self-signed certificate names the box's serial, so a
// restore on another box keeps the target's own.
func BoxLocalKeys() []string { return []string{slotSelf, slotPending} }

// ResealCertificate is the store.Resealer of Bucket: each slot's private key.
func ResealCertificate(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return nil, fmt.Errorf("certs: decode %s: %w", key, err)
	}
	if len(rec.Chain) == 0 {
		return nil, fmt.Errorf("certs: %s has no chain", key)
	}
	var err error
	if rec.Key, err = f(rec.Key, keyAD(FingerprintOf(rec.Chain[0]))); err != nil {
		return nil, err
	}
	return json.Marshal(rec)
}

// ResealACME is the store.Resealer of ACMEBucket: the account key.
func ResealACME(key string, raw []byte, f store.SealFunc) ([]byte, error) {
	if key != "account" {
		return raw, nil
	}
	return store.ResealJSONBytes(raw, acmeAccountAD, f)
}
